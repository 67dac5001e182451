"""Test-time inference: whole-image or sliding-window logits, optional multi-scale + flip.

Sliding window follows mmseg's ``slide_inference``: windows of ``crop`` pixels every ``stride``
pixels (the last row/column of windows moved back to end at the border), logits of overlapping
windows averaged. A window larger than the image is cut to the image, then zero-padded to
``crop`` (the normalised-image padding used in training) so the backbone always sees the size it
was trained at; its logits are cut back. Windows are run ``crop_batch`` at a time.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .transforms import rescale_size, scaled_size

Logits = Callable[[torch.Tensor], torch.Tensor]  # [B, 3, h, w] -> [B, K, h, w]


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis (mmseg's grid)."""
    n = max(length - crop + stride - 1, 0) // stride + 1
    return sorted({max(min(i * stride + crop, length) - crop, 0) for i in range(n)})


def pad_to_multiple(img: torch.Tensor, size: Sequence[int] | None = None, divisor: int = 1) -> torch.Tensor:
    """Zero-pad bottom/right to at least ``size`` and to a multiple of ``divisor``."""
    h, w = img.shape[-2:]
    th, tw = (max(h, size[0]), max(w, size[1])) if size is not None else (h, w)
    th, tw = -(-th // divisor) * divisor, -(-tw // divisor) * divisor
    if (th, tw) == (h, w):
        return img
    return F.pad(img, (0, tw - w, 0, th - h))


@torch.no_grad()
def whole_inference(logits_fn: Logits, img: torch.Tensor, num_classes: int, size_divisor: int = 1) -> torch.Tensor:
    h, w = img.shape[-2:]
    out = logits_fn(pad_to_multiple(img, None, size_divisor))
    return out[..., :h, :w]


@torch.no_grad()
def slide_inference(logits_fn: Logits, img: torch.Tensor, num_classes: int, crop: int, stride: int,
                    crop_batch: int = 8) -> torch.Tensor:
    """img [B, 3, H, W] -> averaged logits [B, num_classes, H, W] (float32)."""
    if stride < 1 or stride > crop:
        raise ValueError(f"sliding-window stride must be in [1, crop={crop}], got {stride}")
    b, _, h, w = img.shape
    boxes = [(y, x, min(y + crop, h), min(x + crop, w))
             for y in window_starts(h, crop, stride) for x in window_starts(w, crop, stride)]
    out = img.new_zeros((b, num_classes, h, w), dtype=torch.float32)
    count = img.new_zeros((1, 1, h, w), dtype=torch.float32)
    for i in range(0, len(boxes), crop_batch):
        chunk = boxes[i:i + crop_batch]
        crops = torch.cat([pad_to_multiple(img[:, :, y1:y2, x1:x2], (crop, crop)) for y1, x1, y2, x2 in chunk])
        logits = logits_fn(crops).float()
        for j, (y1, x1, y2, x2) in enumerate(chunk):
            out[:, :, y1:y2, x1:x2] += logits[j * b:(j + 1) * b, :, :y2 - y1, :x2 - x1]
            count[:, :, y1:y2, x1:x2] += 1
    return out / count


@torch.no_grad()
def inference(logits_fn: Logits, img: torch.Tensor, num_classes: int, out_size: Sequence[int],
              scale: Sequence[int] = (2048, 512), ratios: Sequence[float] = (1.0,), flip: bool = False,
              mode: str = "slide", crop: int = 512, stride: int = 341, crop_batch: int = 8,
              size_divisor: int = 1) -> torch.Tensor:
    """Class scores [B, num_classes, *out_size] for a normalised image at its original size.

    For each ratio the image is resized (keep ratio) to ``scale`` x ratio; with ``flip`` each scale
    also runs mirrored. One pass: logits resized to ``out_size``. Several passes: their softmax
    probabilities averaged (mmseg 0.x's aug_test, which the MAE/BEiT results used)."""
    if mode not in ("slide", "whole"):
        raise ValueError(f"test mode must be 'slide' or 'whole', got {mode!r}")
    h, w = img.shape[-2:]
    passes = [(r, f) for r in ratios for f in ((False, True) if flip else (False,))]
    total = None
    for ratio, fl in passes:
        size = scaled_size(h, w, tuple(scale), ratio) if ratio != 1.0 else rescale_size(h, w, tuple(scale))
        x = img if tuple(size) == (h, w) else F.interpolate(img, size=size, mode="bilinear", align_corners=False)
        if fl:
            x = x.flip(-1)
        if mode == "slide":
            logits = slide_inference(logits_fn, x, num_classes, crop, stride, crop_batch)
        else:
            logits = whole_inference(logits_fn, x, num_classes, size_divisor).float()
        if fl:
            logits = logits.flip(-1)
        logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)
        if len(passes) == 1:
            return logits
        probs = logits.softmax(1)
        total = probs if total is None else total + probs
    return total / len(passes)
