"""What det/ and seg/ need from a backbone (detectron2's ``Backbone.output_shape()``, timm's ``feature_info``).

A dense backbone maps images [B, C, H, W] (H, W multiples of ``size_divisor``) to a list of feature maps,
the i-th [B, out_channels[i], H / out_strides[i], W / out_strides[i]], finest first. The necks and heads
are built from these numbers alone: one stride (a plain ViT) gets a simple pyramid made from its last map
(ViTDet's, seg's Feature2Pyramid); increasing strides (Hiera's stages) get torchvision's FPN (det) or go
to UperNet as they are (seg). Implemented by :class:`crossmae.models.dense_vit.DenseViT` and
:class:`crossmae.models.hiera.DenseHiera`.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

FAMILIES = ("vit", "hiera")  # the backbones a det / seg config chooses with model.family


@runtime_checkable
class DenseBackbone(Protocol):
    out_channels: list[int]  # channels of each returned map
    out_strides: list[int]  # input pixels per map pixel, non-decreasing
    size_divisor: int  # input sides must be multiples of this
    depth: int  # blocks, for layer-wise lr decay (block i has layer id i + 1)

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]: ...


def is_multiscale(backbone: DenseBackbone) -> bool:
    """True for a hierarchical backbone (several strides), False for a plain one (every map at one stride)."""
    return len(set(backbone.out_strides)) > 1
