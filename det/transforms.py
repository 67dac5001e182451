"""ViTDet's training augmentation on (image, target) pairs of :class:`det.coco.CocoInstances`: large-scale
jitter (flip, resize by a random 0.1-2.0 of the target size, random crop to the target size; the detector's
transform pads to a square), with boxes and masks kept in step.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F


def hflip(img: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    w = img.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return img.flip(-1), target


def resize(img: torch.Tensor, target: dict | None, scale: float) -> tuple[torch.Tensor, dict | None]:
    """Resize by ``scale`` (output size rounded), boxes scaled, masks nearest-neighbour."""
    h, w = img.shape[-2:]
    nh, nw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)[0]
    if target is None:
        return img, None
    target = dict(target)
    if "boxes" in target:
        target["boxes"] = target["boxes"] * torch.tensor([nw / w, nh / h, nw / w, nh / h])
    if "masks" in target and target["masks"].shape[0]:
        target["masks"] = F.interpolate(target["masks"][None].float(), size=(nh, nw), mode="nearest")[0].byte()
    elif "masks" in target:
        target["masks"] = torch.zeros((0, nh, nw), dtype=torch.uint8)
    return img, target


def crop(img: torch.Tensor, target: dict, top: int, left: int, height: int, width: int) -> tuple[torch.Tensor, dict]:
    """Crop; boxes are recomputed from the cropped masks (tight, as detectron2's recompute_boxes) or
    clipped when there are no masks; instances left empty are dropped."""
    img = img[:, top:top + height, left:left + width]
    target = dict(target)
    h, w = img.shape[-2:]
    boxes = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)
    boxes[:, 0::2].clamp_(0, w)
    boxes[:, 1::2].clamp_(0, h)
    if "masks" in target:
        masks = target["masks"][:, top:top + height, left:left + width]
        target["masks"] = masks
        boxes = masks_to_boxes(masks)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    target["boxes"] = boxes[keep]
    target["labels"] = target["labels"][keep]
    if "masks" in target:
        target["masks"] = target["masks"][keep]
    return img, target


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W] -> xyxy [N, 4] covering the pixels (zeros for an empty mask)."""
    n = masks.shape[0]
    boxes = torch.zeros((n, 4), dtype=torch.float32)
    if n == 0:
        return boxes
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    for i in range(n):
        ys, xs = torch.where(rows[i])[0], torch.where(cols[i])[0]
        if len(ys):
            boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


class LargeScaleJitter:
    """ViTDet's training augmentation: horizontal flip, resize so the image fits ``scale`` x the
    target size for a random scale in [min_scale, max_scale], then a random crop of at most the
    target size (no padding here: the detector's transform pads to a square)."""

    def __init__(self, image_size: int = 1024, min_scale: float = 0.1, max_scale: float = 2.0, flip: float = 0.5):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.image_size, self.min_scale, self.max_scale, self.flip = image_size, min_scale, max_scale, flip

    def __call__(self, img: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        if random.random() < self.flip:
            img, target = hflip(img, target)
        h, w = img.shape[-2:]
        s = random.uniform(self.min_scale, self.max_scale) * self.image_size
        img, target = resize(img, target, min(s / h, s / w))
        h, w = img.shape[-2:]
        ch, cw = min(h, self.image_size), min(w, self.image_size)
        # detectron2's FixedSizeCrop: one random fraction of the slack for both offsets, rounded
        frac = random.random()
        top, left = round((h - ch) * frac), round((w - cw) * frac)
        if (ch, cw) != (h, w):
            img, target = crop(img, target, top, left, ch, cw)
        return img, target
