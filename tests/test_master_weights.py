"""bf16 weights with fp32 master copies (crossmae/engine/master_weights.py) against a plain fp32 AdamW run.

Tolerances come from bf16's 8-bit significand: rounding to bf16 changes a number by at most 2^-9 of its value
and a vector by at most 2^-8 of its norm (measured 1.3e-3 on these weights)."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from crossmae.engine.master_weights import MasterWeights
from crossmae.engine.optim import build_adamw
from tiny import tiny_model

BF16_REL = 2.0 ** -8


def _flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in module.parameters()])


def test_three_steps_match_fp32_adamw_to_bf16_tolerance():
    torch.manual_seed(0)
    ref = tiny_model().train()
    init = _flat(ref)
    model = copy.deepcopy(ref)
    imgs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    masks = ref.sample_masks(imgs, generator=torch.Generator().manual_seed(2))
    opt_ref = build_adamw(ref, 1e-3, 0.05, betas=(0.9, 0.95))
    opt = MasterWeights(model, lambda m: build_adamw(m, 1e-3, 0.05, betas=(0.9, 0.95)))
    for step in range(3):
        loss_ref = ref(imgs, masks).loss
        loss_ref.backward()
        opt_ref.step()
        opt_ref.zero_grad()
        loss = model(imgs.bfloat16(), masks).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        # a mean over many bf16-rounded outputs: its relative error is at most that of one output, 2^-8; steps 2
        # and 3 also check that the stepped masters reached the bf16 model (the fp32 loss fell 1.65 -> 1.28)
        assert abs(loss.item() / loss_ref.item() - 1) < BF16_REL, (step, loss.item(), loss_ref.item())
    # as close to the fp32 run as a bf16 copy of it would be (measured 1e-3); masters that never moved are 1.2e-2 off
    ref_w, master_w = _flat(ref), _flat(opt.master)
    assert (master_w - ref_w).norm() < BF16_REL * ref_w.norm()
    assert (init - ref_w).norm() > 2 * BF16_REL * ref_w.norm()  # the runs really moved the weights


def test_masters_are_fp32_and_the_model_bf16():
    model = tiny_model()
    opt = MasterWeights(model, lambda m: build_adamw(m, 1e-3, 0.05))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in opt.master.parameters()} == {torch.float32}
    stepped = {id(p) for g in opt.param_groups for p in g["params"]}
    trained = {id(p) for p in opt.master.parameters() if p.requires_grad}  # not the fixed position embeddings
    assert stepped == trained  # the optimizer holds the masters, not the model


def test_updates_below_bf16_resolution_accumulate_in_the_masters():
    # a constant gradient makes every Adam step exactly lr; 1 - 1e-4 rounds back to 1.0 in bf16 (spacing below
    # 1.0 is 2^-8), so a bf16 weight stepped directly never moves, while the master reaches 1 - 40 lr = 0.996
    lr, steps = 1e-4, 40
    model = nn.Linear(4, 1, bias=False)
    nn.init.ones_(model.weight)
    opt = MasterWeights(model, lambda m: torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0))
    x = torch.ones(2, 4, dtype=torch.bfloat16)
    for _ in range(steps):
        model(x).sum().backward()
        opt.step()
        opt.zero_grad()
    expected = 1 - steps * lr
    assert torch.allclose(opt.master.weight, torch.full((1, 4), expected), rtol=0, atol=1e-6)
    assert torch.equal(model.weight, torch.full((1, 4), expected).bfloat16())  # 1 - 2^-8, not 1.0
