"""ViTDet's simple feature pyramid: a multi-scale pyramid made from the ViT's last feature map alone.

Scales 4, 2, 1, 0.5 of the stride-16 map (strides 4, 8, 16, 32) by deconvolutions / identity / max
pooling, each followed by a 1x1 and a 3x3 conv with LayerNorm, plus p6 by stride-2 subsampling of
p5 (detectron2's LastLevelMaxPool).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d


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

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        outs = [stage(x) for stage in self.stages]
        if self.top_block:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return OrderedDict(zip(self.names, outs))
