"""The model sizes, stated once. Factories, names, exports, benchmark tables, the paper-row launcher and the
det/seg backbones all read them from here.

ViT: the encoder and decoder of the paper's table (MAE's ViT-S/B/L/H; CrossMAE keeps MAE's decoder widths).
Hiera: Ryali et al. 2023, Table 1 (channels, heads and blocks per stage; q_pool 2 in every MAE recipe).
"""
from __future__ import annotations

import re

VIT_SIZES: dict[str, dict[str, int]] = {
    "small": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=256, decoder_num_heads=8),
    "base": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=512, decoder_num_heads=16),
    "large": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=512, decoder_num_heads=16),
    "huge": dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16, decoder_embed_dim=512, decoder_num_heads=16),
}
VIT_LETTERS = {"small": "S", "base": "B", "large": "L", "huge": "H"}
ENCODER_FIELDS = ("embed_dim", "depth", "num_heads")  # what tells one ViT size from another (not the patch)

HIERA_SIZES: dict[str, dict] = {
    "tiny": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2)),
    "small": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2)),
    "base": dict(embed_dim=96, num_heads=1, stages=(2, 3, 16, 3)),
    "base_plus": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3)),
    "large": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4)),
}
HIERA_LETTERS = {"tiny": "T", "small": "S", "base": "B", "base_plus": "B+", "large": "L"}


def vit_encoder(size: str) -> dict[str, int]:
    """The encoder fields of a ViT size (patch_size, embed_dim, depth, num_heads), for backbones without a decoder."""
    if size not in VIT_SIZES:
        raise ValueError(f"unknown ViT size {size!r}; available: {', '.join(VIT_SIZES)}")
    return {k: v for k, v in VIT_SIZES[size].items() if not k.startswith("decoder_")}


def vit_size_of(embed_dim: int, depth: int | None = None, num_heads: int | None = None) -> str | None:
    """The ViT size with this width (and depth and heads, when given); None for a non-standard model."""
    for size, fields in VIT_SIZES.items():
        if fields["embed_dim"] == embed_dim and depth in (None, fields["depth"]) \
                and num_heads in (None, fields["num_heads"]):
            return size
    return None


def timm_vit_name(size: str, img_size: int | None = 224) -> str:
    """timm's name of a ViT size: 'vit_base_patch16_224' (or 'vit_base_patch16' with img_size None)."""
    name = f"vit_{size}_patch{VIT_SIZES[size]['patch_size']}"
    return name if img_size is None else f"{name}_{img_size}"


def vit_model_name(family: str, size: str) -> str:
    """The registered factory of a pretraining model ('crossmae' / 'mae') at a ViT size:
    'crossmae_vit_base_patch16'."""
    return f"{family}_vit_{size}_patch{VIT_SIZES[size]['patch_size']}"


_SIZE_IN_NAME = re.compile(r"vit_(%s)" % "|".join(VIT_SIZES))


def vit_size_in_name(name: str | None) -> str | None:
    """The ViT size a factory or timm name carries ('mae_vit_base_patch16' -> 'base'); None for any other."""
    m = _SIZE_IN_NAME.search(name or "")
    return m.group(1) if m else None
