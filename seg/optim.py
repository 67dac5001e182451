"""The optimizer and lr schedule of mmseg 1.2.2's MAE UperNet recipe.

* Weight decay: mmseg's ``LearningRateDecayOptimizerConstructor`` (like BEiT's segmentation code)
  exempts only 1-D parameters and biases. Its name check ``name in ('pos_embed', 'cls_token')`` never
  matches the prefixed ``backbone.pos_embed`` / ``backbone.cls_token``, so those and the relative
  position bias tables are decayed; we do the same (a recipe detail, kept for fidelity).
* Schedule: ``LinearLR(start_factor=1e-6, begin=0, end=1500)`` then ``PolyLR(power=1, eta_min=0,
  begin=1500, end=160000)``. mmengine runs a scheduler over ``end - begin - 1`` steps, so the warmup
  reaches the full lr at iteration 1499 and the poly part decays from the full lr at 1500 to
  ``min_lr`` at 159999. (mmseg 0.x multiplied one poly curve over the whole run by the warmup.)
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from crossmae.engine import build_adamw

# decay everything but 1-D parameters (biases, norms, layer scales), as mmseg's constructor does
MMSEG_NO_DECAY_NAMES: tuple[str, ...] = ()


def build_seg_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999),
                        layer_decay: float | None = None, num_layers: int | None = None) -> torch.optim.AdamW:
    """AdamW with mmseg's layer-wise lr decay groups and its weight-decay rule."""
    return build_adamw(model, lr, weight_decay, betas=betas, layer_decay=layer_decay, num_layers=num_layers,
                       no_decay_names=MMSEG_NO_DECAY_NAMES)


def mmseg_warmup_poly(base_lr: float, total_iters: int, warmup_iters: int, power: float = 1.0,
                      min_lr: float = 0.0, warmup_ratio: float = 1e-6) -> Callable[[int], float]:
    """lr at iteration ``it`` (0-based) of mmengine's LinearLR [0, warmup) + PolyLR [warmup, total)."""
    if not 0 <= warmup_iters < total_iters:
        raise ValueError(f"optim.warmup_iters ({warmup_iters}) must be in [0, max_iters={total_iters})")

    def lr_at(it: int) -> float:
        if it < warmup_iters:
            return base_lr * (warmup_ratio + (1 - warmup_ratio) * it / max(1, warmup_iters - 1))
        steps = max(1, total_iters - warmup_iters - 1)
        progress = min(it - warmup_iters, steps) / steps
        return (base_lr - min_lr) * (1 - progress) ** power + min_lr
    return lr_at
