"""Semantic-segmentation metrics, computed the way mmsegmentation computes them.

Per image, :func:`intersect_and_union` gives four per-class pixel counts (intersection, union,
prediction area, label area) over the pixels whose label is not ``ignore_index``. The counts are
summed over the whole dataset (and over processes) and only then turned into ratios by
:func:`summarize`: IoU_c = I_c / U_c, Acc_c = I_c / label_c, aAcc = sum I / sum label, and the
means are nan-means, i.e. over the classes whose denominator is non-zero. A class that never
appears in the labels but is predicted somewhere has U_c > 0 and IoU_c = 0: it counts, as in mmseg.
"""
from __future__ import annotations

import math

import torch

from crossmae.engine.distributed import all_reduce_sum


def intersect_and_union(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                        ignore_index: int = 255) -> torch.Tensor:
    """pred, label: integer maps of the same shape. Returns [4, num_classes] float64:
    (area_intersect, area_union, area_pred, area_label)."""
    if pred.shape != label.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
    keep = label != ignore_index
    pred, label = pred[keep].long(), label[keep].long()
    bad = (label < 0) | (label >= num_classes)
    if bad.any():
        raise ValueError(f"label values {sorted(set(label[bad].unique().tolist()))[:5]} outside [0, {num_classes}) "
                         f"and not the ignore index {ignore_index}")
    if ((pred < 0) | (pred >= num_classes)).any():
        raise ValueError(f"predictions outside [0, {num_classes})")
    inter = torch.bincount(label[pred == label], minlength=num_classes)
    area_pred = torch.bincount(pred, minlength=num_classes)
    area_label = torch.bincount(label, minlength=num_classes)
    union = area_pred + area_label - inter
    return torch.stack([inter, union, area_pred, area_label]).double()


class SegMetric:
    """Accumulates :func:`intersect_and_union` counts; ``compute()`` reduces them over processes."""

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: list[str] | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = class_names
        self.areas = torch.zeros(4, num_classes, dtype=torch.float64)
        self.num_images = 0

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        self.areas += intersect_and_union(pred.cpu(), label.cpu(), self.num_classes, self.ignore_index)
        self.num_images += 1

    def compute(self, device: torch.device | str = "cpu") -> dict:
        """Sum over processes (``device``: where the collective runs, cuda for NCCL), then summarize."""
        packed = torch.cat([self.areas.flatten(), torch.tensor([float(self.num_images)], dtype=torch.float64)])
        packed = all_reduce_sum(packed.to(device)).cpu()
        areas = packed[:-1].view(4, self.num_classes)
        out = summarize(areas, self.class_names)
        out["num_images"] = int(packed[-1])
        return out


def summarize(areas: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """[4, C] summed counts -> {"mIoU", "mAcc", "aAcc" (percent), "per_class": {name: {"IoU", "Acc"}}}.
    Per-class values are nan (JSON null after :func:`finite_or_none`) for classes without a denominator."""
    inter, union, _, area_label = areas.double()
    iou = inter / union  # 0/0 -> nan for classes that neither appear nor are predicted
    acc = inter / area_label
    total = area_label.sum()
    names = class_names or [str(i) for i in range(areas.shape[1])]
    return {
        "mIoU": 100 * _nanmean(iou),
        "mAcc": 100 * _nanmean(acc),
        "aAcc": 100 * float(inter.sum() / total) if total > 0 else math.nan,
        "per_class": {n: {"IoU": finite_or_none(100 * float(i)), "Acc": finite_or_none(100 * float(a))}
                      for n, i, a in zip(names, iou, acc)},
    }


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else math.nan


def finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None
