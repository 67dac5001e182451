"""The simple feature pyramid of the BEiT/MAE segmentation recipe (mmseg's ``Feature2Pyramid``).

A plain ViT gives single-scale maps (stride = patch size) from several blocks; the neck turns the
i-th of them into the i-th pyramid level: x4 (two stride-2 transposed convs with BatchNorm + GELU
between them), x2 (one transposed conv), x1 (identity), x0.5 (2x2 max-pool). For patch 16 the
levels have strides 4, 8, 16, 32. Module names follow mmseg, so its checkpoints map one to one.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class Feature2Pyramid(nn.Module):
    def __init__(self, embed_dim: int, rescales=(4, 2, 1, 0.5)):
        super().__init__()
        self.rescales = tuple(float(r) for r in rescales)
        ops = []
        for r in self.rescales:
            if r == 4:
                self.upsample_4x = nn.Sequential(
                    nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
                    nn.BatchNorm2d(embed_dim),
                    nn.GELU(),
                    nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2))
                ops.append("upsample_4x")
            elif r == 2:
                self.upsample_2x = nn.Sequential(nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2))
                ops.append("upsample_2x")
            elif r == 1:
                self.identity = nn.Identity()
                ops.append("identity")
            elif r == 0.5:
                self.downsample_2x = nn.MaxPool2d(kernel_size=2, stride=2)
                ops.append("downsample_2x")
            elif r == 0.25:
                self.downsample_4x = nn.MaxPool2d(kernel_size=4, stride=4)
                ops.append("downsample_4x")
            else:
                raise ValueError(f"neck rescale {r} not supported (choose from 4, 2, 1, 0.5, 0.25)")
        if len(set(ops)) != len(ops):
            raise ValueError(f"neck rescales {list(rescales)} repeat a scale")
        self.ops = ops

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.ops):
            raise ValueError(f"the neck expects {len(self.ops)} feature maps (one per rescale {self.rescales}), "
                             f"got {len(feats)}")
        return [getattr(self, op)(x) for op, x in zip(self.ops, feats)]

    def strides(self, in_stride: int) -> list[float]:
        """Output stride of each level for backbone maps of this stride (the ViT's patch size)."""
        return [in_stride / r for r in self.rescales]
