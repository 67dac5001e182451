"""Every recipe loads against its schema, and the recipes say what the paper's Table 11 / MAE say."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cls_transfer.config import TransferConfig
from tiny import REPO
from crossmae.classification.config import FinetuneConfig, LinprobeConfig
from crossmae.classification.model import resolve_arch
from crossmae.config import load_config

RECIPES = [(p, FinetuneConfig) for p in sorted((REPO / "configs/finetune").glob("*.yaml"))] + \
          [(p, LinprobeConfig) for p in sorted((REPO / "configs/linprobe").glob("*.yaml"))] + \
          [(p, TransferConfig) for p in sorted((REPO / "configs/cls_transfer").glob("*.yaml"))
           if p.name != "references.yaml"]


@pytest.mark.parametrize("path,schema", RECIPES, ids=[p.name for p, _ in RECIPES])
def test_recipe_loads(path, schema):
    cfg = load_config(schema, path)
    if cfg.model.arch != "auto":
        arch = resolve_arch(cfg.model, None)
        assert arch["img_size"] in (224, 448)
        if cfg.global_batch_size:
            assert cfg.global_batch_size % cfg.batch_size == 0


def test_table11_recipe():
    expect = {"vit_base": (0.65, 0.1, 100), "vit_large": (0.75, 0.2, 50), "vit_huge": (0.75, 0.3, 50)}
    for name, (ld, dp, epochs) in expect.items():
        cfg = load_config(FinetuneConfig, REPO / f"configs/finetune/{name}.yaml")
        assert (cfg.optim.layer_decay, cfg.model.drop_path_rate, cfg.epochs) == (ld, dp, epochs)
        assert cfg.optim.blr == 1e-3 and cfg.global_batch_size == 1024 and cfg.optim.warmup_epochs == 5
        assert cfg.aug.auto_augment == "rand-m9-mstd0.5-inc1" and cfg.aug.reprob == 0.25
        assert (cfg.aug.mixup, cfg.aug.cutmix, cfg.aug.smoothing) == (0.8, 1.0, 0.1)
    lp = load_config(LinprobeConfig, REPO / "configs/linprobe/vit_base.yaml")
    assert (lp.optim.name, lp.optim.blr, lp.global_batch_size, lp.epochs, lp.optim.warmup_epochs) == \
        ("lars", 0.1, 16384, 90, 10)


def test_references_recorded():
    refs = OmegaConf.load(REPO / "configs/cls_transfer/references.yaml")
    assert refs.inat2019.mae.vit_base == 80.5 and refs.inat2019.mae.vit_large == 83.4
    assert refs.places365.mae.vit_base == 57.9 and refs.places365.mae.vit_large == 59.4
