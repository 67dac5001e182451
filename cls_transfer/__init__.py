"""Classification transfer (iNaturalist 2019, Places365, any ImageFolder) on top of crossmae's fine-tuning.

    python -m cls_transfer --config configs/cls_transfer/inat2019_vit_base.yaml pretrained=ckpt.pth data.path=/data/inat2019
"""
from .datasets import INat2019, NUM_CLASSES, Places365Local, dataset_fn

__all__ = ["INat2019", "NUM_CLASSES", "Places365Local", "dataset_fn", "main", "run"]


def run(cfg) -> dict:
    from crossmae.finetune import run as finetune_run
    if not cfg.data.name:
        cfg.data.name = cfg.data.dataset if cfg.data.dataset != "imagefolder" else ""
    return finetune_run(cfg, dataset_fn=dataset_fn(cfg.data), task="cls_transfer")


def main(config: str | None, overrides: list[str]) -> dict:
    from crossmae.config import load_config
    from .config import TransferConfig
    return run(load_config(TransferConfig, config, overrides))
