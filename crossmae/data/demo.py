"""The embedded demo dataset: crops of the photographs bundled inside scikit-image, written as
an ImageFolder tree (one class per photograph), so the demo runs the same data code as ImageNet."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "colorwheel", "camera", "brick", "grass", "gravel", "moon", "coins", "clock", "horse")


def load_photo(name: str) -> np.ndarray:
    import skimage.data
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    if img.dtype != np.uint8:  # a few bundled images are bool or float
        img = (255 * (img.astype(np.float64) / max(img.max(), 1))).astype(np.uint8)
    return img


def make_demo_imagefolder(root: str | Path, crops_per_photo: int = 48, size: int = 64, seed: int = 0,
                          val_fraction: float = 0.25, photos=PHOTOS) -> Path:
    """Write ``<root>/{train,val}/<photo>/<i>.png`` random square crops; returns ``root``.

    Skips the work if the tree is already complete. Crops cover 15-50% of the shorter side, so
    each one shows a part of its photograph at a different scale and position."""
    root = Path(root)
    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    n_val = int(round(crops_per_photo * val_fraction))
    for name in photos:
        img = Image.fromarray(load_photo(name))
        w, h = img.size
        for i in range(crops_per_photo):
            side = int(rng.uniform(0.15, 0.5) * min(w, h))
            x, y = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
            crop = img.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC)
            split = "val" if i < n_val else "train"
            out = root / split / name / f"{i:03d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            crop.save(out)
    done.touch()
    return root
