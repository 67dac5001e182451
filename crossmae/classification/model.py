"""The classifier: timm's VisionTransformer (or Hiera, :class:`HieraClassifier`) with the pretrained encoder's weights.

Our encoder keeps timm's parameter names, so a CrossMAE/MAE checkpoint's encoder loads into
``VisionTransformer(global_pool='avg', fc_norm=True)`` with only ``fc_norm`` and ``head`` missing
(MAE's fine-tuning model). With ``global_pool='token'`` the cls token goes through the encoder's
final ``norm``; a CrossMAE encoder trained with inter-block attention has none, so that norm starts
fresh (identity) and the log says so.

A CrossMAE-Hiera / MAE-Hiera checkpoint (``model.arch: auto``) gives :class:`HieraClassifier`: the Hiera
encoder (timm names, pooling between every two stages as timm's classifiers), the mean of the last stage's
tokens, ``fc_norm`` and ``head``; Hiera has no cls token, so only ``global_pool: avg``.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer

from ..engine.checkpoint import CheckpointError, encoder_state
from ..models.hiera import HieraEncoder, hiera_arch_name
from ..models.naming import describe_arch
from ..models.sizes import VIT_SIZES, vit_encoder, vit_size_in_name
from ..models.transfer import hiera_arch, load_encoder_weights, resize_pos_embed  # noqa: F401 (re-exported)

logger = logging.getLogger("crossmae")

ARCH_FIELDS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
POOLS = ("avg", "token")
FRESH = ("head.", "fc_norm.", "norm.")  # the classifier's own parts: never in a pretraining encoder's weights


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
    if model.get("family") == "hiera" and model.get("hiera"):  # our fine-tuning config of a Hiera
        return _hiera(dict(model["hiera"], img_size=model.get("img_size") or model["hiera"].get("img_size", 224)))
    hiera = hiera_arch(model)  # a CrossMAE-Hiera / MAE-Hiera pretraining config
    if hiera is not None:
        return _hiera(hiera)
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


def _hiera(encoder: dict[str, Any]) -> dict[str, Any]:
    """A Hiera classifier's architecture in ClsModel's fields: family, img_size, hiera (the other encoder
    arguments), depth (blocks, for layer decay)."""
    encoder = dict(encoder)
    return {"family": "hiera", "img_size": encoder.pop("img_size"), "hiera": encoder,
            "depth": sum(encoder["stages"])}


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
    if arch.get("family") == "hiera":  # of the explicit fields only the resolution applies to Hiera
        arch["img_size"] = getattr(model_cfg, "img_size", None) or arch["img_size"]
        return arch
    for k in ARCH_FIELDS:
        if getattr(model_cfg, k, None) is not None:
            arch[k] = getattr(model_cfg, k)
    return {**arch, "family": "vit"}


def describe(arch: dict[str, Any]) -> str:
    """The resolved architecture in words: 'ViT-B/16', 'Hiera 32w/1-3-1 32px'."""
    if arch.get("family") == "hiera":
        enc = arch["hiera"]  # HieraEncoder's defaults where the config leaves a field out
        name = hiera_arch_name(enc.get("embed_dim", 96), enc.get("num_heads", 1), enc.get("stages", (2, 3, 16, 3)))
        return name if int(arch["img_size"]) == 224 else f"{name} {int(arch['img_size'])}px"
    return describe_arch(**{k: arch[k] for k in ARCH_FIELDS})


class HieraClassifier(HieraEncoder):
    """Hiera + mean of the last stage's tokens + ``fc_norm`` + linear ``head`` (timm's Hiera head: mean, norm,
    fc). The encoder's parameter names are the pretraining checkpoint's, as for the ViT classifier."""

    def __init__(self, num_classes: int, img_size: int, drop_path_rate: float = 0.0, q_pool: int | None = None,
                 **encoder_kwargs):
        stages = encoder_kwargs.get("stages", (2, 3, 16, 3))
        super().__init__(img_size=img_size, drop_path_rate=drop_path_rate,
                         q_pool=len(stages) - 1 if q_pool is None else q_pool, **encoder_kwargs)
        self.fc_norm = nn.LayerNorm(self.embed_dim, eps=1e-6)
        self.head = nn.Linear(self.embed_dim, num_classes)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        self.check_input(imgs)
        return self.head(self.fc_norm(self.pooled_features(imgs)))


def build_classifier(num_classes: int, img_size: int, patch_size: int | None = None, embed_dim: int | None = None,
                     depth: int | None = None, num_heads: int | None = None, mlp_ratio: float | None = 4.0,
                     global_pool: str = "avg", drop_path_rate: float = 0.0, family: str = "vit",
                     hiera: dict[str, Any] | None = None) -> nn.Module:
    """MAE's fine-tuning ViT: 'avg' = mean of patch tokens + fc_norm (no final norm), 'token' = cls token
    after the final norm. family 'hiera': :class:`HieraClassifier` of the ``hiera`` encoder arguments."""
    if global_pool not in POOLS:
        raise ValueError(f"model.global_pool must be one of {POOLS}, got {global_pool!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if family == "hiera":
        if global_pool != "avg":
            raise ValueError("model.global_pool=token: Hiera has no cls token; use model.global_pool=avg")
        return HieraClassifier(num_classes, img_size, drop_path_rate, **(hiera or {}))
    return VisionTransformer(img_size=img_size, patch_size=patch_size, num_classes=num_classes,
                             global_pool=global_pool, fc_norm=global_pool == "avg", embed_dim=embed_dim, depth=depth,
                             num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path_rate=drop_path_rate)


def load_encoder(model: VisionTransformer, state: dict[str, torch.Tensor], source: str = "<checkpoint>") -> list[str]:
    """Load the encoder part of a pretraining state dict into ``model`` (crossmae.models.transfer: pos_embed
    resized to the model's grid); returns the keys left at their fresh initialisation. Only ``head``,
    ``fc_norm`` and (for cls pooling of an encoder with no final norm) ``norm`` may be missing; any other
    missing key, extra key or shape is an error."""
    hiera = isinstance(model, HieraClassifier)
    avg_pool = hiera or isinstance(model.norm, nn.Identity)  # fc_norm replaces the final norm, as in MAE
    try:
        loaded = load_encoder_weights(model, encoder_state(state), is_new=lambda k: k.startswith(FRESH),
                                      unused=("norm.weight", "norm.bias") if avg_pool else (),
                                      pos_grid=(model.token_grid,) * 2 if hiera else model.patch_embed.grid_size,
                                      num_prefix_tokens=0 if hiera else model.num_prefix_tokens)
    except CheckpointError as e:
        raise CheckpointError(f"{source} does not match the classifier's encoder (check model.arch / patch_size / "
                              f"embed_dim / depth / num_heads): {e}") from e
    if loaded.unexpected:
        logger.info("average pooling: the encoder's final norm is replaced by a fresh fc_norm")
    if any(k.startswith("norm.") for k in loaded.missing):
        logger.warning("%s has no final encoder norm (CrossMAE with inter-block attention): the cls-token path "
                       "uses a freshly initialised norm", source)
    logger.info("loaded encoder from %s; fresh: %s", source, loaded.missing)
    return loaded.missing


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
