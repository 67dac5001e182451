"""Classification transforms (MAE's recipes) and mixup/cutmix, through timm."""
from __future__ import annotations

import torch.nn as nn
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from timm.data.auto_augment import RandAugment
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torchvision import transforms

from ..data import IMAGENET_MEAN, IMAGENET_STD

BICUBIC = transforms.InterpolationMode.BICUBIC


def finetune_transform(img_size: int, auto_augment: str | None = "rand-m9-mstd0.5-inc1", color_jitter: float = 0.4,
                       reprob: float = 0.25, remode: str = "pixel", recount: int = 1):
    """RandomResizedCrop(0.08-1) + flip + RandAugment + random erasing (timm's ImageNet train transform)."""
    tf = create_transform(input_size=img_size, is_training=True, color_jitter=color_jitter,
                          auto_augment=auto_augment or None, interpolation="bicubic", re_prob=reprob,
                          re_mode=remode, re_count=recount, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    for t in getattr(tf, "transforms", []):
        if isinstance(t, RandAugment):
            for op in t.ops:
                if op.name.startswith("Posterize"):
                    op.aug_fn = posterize_keep_zero_ok
    return tf


def posterize_keep_zero_ok(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize, but keeping 0 bits gives a black image as it did with older Pillow; current
    Pillow raises for bits < 1, which 'inc1' RandAugment reaches at magnitude 10 (m9 + std 0.5)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep < 1:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def linprobe_transform(img_size: int):
    """MAE's linear-probe augmentation: RandomResizedCrop (bicubic) + flip only."""
    return transforms.Compose([
        transforms.RandomResizedCrop(img_size, interpolation=BICUBIC), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_crop_pct(img_size: int) -> float:
    """MAE's evaluation crop (util/datasets.py build_transform): 224/256 up to 224 px, 1.0 above
    (a 448 px model sees the whole image resized to 448)."""
    return 224 / 256 if img_size <= 224 else 1.0


def eval_transform(img_size: int, crop_pct: float | None = None):
    """Resize the short side to int(img_size / crop_pct) (256 for 224), centre-crop img_size;
    ``crop_pct=None`` is MAE's rule (:func:`eval_crop_pct`)."""
    if crop_pct is None:
        crop_pct = eval_crop_pct(img_size)
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return transforms.Compose([
        transforms.Resize(int(img_size / crop_pct), interpolation=BICUBIC), transforms.CenterCrop(img_size),
        transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def build_mixup(num_classes: int, mixup: float = 0.8, cutmix: float = 1.0, cutmix_minmax=None, prob: float = 1.0,
                switch_prob: float = 0.5, mode: str = "batch", smoothing: float = 0.1) -> Mixup | None:
    """timm's Mixup/CutMix (soft targets with label smoothing folded in), or None when both are off."""
    if mixup <= 0 and cutmix <= 0 and cutmix_minmax is None:
        return None
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, cutmix_minmax=cutmix_minmax, prob=prob,
                 switch_prob=switch_prob, mode=mode, label_smoothing=smoothing, num_classes=num_classes)


def build_criterion(mixup: Mixup | None, smoothing: float) -> nn.Module:
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss()
