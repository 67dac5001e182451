"""mmseg 1.2.2 MAE recipe details: weight-decay groups and the LinearLR + PolyLR schedule (issue 12)."""
from __future__ import annotations

import pytest
import torch

from seg.model import build_upernet
from seg.optim import build_seg_optimizer, mmseg_warmup_poly

TINY_BACKBONE = dict(size="small", img_size=32, patch_size=4, embed_dim=32, depth=4, num_heads=2, use_cls_token=True)


def test_decay_follows_mmsegs_constructor():
    """mmseg decays every parameter with more than one dimension that is not a bias: its exemption of
    'pos_embed' / 'cls_token' compares unprefixed names and so never applies."""
    torch.manual_seed(0)
    model = build_upernet(dict(TINY_BACKBONE), num_classes=3, channels=8, aux_channels=8)
    opt = build_seg_optimizer(model, 1e-4, 0.05, layer_decay=0.65, num_layers=4)
    ids = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    decay = {n: ids[id(p)] for n, p in model.named_parameters()}
    for name in ("backbone.cls_token", "backbone.pos_embed", "backbone.blocks.0.attn.relative_position_bias_table",
                 "backbone.blocks.1.attn.qkv.weight", "decode_head.conv_seg.weight"):
        assert decay[name] == 0.05, name
    for name in ("backbone.blocks.0.gamma_1", "backbone.blocks.0.norm1.weight", "backbone.blocks.1.attn.qkv.bias",
                 "decode_head.conv_seg.bias"):
        assert decay[name] == 0.0, name
    # mmseg's rule, applied to every name: 1-D or '.bias' -> 0, else the base decay
    for n, p in model.named_parameters():
        assert decay[n] == (0.0 if p.ndim == 1 or n.endswith(".bias") else 0.05), n


def test_schedule_is_mmengines_linear_warmup_then_poly():
    lr = mmseg_warmup_poly(1e-4, total_iters=160000, warmup_iters=1500, power=1.0, min_lr=0.0, warmup_ratio=1e-6)
    # mmengine runs each scheduler over end - begin - 1 steps: warmup 1499, poly 158499
    assert lr(0) == pytest.approx(1e-10)
    assert lr(1) == pytest.approx(1e-4 * (1e-6 + (1 - 1e-6) / 1499))
    assert lr(1499) == pytest.approx(1e-4) and lr(1500) == pytest.approx(1e-4)
    assert lr(1501) == pytest.approx(1e-4 * (1 - 1 / 158499))
    assert lr(80000) == pytest.approx(1e-4 * (1 - 78500 / 158499))
    assert lr(159999) == 0.0 and lr(160000) == 0.0
    # mmseg 0.x's form scaled the whole curve: 0.9906 x the lr right after warmup; not any more
    assert lr(1500) / (1e-4 * (1 - 1500 / 160000)) > 1.009
    half = mmseg_warmup_poly(1.0, 100, 10, power=0.9, min_lr=0.1)
    assert half(10) == pytest.approx(1.0) and half(99) == pytest.approx(0.1)
    assert half(50) == pytest.approx(0.1 + 0.9 * (1 - 40 / 89) ** 0.9)


def test_schedule_rejects_a_warmup_longer_than_the_run():
    with pytest.raises(ValueError, match="warmup_iters"):
        mmseg_warmup_poly(1e-4, total_iters=100, warmup_iters=100)
