"""Names that describe the model that actually ran.

A factory name such as ``crossmae_vit_small_patch16`` only says which defaults were used: a config may
override them into a 128-wide, 4-block model with 4 px patches. Every name that reaches a log, a
results.json, a table or a figure is therefore built from the model's real attributes: ``ViT-B/16`` when
width, depth and heads are a standard size's, else ``ViT 128w/4d/4h/p4``; the resolution when it is not
224 px; the parameter count; the masking and decoder settings of a pretraining model.
"""
from __future__ import annotations

import torch.nn as nn

from .sizes import VIT_LETTERS as SIZE_LETTERS, VIT_SIZES as SIZES


def describe_arch(embed_dim: int, depth: int, num_heads: int, patch_size: int, img_size: int = 224,
                  mlp_ratio: float = 4.0) -> str:
    """'ViT-B/16' for a standard size (any patch size: ViTDet-H runs ViT-H with 16 px patches),
    else 'ViT 128w/4d/4h/p4'; ' 448px' is appended at any resolution other than 224."""
    size = next((s for s, d in SIZES.items()
                 if (d["embed_dim"], d["depth"], d["num_heads"]) == (embed_dim, depth, num_heads)), None)
    if size is not None and float(mlp_ratio) == 4.0:
        name = f"ViT-{SIZE_LETTERS[size]}/{patch_size}"
    else:
        name = f"ViT {embed_dim}w/{depth}d/{num_heads}h/p{patch_size}"
        if float(mlp_ratio) != 4.0:
            name += f"/mlp{mlp_ratio:g}"
    return name if int(img_size) == 224 else f"{name} {int(img_size)}px"


def _pair_first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def arch_of(model: nn.Module) -> dict:
    """Architecture fields of a ViT (our encoder, a CrossMAE/MAE, the det/seg DenseViT, timm's
    VisionTransformer), read from its modules, not from any config."""
    blocks = model.blocks
    embed_dim = blocks[0].norm1.normalized_shape[0]
    pe = model.patch_embed
    img_size = pe.img_size if pe.img_size is not None else model.img_size  # DenseViT: any input size
    return {"embed_dim": int(embed_dim), "depth": len(blocks), "num_heads": int(blocks[0].attn.num_heads),
            "patch_size": _pair_first(pe.patch_size), "img_size": _pair_first(img_size),
            "mlp_ratio": blocks[0].mlp.fc1.out_features / embed_dim}


def num_params(model: nn.Module) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}K"


def describe_model(model: nn.Module) -> str:
    """One line naming the model that ran, e.g. 'CrossMAE ViT 128w/4d/4h/p4 32px (1.1M) mask 0.75 γ0.75
    dec 2x96 inter-block' or 'MAE ViT-B/16 (111.9M) mask 0.75 dec 8x512'."""
    from .crossmae import CrossMAE
    from .mae import MAE
    if hasattr(model, "describe"):  # a family that names itself (Hiera: crossmae/models/hiera.py)
        return model.describe()
    text = f"{describe_arch(**arch_of(model))} ({num_params(model)})"
    if isinstance(model, (CrossMAE, MAE)):
        dec = model.decoder_blocks
        width = model.decoder_norm.normalized_shape[0]
        if isinstance(model, CrossMAE):
            text = f"CrossMAE {text} mask {model.mask_ratio:g} γ{model.pred_ratio:g} dec {len(dec)}x{width}"
            if model.inter_block:
                text += " inter-block" + ("" if model.use_input else " (no input)")
            if dec[0].has_self_attn:
                text += " +self-attn"
        else:
            text = f"MAE {text} mask {model.mask_ratio:g} dec {len(dec)}x{width}"
    return text


def registered_or_described(name: str, model: nn.Module) -> str:
    """The factory name when the model has that factory's encoder architecture (224 px, the size's width,
    depth, heads and patch); otherwise the description, so an override never hides behind the name."""
    from . import MODELS
    if name in MODELS and not hasattr(model, "describe"):  # self-describing families always describe
        size = next((s for s in SIZES if f"_vit_{s}_" in name), None)
        arch = arch_of(model)
        if size is not None and arch["img_size"] == 224 and arch["mlp_ratio"] == 4.0 and all(
                arch[k] == SIZES[size][k] for k in ("embed_dim", "depth", "num_heads", "patch_size")):
            return name
    return describe_model(model)
