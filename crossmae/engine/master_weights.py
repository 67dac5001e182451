"""bf16 weights with fp32 master copies in the optimizer: a candidate replacement for bf16 autocast.

Under autocast the weights stay fp32 and every forward casts each of them to bf16 (and LayerNorm's fp32 outputs
back to bf16 at the next matmul): on one H200 at batch 512 those copies were 13% of the GPU time of a ViT-B
CrossMAE step (docs/performance.md). Here the model itself is bf16, so the forward and backward need no casts,
and the optimizer steps an fp32 copy of every weight: updates smaller than bf16's resolution (2^-8 relative)
still accumulate there instead of rounding away. One fp32 gradient copy and one bf16 weight copy per step remain.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn


class MasterWeights:
    """Casts ``model`` to bf16 in place and steps ``build_optimizer(fp32 copy of model)``.

    Used like an optimizer: ``loss.backward(); opt.step(); opt.zero_grad()``. ``step`` copies the bf16
    gradients into the fp32 masters, steps the masters and copies them back into the model. The masters are a
    module, so optimizer factories that group parameters by name (``build_adamw``) work unchanged."""

    def __init__(self, model: nn.Module, build_optimizer: Callable[[nn.Module], torch.optim.Optimizer]):
        self.master = copy.deepcopy(model).float()
        self.model = model.to(torch.bfloat16)
        self.optimizer = build_optimizer(self.master)
        pairs = [(p, m) for p, m in zip(model.parameters(), self.master.parameters()) if p.is_floating_point()]
        self.params, self.masters = [p for p, _ in pairs], [m for _, m in pairs]

    # what the training step and the benchmark read from an optimizer
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults

    def to(self, device: torch.device | str) -> MasterWeights:
        """Move the masters with the model (before the first step: the optimizer's state is created there)."""
        self.master.to(device)
        return self

    @torch.no_grad()
    def step(self) -> None:
        for p, m in zip(self.params, self.masters):
            m.grad = None if p.grad is None else p.grad.float()  # unused parameters keep no gradient
        self.optimizer.step()
        torch._foreach_copy_(self.params, self.masters)  # fp32 -> bf16, one fused launch per dtype/device group

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.model.zero_grad(set_to_none)
        self.optimizer.zero_grad(set_to_none)
