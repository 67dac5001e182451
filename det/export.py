"""Export a CrossMAE / MAE pretraining checkpoint for detectron2's ViTDet (``train.init_checkpoint``).

detectron2's ViTDet model names the ViT ``backbone.net`` with timm's parameter names, and keeps
``pos_embed`` with its cls slot on the pretraining grid (``pretrain_img_size`` 224 / patch 16 =
14 x 14, so [1, 197, C]); it has no ``cls_token`` and no final ``norm``. The export therefore

* keeps only the encoder (``patch_embed``, ``pos_embed``, ``blocks``), prefixed ``backbone.net.``;
* drops ``cls_token`` and the encoder's final ``norm.*``: the ViTDet ViT has neither. Under
  ``?matching_heuristics=True`` (detectron2's ``align_and_update_state_dicts``, suffix matching) a
  bare ``norm.weight`` can only match the head norms (``roi_heads.box_head.conv1.norm.weight``, ...):
  with a different width (768 vs 256) each match is skipped with a shape warning; with the same
  width the first loads and the second aborts the load with "Cannot match one checkpoint key to
  multiple keys in the model";
* resizes ``pos_embed`` to the detectron2 model's pretraining grid and, for a ViT-H with 14 px
  patches, resamples the patch projection to 16 px (ViTDet-H runs at patch 16).

With full ``backbone.net.*`` names the file loads exactly with or without matching heuristics.

    python -m det.export /ckpt/crossmae_vit_base.pth /ckpt/crossmae_vit_base_d2.pth

An existing output file is replaced only with ``--overwrite``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from crossmae.cli import report_errors
from crossmae.engine import encoder_state, load_checkpoint, model_state
from crossmae.files import atomic_write
from crossmae.export import refuse_hiera
from crossmae.userfiles import check_output_file
from crossmae.models.rel_pos import grid_from_length, resize_abs_pos

logger = logging.getLogger("crossmae")

PREFIX = "backbone.net."
DROPPED = ("cls_token", "norm.weight", "norm.bias", "fc_norm.weight", "fc_norm.bias")


def to_detectron2(state: dict[str, torch.Tensor], pretrain_img_size: int = 224, patch_size: int = 16
                  ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Pretraining state dict -> (detectron2 ViTDet state dict, dropped keys). Pure: tensors in, tensors out."""
    enc = encoder_state(state)
    dropped = sorted(k for k in enc if k in DROPPED)
    out = {}
    for k, v in enc.items():
        if k in DROPPED:
            continue
        if k == "pos_embed":
            if pretrain_img_size % patch_size:
                raise ValueError(f"pretrain_img_size {pretrain_img_size} is not divisible by patch_size {patch_size}")
            src = grid_from_length(v.shape[1] - 1, "pos_embed (with a cls slot)")
            dst = (pretrain_img_size // patch_size,) * 2
            v = resize_abs_pos(v, src, dst)
        elif k == "patch_embed.proj.weight" and v.shape[-1] != patch_size:
            from timm.layers import resample_patch_embed
            v = resample_patch_embed(v.float(), [patch_size, patch_size]).to(v.dtype)
        out[PREFIX + k] = v.detach().clone().contiguous()
    return out, dropped


def export(src: str | Path, dst: str | Path, pretrain_img_size: int = 224, patch_size: int = 16,
           overwrite: bool = False) -> Path:
    """Write ``{"model": state, "__author__": ...}``, loadable by
    ``DetectionCheckpointer(model).load(dst)``. An existing ``dst`` is replaced only if ``overwrite``."""
    dst = Path(dst)
    check_output_file(dst, overwrite)
    ckpt = load_checkpoint(src)
    state = model_state(ckpt, src)
    refuse_hiera(ckpt, state, src, "detectron2")
    out, dropped = to_detectron2(state, pretrain_img_size, patch_size)
    atomic_write(dst, lambda f: torch.save({"model": out, "__author__": "crossmae-toolkit"}, f))
    logger.info("wrote %d tensors to %s (dropped %s)", len(out), dst, dropped)
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m det.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="pretraining checkpoint (ours, the official CrossMAE/MAE release, .safetensors)")
    p.add_argument("dst", help="output .pth for detectron2's train.init_checkpoint")
    p.add_argument("--pretrain-img-size", type=int, default=224,
                   help="the detectron2 ViT's pretrain_img_size (its pos_embed grid is this / patch size)")
    p.add_argument("--patch-size", type=int, default=16, help="the detectron2 ViT's patch size")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return report_errors("det.export", export, a.src, a.dst, a.pretrain_img_size, a.patch_size, a.overwrite)


if __name__ == "__main__":
    sys.exit(main())
