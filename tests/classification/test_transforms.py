"""Transforms, mixup/cutmix targets, top-k counting, LARS."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from crossmae.classification.evaluate import topk_correct
from crossmae.classification.lars import LARS
from crossmae.classification.transforms import build_criterion, build_mixup, eval_transform, finetune_transform, linprobe_transform


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 1.0), (0.8, 0.0), (0.0, 1.0)])
def test_mixup_cutmix_targets_sum_to_one(mixup, cutmix):
    torch.manual_seed(0)
    mix = build_mixup(num_classes=10, mixup=mixup, cutmix=cutmix, smoothing=0.1)
    imgs, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    mixed_imgs, targets = mix(imgs.clone(), labels)
    assert targets.shape == (8, 10) and mixed_imgs.shape == imgs.shape
    assert torch.allclose(targets.sum(1), torch.ones(8))
    assert (targets > 0).sum(1).min() >= 2  # mixed pairs (and smoothing) spread the mass
    assert not torch.equal(mixed_imgs, imgs)
    assert isinstance(build_criterion(mix, 0.1), torch.nn.Module)


def test_no_mixup_when_both_off():
    assert build_mixup(10, mixup=0.0, cutmix=0.0) is None


def test_transforms_shapes():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    assert finetune_transform(32)(img).shape == (3, 32, 32)
    assert linprobe_transform(32)(img).shape == (3, 32, 32)
    tf = eval_transform(224)
    assert tf.transforms[0].size == 256  # 224 / 0.875
    assert tf(img).shape == (3, 224, 224)
    with pytest.raises(ValueError, match="crop_pct"):
        eval_transform(32, crop_pct=1.5)


def test_topk_correct():
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 2.0, 1.0], [0.0, 2.0, 1.0]])
    targets = torch.tensor([2, 2, 0])
    assert topk_correct(logits, targets, ks=(1, 2)) == [1, 1]
    assert topk_correct(logits, targets, ks=(1, 5)) == [1, 3]  # k capped at the number of classes


def test_lars_scales_matrix_updates_by_trust_ratio():
    w = torch.nn.Parameter(torch.full((4, 4), 2.0))  # ||w|| = 8
    b = torch.nn.Parameter(torch.zeros(4))
    opt = LARS([w, b], lr=1.0, weight_decay=0.0, momentum=0.0, trust_coefficient=0.001)
    w.grad = torch.full((4, 4), 100.0)  # ||g|| = 400
    b.grad = torch.full((4,), 0.5)
    opt.step()
    # update = lr * 0.001 * ||w|| / ||g|| * g = 0.001 * 8 / 400 * 100 = 0.002 per entry
    assert torch.allclose(w.detach(), torch.full((4, 4), 2.0 - 0.002))
    assert torch.allclose(b.detach(), torch.full((4,), -0.5))  # 1-d: plain SGD
    with pytest.raises(ValueError):
        LARS([w], lr=-1.0)


def test_randaugment_posterize_to_zero_bits_does_not_raise():
    """'inc1' RandAugment reaches 'keep 0 bits' at magnitude 10; current Pillow rejects that."""
    from timm.data.auto_augment import RandAugment
    tf = finetune_transform(32)
    ra = next(t for t in tf.transforms if isinstance(t, RandAugment))
    op = next(o for o in ra.ops if o.name == "PosterizeIncreasing")
    img = Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8))
    black = op.aug_fn(img, 0)
    assert np.asarray(black).max() == 0
    assert np.asarray(op.aug_fn(img, 2)).max() == 192
