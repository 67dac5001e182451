"""Hugging Face Hub and safetensors (issue 12, section 4): save_pretrained / from_pretrained round trips from a
local directory and, by repo id, from a local Hub cache with HF_HUB_OFFLINE=1 (no network here); an official
release file in a repo; the timm export loaded by timm.create_model; ``crossmae export``."""
import argparse
import json
import shutil

import pytest
import torch

from crossmae.cli import main as cli
from crossmae.engine import CheckpointError, save_checkpoint
from crossmae.hub import HubError, load
from crossmae.models import MAE, CrossMAE, build_model
from crossmae.models.encoder import MaskedViTEncoder

from tiny import REPO, TINY_CROSSMAE, tiny_model

ALL = torch.arange(64).expand(2, -1)  # every patch of a 32 px image with 4 px patches visible


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    """An empty Hub cache (HF_HUB_CACHE) with HF_HUB_OFFLINE=1; ``put(repo, files)`` adds a snapshot of a repo
    laid out as huggingface_hub writes it: models--org--name/{snapshots/<rev>/..., refs/main}."""
    from huggingface_hub import constants
    cache = tmp_path / "hub_cache"
    cache.mkdir()
    for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_CACHE", str(cache))):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import: set what the library reads
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def put(repo: str, files: dict, revision: str = "0123456789abcdef0123456789abcdef01234567"):
        root = cache / f"models--{repo.replace('/', '--')}"
        snapshot = root / "snapshots" / revision
        snapshot.mkdir(parents=True)
        for name, src in files.items():
            shutil.copy(src, snapshot / name)
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text(revision)
        return snapshot
    return put


def test_save_pretrained_round_trip_from_a_directory(tmp_path):
    model = tiny_model(pred_ratio=0.25).eval()
    model.save_pretrained(tmp_path / "cross")
    assert {p.name for p in (tmp_path / "cross").iterdir()} == {"config.json", "model.safetensors", "README.md"}
    config = json.loads((tmp_path / "cross" / "config.json").read_text())
    assert config["class"] == "CrossMAE" and config["kwargs"]["pred_ratio"] == 0.25
    assert config["kwargs"]["embed_dim"] == 64 and "decoder_num_heads" in config["kwargs"]  # every argument
    assert config["description"].startswith("CrossMAE ViT 64w/4d/4h/p4 32px")
    card = (tmp_path / "cross" / "README.md").read_text()
    assert "Rethinking Patch Dependence for Masked Autoencoders" in card and "fu2025rethinking" in card
    assert config["description"] in card and "library_name: crossmae" in card

    loaded = CrossMAE.from_pretrained(tmp_path / "cross")
    assert type(loaded) is CrossMAE and not loaded.training and same_weights(loaded, model)
    assert loaded.pred_ratio == 0.25
    x = torch.randn(2, 3, 32, 32)
    masks = model.sample_masks(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x, masks).pred, model(x, masks).pred)

    encoder = MaskedViTEncoder.from_pretrained(tmp_path / "cross")  # the encoder of a full save
    assert type(encoder) is MaskedViTEncoder and encoder.norm is None  # inter-block: no final norm
    assert torch.equal(encoder.forward_features(x, ALL), model.forward_features(x, ALL))
    encoder.save_pretrained(tmp_path / "enc")
    again = MaskedViTEncoder.from_pretrained(tmp_path / "enc")
    assert same_weights(again, encoder)
    with pytest.raises(HubError, match="holds a CrossMAE .*not a MAE"):
        MAE.from_pretrained(tmp_path / "cross")

    mae = build_model("mae_vit_small_patch16", **{k: v for k, v in TINY_CROSSMAE.items()
                                                   if k not in ("name",)}).eval()
    mae.save_pretrained(tmp_path / "mae")
    assert same_weights(load(tmp_path / "mae"), mae) and type(load(tmp_path / "mae")) is MAE


def test_repo_id_from_an_offline_hub_cache(tmp_path, offline_cache):
    model = tiny_model().eval()
    model.save_pretrained(tmp_path / "save")
    offline_cache("org/tiny-crossmae", {n: tmp_path / "save" / n for n in ("config.json", "model.safetensors")})
    assert same_weights(CrossMAE.from_pretrained("org/tiny-crossmae"), model)
    hub_load = torch.hub.load(str(REPO), "from_pretrained", "org/tiny-crossmae", encoder_only=True, source="local")
    assert type(hub_load) is MaskedViTEncoder
    with pytest.raises(HubError, match="org/not-cached is not in the local Hub cache"):
        CrossMAE.from_pretrained("org/not-cached")


def test_official_release_file_loads_by_repo_id(tmp_path, offline_cache):
    # the release format: {"model", "optimizer", "epoch", "scaler", "args"}; the smallest size it names is ViT-S
    # (here at 32 px with one decoder block, in fp16 to keep the file small)
    model = build_model("crossmae_vit_small_patch16", img_size=32, decoder_depth=1, pred_ratio=0.25)
    state = {k: v.half() for k, v in model.state_dict().items()}
    args = argparse.Namespace(model="mae_vit_small_patch16", cross_mae=True, weight_fm=True, use_input=True,
                              use_fm=[-1], self_attn=False, decoder_depth=1, mask_ratio=0.75, kept_mask_ratio=0.25,
                              norm_pix_loss=True, input_size=32)
    release = tmp_path / "checkpoint-799.pth"
    torch.save({"model": state, "optimizer": {}, "epoch": 799, "scaler": {}, "args": args}, release)
    snapshot = offline_cache("official/crossmae-vits", {"checkpoint-799.pth": release})

    loaded = CrossMAE.from_pretrained("official/crossmae-vits")
    assert (loaded.pred_ratio, len(loaded.decoder_blocks), loaded.inter_block) == (0.25, 1, True)
    assert all(torch.equal(v.half(), state[k]) for k, v in loaded.state_dict().items())
    shutil.copy(release, snapshot / "checkpoint-399.pth")  # two checkpoints: the user picks one
    with pytest.raises(HubError, match="2 checkpoints.*filename="):
        load("official/crossmae-vits")
    with pytest.raises(HubError, match="filename="):
        load(snapshot)  # a local directory holding release files: the same rules
    assert type(load(snapshot, filename="checkpoint-399.pth")) is CrossMAE


def _our_checkpoint(tmp_path, **overrides):
    kwargs = {**TINY_CROSSMAE, **overrides}
    model = build_model(kwargs.pop("name"), **kwargs).eval()
    run = tmp_path / "run"
    save_checkpoint({"model": model.state_dict(), "epoch": 3,
                     "config": {"model": {"name": TINY_CROSSMAE["name"], **kwargs}}}, run / "checkpoint.pth")
    (run / "results.json").write_text(json.dumps({"task": "pretrain", "model_description": "tiny", "epochs": 3,
                                                  "metrics": {"fixed_mask_loss": 0.4321}}))
    return model, run / "checkpoint.pth"


@pytest.mark.parametrize("inter_block", [True, False])
def test_timm_loads_the_encoder_export(tmp_path, inter_block):
    import timm
    model, ckpt = _our_checkpoint(tmp_path, inter_block=inter_block)
    assert cli(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "timm"), "--timm"]) == 0
    spec = json.loads((tmp_path / "timm" / "timm.json").read_text())
    assert spec["model_name"] == "vit_base_patch16_224" and spec["kwargs"]["embed_dim"] == 64
    # what the docs show: a registered timm name, our architecture as kwargs, the file in the overlay
    vit = timm.create_model("vit_base_patch16_224", pretrained=True, **spec["kwargs"],
                            pretrained_cfg_overlay=spec["pretrained_cfg_overlay"]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(vit.forward_features(x), model.forward_features(x, ALL), atol=1e-5)
    # no final norm (inter-block attention): MAE's fine-tuning layout, average pooling + fresh fc_norm
    assert spec["kwargs"]["global_pool"] == ("avg" if inter_block else "token")
    assert tuple(timm.data.resolve_data_config({}, model=vit)["mean"]) == (0.485, 0.456, 0.406)
    card = (tmp_path / "timm" / "README.md").read_text()
    assert "timm.create_model(" in card and "0.4321" in card


def test_export_command_full_and_encoder_and_offline_push(tmp_path, monkeypatch, capsys):
    model, ckpt = _our_checkpoint(tmp_path)
    assert cli(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "full")]) == 0
    assert same_weights(CrossMAE.from_pretrained(tmp_path / "full"), model)
    assert "fixed_mask_loss | 0.4321" in (tmp_path / "full" / "README.md").read_text()  # metrics of results.json
    assert cli(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "enc"), "--encoder-only"]) == 0
    assert json.loads((tmp_path / "enc" / "config.json").read_text())["class"] == "MaskedViTEncoder"

    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    capsys.readouterr()
    assert cli(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "full"), "--push", "org/x",
                "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crossmae export: error: cannot push to org/x: HF_HUB_OFFLINE is set") and "\n" == err[-1]
    assert (tmp_path / "full" / "model.safetensors").is_file()  # the export itself is kept


def test_deeply_nested_json_inputs_are_one_line(tmp_path, capsys):
    """Issue 20 §5: a results.json, config.json or --model-kwargs nested 100 000 deep is one clear error,
    not a RecursionError traceback."""
    from crossmae.analysis.loading import parse_model_kwargs
    deep = "[" * 100_000 + "]" * 100_000
    _, ckpt = _our_checkpoint(tmp_path)
    (tmp_path / "deep.json").write_text(deep)
    assert cli(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"),
                "--results", str(tmp_path / "deep.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "deep.json") in err[0] and "nested" in err[0], err
    saved = tmp_path / "saved"
    tiny_model().save_pretrained(saved)
    (saved / "config.json").write_text(deep)
    with pytest.raises(CheckpointError, match="config.json is not readable JSON: nested"):
        load(str(saved))
    with pytest.raises(ValueError, match="--model-kwargs is not valid JSON: nested"):
        parse_model_kwargs('{"a": ' + deep + "}")
