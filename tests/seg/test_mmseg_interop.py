"""Our mmseg export loaded into the real mmsegmentation 1.2.2 MAE backbone (optional).

Skipped unless mmseg imports. It installs on current torch without compiled ops:
``pip install --no-deps -r .ci/mmseg-interop.txt`` (mmcv-lite 2.1, mmengine, mmsegmentation 1.2 and their
pure-python dependencies; see docs/seg.md). ``mmseg.models`` then imports once an ``mmcv.ops`` module exists; the
placeholder below exists only for this test's imports (nothing here calls a compiled op).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types

import pytest
import torch

from seg.export import export, to_mmseg_backbone_key, to_mmseg_segmentor
from seg.model import build_upernet, load_pretrained_encoder
from seg.optim import build_seg_optimizer, mmseg_warmup_poly

TINY_BACKBONE = dict(size="small", img_size=64, patch_size=4, embed_dim=64, depth=4, num_heads=4, use_cls_token=True)


def _placeholder_ops() -> types.ModuleType:
    ops = types.ModuleType("mmcv.ops")

    def __getattr__(name):  # every compiled op: a stub that refuses to run
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(f"mmcv.ops.{name} needs mmcv's compiled ops (this is mmcv-lite)")
        return missing
    ops.__getattr__ = __getattr__
    return ops


def _skip(reason: str):
    if os.environ.get("CROSSMAE_REQUIRE_MMSEG"):  # CI installed mmseg: not importing it is a failure
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def mmseg_mae():
    for name in ("mmcv", "mmengine", "mmseg"):
        if importlib.util.find_spec(name) is None:
            _skip(f"{name} is not installed (pip install --no-deps -r .ci/mmseg-interop.txt)")
    saved = sys.modules.get("mmcv.ops")
    if saved is None:
        sys.modules["mmcv.ops"] = _placeholder_ops()
    try:
        from mmseg.models.backbones import MAE
    except ImportError as e:
        _skip(f"mmseg.models does not import: {e}")
    finally:
        if saved is None:
            sys.modules.pop("mmcv.ops", None)
    return MAE


def mmseg_backbone(MAE, out_indices, **kw):
    # the recipe's settings (configs/_base_/models/upernet_mae.py + the MAE config): LN eps 1e-6, layer scale 1.0
    return MAE(img_size=64, patch_size=4, embed_dims=64, num_layers=4, num_heads=4, mlp_ratio=4,
               out_indices=list(out_indices), init_values=1.0, norm_cfg=dict(type="LN", eps=1e-6), **kw)


def test_trained_upernet_backbone_matches_mmseg(mmseg_mae):
    """A trained model's export (``backbone.*`` of the EncoderDecoder file) gives the same feature maps
    in mmseg's MAE backbone, relative position tables and layer scales included."""
    torch.manual_seed(0)
    model = build_upernet(dict(TINY_BACKBONE), num_classes=3, channels=16, aux_channels=8).eval()
    with torch.no_grad():  # make the parts that start as zeros / ones matter
        for name, p in model.backbone.named_parameters():
            if "relative_position_bias_table" in name or "gamma" in name or name == "cls_token":
                p.normal_(0, 0.5)
    state = to_mmseg_segmentor(model.state_dict())
    theirs = mmseg_backbone(mmseg_mae, model.backbone.out_indices)
    theirs.eval()  # mmseg's BEiT.train() returns None
    bb = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    missing, unexpected = theirs.load_state_dict(bb, strict=False)
    assert unexpected == []
    assert all(k.endswith("relative_position_index") for k in missing), missing
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, ref = model.backbone(x), theirs(x)
    assert len(ours) == len(ref) == 4
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_pretrained_encoder_export_initialises_mmsegs_backbone_like_ours(mmseg_mae, tiny_checkpoint, tmp_path):
    """The encoder export given as mmseg's ``init_cfg=Pretrained`` (pos_embed resized 8x8 -> 16x16 by mmseg's
    bicubic, zero bias tables) gives the backbone our ``load_pretrained_encoder`` builds."""
    path = tmp_path / "encoder_mmseg.pth"
    export(str(tiny_checkpoint), str(path))
    torch.manual_seed(0)
    model = build_upernet(dict(TINY_BACKBONE), num_classes=3, channels=16, aux_channels=8).eval()
    load_pretrained_encoder(model, str(tiny_checkpoint))
    theirs = mmseg_backbone(mmseg_mae, model.backbone.out_indices,
                            init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    theirs.init_weights()
    theirs.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.backbone(x), theirs(x)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_optimizer_groups_match_mmsegs_layer_decay_constructor(mmseg_mae):
    """mmseg's LayerDecayOptimizerConstructor (the MAE config's) on its MAE backbone + a head, against
    our groups: the same weight decay and lr scale for every parameter."""
    from mmseg.engine.optimizers import LayerDecayOptimizerConstructor
    torch.manual_seed(0)
    model = build_upernet(dict(TINY_BACKBONE), num_classes=3, channels=16, aux_channels=8)
    opt = build_seg_optimizer(model, 1e-4, 0.05, layer_decay=0.65, num_layers=4)
    ours = {id(p): (g["weight_decay"], g["lr_scale"]) for g in opt.param_groups for p in g["params"]}
    ours = {n: ours[id(p)] for n, p in model.named_parameters()}

    seg = torch.nn.Module()
    seg.backbone = mmseg_backbone(mmseg_mae, model.backbone.out_indices)
    seg.decode_head = torch.nn.Conv2d(64, 3, 1)  # any head: mmseg puts it at full lr
    ctor = LayerDecayOptimizerConstructor(
        dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)),
        dict(num_layers=4, layer_decay_rate=0.65))
    groups = []
    ctor.add_params(groups, seg)
    theirs = {n: (g["weight_decay"], g["lr_scale"]) for g in groups for n in g["param_names"]}
    ours_named = {"backbone." + to_mmseg_backbone_key(n[len("backbone."):]): v for n, v in ours.items()
                  if n.startswith("backbone.")}
    ours_named["decode_head.weight"] = ours["decode_head.conv_seg.weight"]
    ours_named["decode_head.bias"] = ours["decode_head.conv_seg.bias"]
    assert set(theirs) <= set(ours_named)
    for name, (wd, scale) in theirs.items():
        assert ours_named[name][0] == wd, name
        assert ours_named[name][1] == pytest.approx(scale), name


def test_schedule_matches_mmengines_schedulers(mmseg_mae):
    """The MAE config's LinearLR + PolyLR, stepped by mmengine itself (scaled down: 15 + 1585 iterations)."""
    from mmengine.optim.scheduler import LinearLR, PolyLR
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1e-4)
    schedulers = [LinearLR(opt, start_factor=1e-6, by_epoch=False, begin=0, end=15),
                  PolyLR(opt, eta_min=0.0, power=1.0, begin=15, end=1600, by_epoch=False)]
    ours = mmseg_warmup_poly(1e-4, total_iters=1600, warmup_iters=15, power=1.0, min_lr=0.0, warmup_ratio=1e-6)
    for it in range(1600):
        assert opt.param_groups[0]["lr"] == pytest.approx(ours(it), rel=1e-6, abs=1e-12), it
        opt.step()
        for s in schedulers:
            s.step()
