"""Names that reach logs, results.json, tables and figures describe the model that ran (issue 12, section 3)."""
import json

import torch
import yaml

from crossmae.cli import main as cli
from crossmae.models import build_model
from crossmae.models.naming import describe_arch, describe_model, registered_or_described

from tiny import REPO

DEMO = REPO / "configs/pretrain/demo.yaml"


def _model_of(config) -> tuple[str, torch.nn.Module]:
    kwargs = dict(yaml.safe_load(config.read_text())["model"])
    name = kwargs.pop("name")
    with torch.device("meta"):  # no memory for ViT-B and larger
        return name, build_model(name, **kwargs)


def test_demo_config_is_not_called_vit_s():
    name, model = _model_of(DEMO)
    assert name == "crossmae_vit_small_patch16"  # the factory the demo overrides
    text = describe_model(model)
    n = sum(p.numel() for p in model.parameters())
    assert text.startswith("CrossMAE ViT 128w/4d/4h/p4 32px ") and f"({n / 1e6:.1f}M)" in text
    assert "γ0.75" in text and "dec 2x96" in text and "ViT-S" not in text
    assert registered_or_described(name, model) == text  # the factory name would hide the overrides


def test_standard_recipes_keep_their_names():
    for config, size in [("crossmae_vit_base.yaml", "ViT-B/16"), ("mae_vit_large.yaml", "ViT-L/16"),
                         ("crossmae_vit_huge.yaml", "ViT-H/14")]:
        name, model = _model_of(REPO / "configs/pretrain" / config)
        assert f" {size} (" in describe_model(model), describe_model(model)
        assert registered_or_described(name, model) == name
    # a standard width/depth at another resolution or patch is still named, with what differs
    assert describe_arch(768, 12, 12, 16, img_size=448) == "ViT-B/16 448px"
    assert describe_arch(1280, 32, 16, 16) == "ViT-H/16"
    with torch.device("meta"):
        b448 = build_model("crossmae_vit_base_patch16", img_size=448)
    assert registered_or_described("crossmae_vit_base_patch16", b448).startswith("CrossMAE ViT-B/16 448px")


def test_timm_and_dense_backbones_are_described_from_their_modules():
    import timm

    from crossmae.models.dense_vit import seg_backbone
    vit = timm.create_model("vit_small_patch16_224", num_classes=0, img_size=32, patch_size=4, embed_dim=64,
                            depth=2, num_heads=2)
    assert describe_model(vit).startswith("ViT 64w/2d/2h/p4 32px (")
    dense = seg_backbone("small", img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4)
    assert describe_model(dense).startswith("ViT 128w/4d/4h/p4 32px (")


def test_pretraining_run_writes_the_honest_name(tmp_path):
    fast = ["model.embed_dim=32", "model.depth=2", "model.num_heads=4", "model.decoder_embed_dim=32",
            "model.decoder_depth=1", "data.num_workers=0", "num_vis=2", "epochs=1"]
    assert cli(["pretrain", "--config", str(DEMO), f"output_dir={tmp_path}", *fast]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["factory"] == "crossmae_vit_small_patch16"
    assert results["model"] == results["model_description"]
    assert results["model_description"].startswith("CrossMAE ViT 32w/2d/4h/p4 32px (")
    log = (tmp_path / "log.txt").read_text()
    assert results["model_description"] in log and "ViT-S" not in log

    from crossmae.analysis import collect
    _, rows, _ = collect.collect([tmp_path])
    row = next(r for r in rows if r.checkpoint.endswith("checkpoint.pth"))
    assert (row.method, row.size, row.size_label) == ("crossmae", "custom", "ViT 32w/2d/4h/p4 32px")
