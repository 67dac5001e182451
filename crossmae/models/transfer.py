"""A pretraining encoder's weights -> the encoder part of a transfer model (det, seg, classification).

Tensors in, tensors out: the caller reads the file (``crossmae.engine.checkpoint``: ``load_checkpoint``,
``model_state``, ``encoder_state``) and names it in its own error message; this module decides which
tensors go where and how they are resized. One resize policy for every target:

* position tables: the grid part bicubically resized (align_corners=False, no antialias: MAE's
  ``interpolate_pos_embed``, ViTDet's ``get_abs_pos``), prefix (cls) slots kept as they are;
* a patch projection of another kernel size: resampled with timm's ``resample_patch_embed`` (FlexiViT's
  pseudo-inverse), only when the target asks for it (ViTDet-H loads the p14 MAE-H into p16).

Anything else that does not fit (a key on one side only that the target does not declare new or unused,
a shape) is one :class:`~crossmae.engine.checkpoint.CheckpointError` listing the keys.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from ..errors import CheckpointError
from .rel_pos import resize_abs_pos
from .sizes import HIERA_SIZES

log = logging.getLogger("crossmae")

PATCH_WEIGHT = "patch_embed.proj.weight"


@dataclass
class EncoderWeights:
    tensors: dict[str, torch.Tensor]  # what to load (strict=False): the target's names and shapes
    missing: list[str]  # target keys the encoder lacks: the target's own initialisation stays
    unexpected: list[str]  # encoder keys the target does not use


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 1
                     ) -> torch.Tensor:
    """[1, prefix + h*h, C] (a square grid) -> [1, prefix + H*W, C]; the same tensor when the grid is equal."""
    n = pos_embed.shape[1] - num_prefix_tokens
    side = math.isqrt(max(n, 0))
    if pos_embed.ndim != 3 or side * side != n:
        raise CheckpointError(f"pos_embed {list(pos_embed.shape)}: {n} positions after {num_prefix_tokens} "
                              f"prefix slots, not a square grid")
    if (side, side) != tuple(new_grid):
        log.info("resizing position embeddings from %dx%d to %dx%d", side, side, *new_grid)
    return resize_abs_pos(pos_embed, (side, side), tuple(new_grid), num_prefix_tokens)


def encoder_weights(encoder: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *,
                    is_new: Callable[[str], bool] = lambda key: False, unused: Iterable[str] = (),
                    pos_grid: tuple[int, int] | None = None, num_prefix_tokens: int = 1,
                    resize_patch_embed: bool = False) -> EncoderWeights:
    """Map ``encoder`` (timm names, e.g. ``encoder_state(model_state(ckpt))``) onto ``target`` (the
    receiving module's ``state_dict()``).

    is_new: target keys a pretraining encoder never has (relative positions, layer scales, heads);
    unused: encoder keys the target may leave out (a cls token, the final norm);
    pos_grid: the target's ``pos_embed`` grid (default: square, from its length); num_prefix_tokens: its
    cls slots (the encoder's table has as many);
    resize_patch_embed: resample a patch projection of another kernel size instead of refusing it.
    """
    encoder = {k.removeprefix("module."): v for k, v in encoder.items()}
    unused = set(unused)
    unexpected = sorted(k for k in encoder if k not in target)
    missing = sorted(k for k in target if k not in encoder)
    foreign = [k for k in unexpected if k not in unused]
    absent = [k for k in missing if not is_new(k)]
    tensors = {k: v for k, v in encoder.items() if k in target}
    if "pos_embed" in tensors:
        grid = pos_grid or (math.isqrt(target["pos_embed"].shape[1] - num_prefix_tokens),) * 2
        tensors["pos_embed"] = resize_pos_embed(tensors["pos_embed"], grid, num_prefix_tokens)
    src, dst = tensors.get(PATCH_WEIGHT), target.get(PATCH_WEIGHT)
    if resize_patch_embed and src is not None and src.shape[:2] == dst.shape[:2] and src.shape[2:] != dst.shape[2:]:
        from timm.layers import resample_patch_embed
        log.info("resampling the patch projection from %s to %s", tuple(src.shape[2:]), tuple(dst.shape[2:]))
        tensors[PATCH_WEIGHT] = resample_patch_embed(src.float(), list(dst.shape[2:])).to(src.dtype)
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
             for k, v in tensors.items() if v.shape != target[k].shape]
    if foreign or absent or wrong:
        hint = " (patch size differs: pass resize_patch_embed=True)" if any(PATCH_WEIGHT in w for w in wrong) else ""
        parts = [f"{len(foreign)} unexpected keys {foreign[:8]} (pass the encoder part only, in timm key names: "
                 f"crossmae.engine.checkpoint.encoder_state)" if foreign else "",
                 f"{len(absent)} missing keys {absent[:8]}" if absent else "",
                 f"shape mismatch for {len(wrong)} keys{hint}: " + "; ".join(wrong[:8]) if wrong else ""]
        raise CheckpointError("; ".join(p for p in parts if p))
    return EncoderWeights(tensors, missing, unexpected)


def load_encoder_weights(module: torch.nn.Module, encoder: dict[str, torch.Tensor], **kwargs) -> EncoderWeights:
    """:func:`encoder_weights` onto ``module``'s state dict, then loaded into it."""
    weights = encoder_weights(encoder, module.state_dict(), **kwargs)
    module.load_state_dict(weights.tensors, strict=False)
    return weights


# ----------------------------------------------------------------------------- architectures from a checkpoint
HIERA_ENCODER_ARGS = ("img_size", "in_chans", "embed_dim", "num_heads", "stages", "q_stride",
                      "mask_unit_size", "mask_unit_attn", "dim_mul", "head_mul", "patch_kernel", "patch_stride",
                      "patch_padding", "mlp_ratio", "norm_eps")
_HIERA_NAME = re.compile(r"hiera_(tiny|small|base_plus|base|large)")


def hiera_arch(model_config: dict) -> dict | None:
    """The Hiera encoder arguments recorded in a pretraining config's ``model`` section (a factory name such
    as 'crossmae_hiera_tiny_224' plus overrides): the size's values, then the overrides that shape the
    encoder's weights (decoder, masking, initialisation and q_pool dropped). None when it names no Hiera."""
    m = _HIERA_NAME.search(str(model_config.get("name", "")))
    if m is None:
        return None
    arch = dict(HIERA_SIZES[m.group(1)], img_size=224)
    arch.update({k: model_config[k] for k in HIERA_ENCODER_ARGS if model_config.get(k) is not None})
    return arch


def hiera_backbone_args(spec: dict, checkpoint_config: dict | None = None, field: str = "model.hiera") -> dict:
    """Keyword arguments of :class:`crossmae.models.hiera.DenseHiera` from a config's backbone section:
    ``size`` one of HIERA_SIZES (at 224 px), or 'auto' = the encoder recorded in the pretraining checkpoint's
    ``config.model`` (``checkpoint_config``; without one, the keys given when they include ``stages``), or
    absent (DenseHiera's defaults); the other keys override.
    The pretraining ``q_pool`` is not carried over: pooling has no weights, and the backbone pools between
    every two stages unless told otherwise."""
    spec = dict(spec)
    size = spec.pop("size", None)
    if size == "auto" and checkpoint_config is None and "stages" in spec:
        arch = {}  # a saved config: the architecture resolved when the run started
    elif size == "auto":
        model = (checkpoint_config or {}).get("model")
        arch = hiera_arch(model) if isinstance(model, dict) else None
        if arch is None:
            raise ValueError(f"{field}.size=auto reads the encoder from the pretrained checkpoint, but it records "
                             f"no Hiera model (config.model.name: {(model or {}).get('name')!r}): give pretrained= "
                             f"a Hiera checkpoint or set {field}.size to one of {', '.join(HIERA_SIZES)}")
    elif size is None:
        arch = {}
    elif size in HIERA_SIZES:
        arch = dict(HIERA_SIZES[size], img_size=224)
    else:
        raise ValueError(f"{field}.size must be auto or one of {', '.join(HIERA_SIZES)}, got {size!r}")
    return {**arch, **spec}
