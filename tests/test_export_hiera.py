"""``crossmae export --timm`` of a CrossMAE-Hiera / MAE-Hiera checkpoint (issue 17, section 2): timm's
``create_model("hiera_<size>_224", pretrained=True, ...)`` loads the file strictly and computes the features of
our encoder, on the toy geometry of configs/pretrain/crossmae_hiera_demo.yaml."""
import json

import pytest
import torch
import yaml

from crossmae.cli import main as cli
from crossmae.engine import save_checkpoint
from crossmae.models import build_model

from tiny import REPO


def demo_model(config: str, **overrides) -> dict:
    """The model section of a Hiera demo config (the toy geometry), with overrides."""
    return {**yaml.safe_load((REPO / "configs" / "pretrain" / config).read_text())["model"], **overrides}


def hiera_checkpoint(tmp_path, config: dict):
    """A model built from ``config`` and its checkpoint, saved as the trainer saves one (0 steps)."""
    torch.manual_seed(0)
    kwargs = dict(config)
    model = build_model(kwargs.pop("name"), **kwargs).eval()
    with torch.no_grad():  # not the initial values: every tensor of the encoder must reach timm
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    run = tmp_path / "run"
    save_checkpoint({"model": model.state_dict(), "epoch": 0, "config": {"model": config}}, run / "checkpoint.pth")
    (run / "results.json").write_text(json.dumps({"task": "pretrain", "metrics": {"fixed_mask_loss": 0.4321}}))
    return model, run / "checkpoint.pth"


def timm_model(out):
    """What the export's README says to run."""
    import timm
    spec = json.loads((out / "timm.json").read_text())
    return timm.create_model(spec["model_name"], pretrained=True, **spec["kwargs"],
                             pretrained_cfg_overlay=spec["pretrained_cfg_overlay"]).eval(), spec


@pytest.mark.parametrize("config, inter_block", [("crossmae_hiera_demo.yaml", "stages"),
                                                 ("crossmae_hiera_demo.yaml", "none"),
                                                 ("mae_hiera_demo.yaml", None)])
def test_timm_loads_the_hiera_export_with_equal_features(tmp_path, config, inter_block):
    model, ckpt = hiera_checkpoint(tmp_path, demo_model(config, **({"inter_block": inter_block} if inter_block else {})))
    out = tmp_path / "timm"
    assert cli(["export", "--checkpoint", str(ckpt), "--out", str(out), "--timm"]) == 0
    hiera, spec = timm_model(out)
    # the toy geometry, written out: 32 px, widths 32-64-128 (stages 1-3-1), 3x3 / 2 / 1 patches, 4x4 mask units
    assert spec["model_name"] == "hiera_base_224"
    assert spec["kwargs"] == {"img_size": [32, 32], "embed_dim": 32, "stages": [1, 3, 1], "q_pool": 1,
                              "mask_unit_size": [4, 4], "mask_unit_attn": [True, False, False],
                              "patch_kernel": [3, 3], "patch_stride": [2, 2], "patch_padding": [1, 1]}
    assert spec["pretrained_cfg_overlay"]["input_size"] == [3, 32, 32]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        theirs = hiera.forward_intermediates(x, intermediates_only=True)
        ours = model.forward_feature_maps(x)
        assert [t.shape for t in theirs] == [o.shape for o in ours] == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 8, 8)]
        for t, o in zip(theirs, ours):
            torch.testing.assert_close(t, o, rtol=1e-5, atol=1e-5)
        last = hiera.forward_features(x)  # [N, tokens, C] in timm's own token order
        torch.testing.assert_close(last.mean(dim=1), model.pooled_features(x), rtol=1e-5, atol=1e-5)
        # timm's pooled output normalises the mean with head.norm: the encoder's final norm or a fresh one
        norm = model.encoder_norm if config.startswith("mae") else model.norm if inter_block == "none" else None
        pooled = model.pooled_features(x)
        expected = norm(pooled) if norm else torch.nn.functional.layer_norm(pooled, (128,), eps=1e-6)
        torch.testing.assert_close(hiera(x), expected, rtol=1e-5, atol=1e-5)
    card = (out / "README.md").read_text()
    assert "timm.create_model('hiera_base_224', pretrained=True" in card and "file='model.safetensors'" in card
    assert "0.4321" in card


def test_registered_size_exports_under_its_timm_name(tmp_path):
    """Hiera-T (at 64 px: 2 x 2 mask units) exports as timm's hiera_tiny_224; only the resolution and the
    pretraining q_pool differ from that factory."""
    model, ckpt = hiera_checkpoint(tmp_path, {"name": "mae_hiera_tiny_224", "img_size": 64, "decoder_depth": 1,
                                              "decoder_embed_dim": 32, "decoder_num_heads": 1})
    assert cli(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "timm"), "--timm"]) == 0
    hiera, spec = timm_model(tmp_path / "timm")
    assert (spec["model_name"], spec["kwargs"]) == ("hiera_tiny_224", {"img_size": [64, 64], "q_pool": 2})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for t, o in zip(hiera.forward_intermediates(x, intermediates_only=True), model.forward_feature_maps(x)):
            torch.testing.assert_close(t, o, rtol=1e-4, atol=1e-4)


def test_hiera_checkpoint_needs_timm_mode(tmp_path, capsys):
    _, ckpt = hiera_checkpoint(tmp_path, demo_model("crossmae_hiera_demo.yaml"))
    for extra in ([], ["--encoder-only"]):
        assert cli(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x"), *extra]) == 2
        assert capsys.readouterr().err == (f"crossmae export: error: {ckpt}: a Hiera checkpoint "
                                           f"(crossmae_hiera_tiny_224) exports only for timm: add --timm\n")
    assert cli(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x"), "--timm",
                "--global-pool", "token"]) == 2
    assert "has no cls token" in capsys.readouterr().err
