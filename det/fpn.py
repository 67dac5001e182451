"""The detector's pyramid, chosen by the backbone's strides (crossmae.models.dense): levels p{log2 stride}.

* One stride (a plain ViT): ViTDet's simple feature pyramid, made from the last feature map alone: scales
  4, 2, 1, 0.5 of the stride-16 map (strides 4, 8, 16, 32) by deconvolutions / identity / max pooling,
  each followed by a 1x1 and a 3x3 conv with LayerNorm.
* Increasing strides (Hiera's stages): torchvision's FeaturePyramidNetwork, one level per map.

Both add one level by stride-2 subsampling of the coarsest (detectron2's / torchvision's LastLevelMaxPool),
for the RPN only.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


def _stage(in_dim: int, scale: float) -> tuple[nn.Module, int]:
    """The resampling part of one pyramid level and its output width."""
    if scale == 4.0:
        return nn.Sequential(nn.ConvTranspose2d(in_dim, in_dim // 2, 2, stride=2), LayerNorm2d(in_dim // 2), nn.GELU(),
                             nn.ConvTranspose2d(in_dim // 2, in_dim // 4, 2, stride=2)), in_dim // 4
    if scale == 2.0:
        return nn.ConvTranspose2d(in_dim, in_dim // 2, 2, stride=2), in_dim // 2
    if scale == 1.0:
        return nn.Identity(), in_dim
    if scale == 0.5:
        return nn.MaxPool2d(2, stride=2), in_dim
    raise ValueError(f"unsupported pyramid scale {scale}; use 4, 2, 1 or 0.5")


class SimpleFeaturePyramid(nn.Module):
    """[N, in_dim, H/s, W/s] -> OrderedDict p{log2 stride}: [N, out_channels, ...] for each scale, + p6.

    ``in_stride`` is the stride of the input map (the ViT's patch size)."""

    def __init__(self, in_dim: int, in_stride: int, out_channels: int = 256,
                 scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5), top_block: bool = True):
        super().__init__()
        self.strides = [int(in_stride / s) for s in scale_factors]
        self.names = [f"p{int(math.log2(s))}" for s in self.strides]
        self.stages = nn.ModuleList()
        for s in scale_factors:
            resample, dim = _stage(in_dim, float(s))
            self.stages.append(nn.Sequential(
                resample,
                nn.Conv2d(dim, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels)))
        self.top_block = top_block
        if top_block:
            self.strides.append(self.strides[-1] * 2)
            self.names.append(f"p{int(math.log2(self.strides[-1]))}")
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
        if isinstance(x, (list, tuple)):  # a backbone's maps: the pyramid is made from the last one
            x = x[-1]
        outs = [stage(x) for stage in self.stages]
        if self.top_block:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return OrderedDict(zip(self.names, outs))


def _level_name(stride: int) -> str:
    return f"p{int(math.log2(stride))}"


class MultiScalePyramid(nn.Module):
    """torchvision's FPN over a hierarchical backbone's maps (strides doubling, e.g. 4, 8, 16, 32) + the
    max-pool level: OrderedDict p{log2 stride}: [N, out_channels, ...]."""

    def __init__(self, in_channels: list[int], in_strides: list[int], out_channels: int = 256):
        super().__init__()
        if in_strides[0] & (in_strides[0] - 1) or any(b != 2 * a for a, b in zip(in_strides, in_strides[1:])):
            raise ValueError(f"an FPN needs backbone strides that are powers of two, each double the last; got "
                             f"{list(in_strides)} (Hiera: q_pool = number of stages - 1)")
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=LastLevelMaxPool())
        self.strides = list(in_strides) + [in_strides[-1] * 2]
        self.names = [_level_name(s) for s in self.strides]
        self.top_block = True
        self.out_channels = out_channels

    def forward(self, feats: list[torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
        outs = self.fpn(OrderedDict(zip(self.names, feats)))
        return OrderedDict(zip(self.names, outs.values()))


def build_pyramid(in_channels: list[int], in_strides: list[int], out_channels: int = 256) -> nn.Module:
    """The pyramid for a backbone of these map channels and strides (module docstring)."""
    if len(set(in_strides)) == 1:
        return SimpleFeaturePyramid(in_channels[-1], in_strides[-1], out_channels)
    return MultiScalePyramid(in_channels, in_strides, out_channels)
