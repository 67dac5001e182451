"""The detector's backbone net from a config section, and its pretrained encoder.

``model.family`` picks it: 'vit' (crossmae.models.dense_vit.DenseViT with ViTDet's settings from the ViT
fields of det.config.DetModel) or 'hiera' (crossmae.models.hiera.DenseHiera from ``model.hiera``). Both
satisfy crossmae.models.dense.DenseBackbone, which is all det.modeling reads.
"""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from crossmae.engine import load_checkpoint
from crossmae.engine.checkpoint import load_backbone_encoder
from crossmae.models.dense import FAMILIES
from crossmae.models.dense_vit import DenseViT
from crossmae.models.hiera import DenseHiera
from crossmae.models.transfer import hiera_backbone_args

from .config import resolve_vit


# the config fields that decide the backbone's shapes, named when a checkpoint does not fit
SHAPE_FIELDS = {"vit": "the ViT of model.* (embed_dim / depth / num_heads / patch_size)",
                "hiera": "the Hiera of model.hiera (size / embed_dim / num_heads / stages / mask_unit_size / "
                         "patch_kernel)"}


def build_net(m, image_size: int, pretrained: str = "") -> nn.Module:
    """The backbone of the ``model`` config section (see det.config.DetModel). Resolved arguments are
    written back into ``m``, so the saved config rebuilds the net: a ViT's unset fields from ``m.size``;
    a Hiera with ``model.hiera.size=auto`` takes its architecture from the ``pretrained`` checkpoint."""
    if m.family not in FAMILIES:
        raise ValueError(f"model.family must be one of {FAMILIES}, got {m.family!r}")
    if m.family == "hiera":
        ckpt_config = load_checkpoint(pretrained).get("config") if m.hiera.get("size") == "auto" and pretrained \
            else None
        m.hiera = hiera_backbone_args(m.hiera, ckpt_config)
        return DenseHiera(**m.hiera)
    resolve_vit(m)
    return DenseViT(img_size=image_size, pretrain_img_size=m.pretrain_img_size, patch_size=m.patch_size,
                    embed_dim=m.embed_dim, depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
                    drop_path_rate=m.drop_path_rate, window_size=m.window_size,
                    global_attn_indexes=tuple(m.global_attn_indexes), rel_pos=m.rel_pos, use_abs_pos=True,
                    out_indices=(-1,), use_act_checkpoint=m.use_act_checkpoint)


def load_encoder(net: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load the encoder of a pretraining checkpoint into the backbone (crossmae.engine.checkpoint.
    load_backbone_encoder), a patch projection of another size resampled (ViT-H p14 -> p16)."""
    family = "hiera" if isinstance(net, DenseHiera) else "vit"
    return load_backbone_encoder(net, path, SHAPE_FIELDS[family], resize_patch_embed=True)
