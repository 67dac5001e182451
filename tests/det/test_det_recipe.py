"""detectron2 ViTDet recipe details: head initialisation, exact anchors, the LSJ crop offsets (issue 12)."""
from __future__ import annotations

import math

import pytest
import torch

import det.transforms
from crossmae.config import load_config
from det.modeling import ExactAnchorGenerator
from det.train import DetConfig, build_detector
from det.transforms import LargeScaleJitter

TINY = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.patch_size=8", "model.pretrain_img_size=64",
        "model.window_size=4", "model.global_attn_indexes=[1]", "model.fpn_channels=16", "model.box_head_fc=256",
        "image_size=64"]


def test_roi_heads_start_as_in_detectron2():
    torch.manual_seed(0)
    model = build_detector(load_config(DetConfig, None, TINY), num_classes=80)
    pred, heads = model.roi_heads.box_predictor, model.roi_heads
    for layer, std in ((pred.cls_score, 0.01), (pred.bbox_pred, 0.001), (heads.mask_predictor.mask_fcn_logits, 0.001)):
        w = layer.weight.detach()
        assert w.std().item() == pytest.approx(std, rel=0.15) and abs(w.mean().item()) < std / 5
        assert torch.count_nonzero(layer.bias) == 0
    fc = [m for m in heads.box_head.modules() if isinstance(m, torch.nn.Linear)]
    assert fc
    for layer in fc:  # c2_xavier_fill: uniform(+-sqrt(3 / fan_in)), zero bias
        bound = math.sqrt(3 / layer.in_features)
        w = layer.weight.detach()
        assert w.abs().max().item() <= bound and w.abs().max().item() > 0.95 * bound
        assert torch.count_nonzero(layer.bias) == 0


def test_cell_anchors_are_exact_like_detectrons():
    gen = ExactAnchorGenerator(((32,), (64,)), ((0.5, 1.0, 2.0),) * 2)
    a = gen.cell_anchors[0]
    w, h = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)  # detectron2: w = sqrt(area / r), h = r * w
    expected = torch.tensor([[-w / 2, -h / 2, w / 2, h / 2], [-16, -16, 16, 16], [-h / 2, -w / 2, h / 2, w / 2]])
    torch.testing.assert_close(a, expected)
    assert a[0, 2].item() == pytest.approx(22.627, abs=1e-3)  # torchvision's rounding would give 23
    assert gen.num_anchors_per_location() == [3, 3]


@pytest.mark.parametrize("frac", [0.0, 0.3, 0.999])
def test_lsj_crop_uses_one_fraction_for_both_offsets(monkeypatch, frac):
    """detectron2's FixedSizeCrop: offset = round(max_offset * u) with one u for (top, left)."""
    img = torch.arange(100 * 200, dtype=torch.float32).view(1, 100, 200).expand(3, -1, -1)
    target = {"boxes": torch.tensor([[0.0, 0.0, 200.0, 100.0]]), "labels": torch.tensor([1]),
              "masks": torch.ones(1, 100, 200, dtype=torch.uint8)}
    draws = iter([0.9, frac])  # no flip, then the crop fraction
    monkeypatch.setattr(det.transforms.random, "random", lambda: next(draws))
    monkeypatch.setattr(det.transforms.random, "uniform", lambda a, b: 2.0)
    out, _ = LargeScaleJitter(image_size=64, min_scale=2.0, max_scale=2.0, flip=0.5)(img, target)
    # fits 2 x 64 = 128 px: scale min(128 / 100, 128 / 200) -> 64 x 128, then a 64 x 64 crop
    resized, _ = det.transforms.resize(img, None, 0.64)
    assert resized.shape[-2:] == (64, 128) and out.shape[-2:] == (64, 64)
    left = round(64 * frac)  # top has no slack; independent draws would not tie left to this fraction
    assert torch.equal(out, resized[:, :, left:left + 64])


def test_lsj_crop_offsets_share_the_fraction(monkeypatch):
    img = torch.rand(3, 300, 300)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "masks": torch.zeros(0, 300, 300, dtype=torch.uint8)}
    draws = iter([0.9, 1.0, 0.25])
    monkeypatch.setattr(det.transforms.random, "random", lambda: next(draws))
    monkeypatch.setattr(det.transforms.random, "uniform", lambda a, b: a + (b - a) * next(draws))
    out, _ = LargeScaleJitter(image_size=100, min_scale=1.0, max_scale=3.0, flip=0.5)(img, target)
    resized, _ = det.transforms.resize(img, None, 1.0)  # 3 x 100 = 300 px: the image as it is
    assert torch.equal(out, resized[:, 50:150, 50:150])  # both offsets round(200 * 0.25)


def test_head_init_option():
    cfg = load_config(DetConfig, None, TINY + ["model.head_init=torchvision"])
    torch.manual_seed(0)
    w = build_detector(cfg, num_classes=80).roi_heads.box_predictor.cls_score.weight
    assert w.std().item() > 0.02  # torchvision's default Linear init, not normal(0.01)
    with pytest.raises(ValueError, match="head_init"):
        build_detector(load_config(DetConfig, None, TINY + ["model.head_init=xavier"]), num_classes=3)
