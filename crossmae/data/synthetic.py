"""Random images in place of a dataset (``data.path=synthetic``): the training loop's speed without file reads or
JPEG decoding, e.g. to tell a slow step from a slow loader (tools/gpu_check.py's loop section)."""
from __future__ import annotations

import torch
from PIL import Image


class SyntheticImages(torch.utils.data.Dataset):
    """``length`` uint8 images [3, size, size] of uniform noise, label 0, as the fast pipeline ships them (the
    step normalises uint8 on the device). Image ``i`` is the same on every read: seeded by (seed, i)."""

    root = "synthetic"

    def __init__(self, length: int, img_size: int, seed: int = 0):
        if length < 1:
            raise ValueError(f"a synthetic dataset needs >= 1 image, got {length}")
        self.length, self.img_size, self.seed = length, img_size, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return torch.randint(0, 256, (3, self.img_size, self.img_size), dtype=torch.uint8, generator=g), 0

    def readable_images(self, n: int) -> list[Image.Image]:
        """The first ``n`` images as PIL images (the pretraining figure's fixed batch reads these)."""
        return [Image.fromarray(self[i][0].permute(1, 2, 0).numpy()) for i in range(min(n, self.length))]
