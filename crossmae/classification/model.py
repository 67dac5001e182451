"""The classifier: timm's VisionTransformer with the pretrained encoder's weights.

Our encoder keeps timm's parameter names, so a CrossMAE/MAE checkpoint's encoder loads into
``VisionTransformer(global_pool='avg', fc_norm=True)`` with only ``fc_norm`` and ``head`` missing
(MAE's fine-tuning model). With ``global_pool='token'`` the cls token goes through the encoder's
final ``norm``; a CrossMAE encoder trained with inter-block attention has none, so that norm starts
fresh (identity) and the log says so.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import VisionTransformer

from ..engine.checkpoint import CheckpointError, encoder_state
from ..models.sizes import VIT_SIZES, vit_encoder, vit_size_in_name

logger = logging.getLogger("crossmae")

ARCH_FIELDS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
POOLS = ("avg", "token")


_SIZE_LIST = "/".join(VIT_SIZES)


def _size_arch(size: str) -> dict[str, Any]:
    """A ViT size's architecture at MAE's defaults (224 px, mlp ratio 4)."""
    return {"img_size": 224, "mlp_ratio": 4.0, **vit_encoder(size)}


def arch_from_checkpoint(ckpt: dict) -> dict[str, Any]:
    """Encoder architecture recorded in a checkpoint: our pretraining config (``config.model``: a
    factory name + overrides), our fine-tuning config (resolved ``config.model`` fields), or the
    official release's ``args`` (``args.model`` like 'mae_vit_base_patch16', ``args.input_size``)."""
    cfg = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    if "name" in model:
        size = vit_size_in_name(model["name"])
        if size is None:
            raise CheckpointError(f"checkpoint model {model['name']!r} is not a ViT size we know")
        return {**_size_arch(size), **{k: model[k] for k in ARCH_FIELDS if model.get(k) is not None}}
    if all(model.get(k) is not None for k in ARCH_FIELDS):
        return {k: model[k] for k in ARCH_FIELDS}
    args = ckpt.get("args")
    name = getattr(args, "model", None) if args is not None else None
    size = vit_size_in_name(name) if name else None
    if size is not None:
        arch = _size_arch(size)
        if getattr(args, "input_size", None):
            arch["img_size"] = int(args.input_size)
        return arch
    raise CheckpointError("the checkpoint does not record its architecture (no config.model, no args.model): "
                          f"set model.arch to {_SIZE_LIST}")


def resolve_arch(model_cfg, ckpt: dict | None) -> dict[str, Any]:
    """``model.arch`` (a size, or 'auto' = the checkpoint's) with the explicit fields on top.
    ``img_size`` left empty means the checkpoint's pretraining resolution."""
    arch_name = model_cfg.arch
    if arch_name == "auto":
        if ckpt is None:
            raise ValueError("model.arch=auto reads the architecture from the pretrained checkpoint, but no "
                             f"checkpoint was given: set pretrained=<path> or model.arch={_SIZE_LIST}")
        arch = arch_from_checkpoint(ckpt)
    elif arch_name in VIT_SIZES:
        arch = _size_arch(arch_name)
    else:
        raise ValueError(f"model.arch must be auto or one of {sorted(VIT_SIZES)}, got {arch_name!r}")
    for k in ARCH_FIELDS:
        if getattr(model_cfg, k, None) is not None:
            arch[k] = getattr(model_cfg, k)
    return arch


def build_classifier(num_classes: int, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                     mlp_ratio: float = 4.0, global_pool: str = "avg", drop_path_rate: float = 0.0) -> VisionTransformer:
    """MAE's fine-tuning ViT: 'avg' = mean of patch tokens + fc_norm (no final norm), 'token' = cls token
    after the final norm."""
    if global_pool not in POOLS:
        raise ValueError(f"model.global_pool must be one of {POOLS}, got {global_pool!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return VisionTransformer(img_size=img_size, patch_size=patch_size, num_classes=num_classes,
                             global_pool=global_pool, fc_norm=global_pool == "avg", embed_dim=embed_dim, depth=depth,
                             num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path_rate=drop_path_rate)


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """[1, prefix + h*w, D] -> [1, prefix + H*W, D], bicubic on the patch part (e.g. 224 -> 448 px).

    Plain bicubic without antialiasing, as MAE's ``interpolate_pos_embed`` (timm's default antialias=True
    would change the 448 px table by up to 0.05 on the sin-cos table)."""
    n = pos_embed.shape[1] - num_prefix_tokens
    side = int(round(n ** 0.5))
    if side * side != n:
        raise CheckpointError(f"pos_embed has {n} patch positions, not a square grid")
    if (side, side) == tuple(new_grid):
        return pos_embed
    logger.info("resizing position embeddings from %dx%d to %dx%d", side, side, *new_grid)
    return resample_abs_pos_embed(pos_embed, list(new_grid), [side, side], interpolation="bicubic", antialias=False,
                                  num_prefix_tokens=num_prefix_tokens)


def load_encoder(model: VisionTransformer, state: dict[str, torch.Tensor], source: str = "<checkpoint>") -> list[str]:
    """Load the encoder part of a pretraining state dict into ``model``; returns the keys left at
    their fresh initialisation. Only ``head``, ``fc_norm`` and (for cls pooling of an encoder with no
    final norm) ``norm`` may be missing; any other missing key, extra key or shape is an error."""
    enc = encoder_state(state)
    if "pos_embed" in enc:
        enc["pos_embed"] = resize_pos_embed(enc["pos_embed"], model.patch_embed.grid_size, model.num_prefix_tokens)
    if isinstance(model.norm, nn.Identity):  # avg pooling: fc_norm replaces the final norm, as in MAE
        dropped = [k for k in enc if k.startswith("norm.")]
        for k in dropped:
            del enc[k]
        if dropped:
            logger.info("average pooling: the encoder's final norm is replaced by a fresh fc_norm")
    own = model.state_dict()
    unexpected = sorted(k for k in enc if k not in own)
    bad_shape = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                 for k, v in enc.items() if k in own and own[k].shape != v.shape]
    missing = sorted(k for k in own if k not in enc)
    allowed = ("head.", "fc_norm.", "norm.")
    bad_missing = [k for k in missing if not k.startswith(allowed)]
    if unexpected or bad_shape or bad_missing:
        raise CheckpointError(
            f"{source} does not match the classifier's encoder (check model.arch / patch_size / embed_dim / "
            f"depth / num_heads): " + "; ".join(
                part for part in (f"unexpected keys {unexpected[:6]}" if unexpected else "",
                                  f"shape mismatch {bad_shape[:4]}" if bad_shape else "",
                                  f"missing keys {bad_missing[:6]}" if bad_missing else "") if part))
    model.load_state_dict(enc, strict=False)
    if any(k.startswith("norm.") for k in missing):
        logger.warning("%s has no final encoder norm (CrossMAE with inter-block attention): the cls-token path "
                       "uses a freshly initialised norm", source)
    logger.info("loaded encoder from %s; fresh: %s", source, missing)
    return missing


def init_head(model: VisionTransformer, std: float) -> None:
    """MAE re-initialises the head small: std 2e-5 for fine-tuning, 0.01 for linear probing."""
    linear = model.head if isinstance(model.head, nn.Linear) else model.head[-1]
    trunc_normal_(linear.weight, std=std)
    nn.init.zeros_(linear.bias)


def make_linear_probe(model: VisionTransformer) -> VisionTransformer:
    """Freeze everything and put BatchNorm1d(affine=False) before the linear head (MAE's probe)."""
    head = model.head
    model.head = nn.Sequential(nn.BatchNorm1d(head.in_features, affine=False, eps=1e-6), head)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("head.")
    return model
