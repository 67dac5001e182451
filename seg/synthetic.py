"""A small synthetic segmentation set in the ADE20K layout, for tests and the CPU demo.

Each image is a textured background (class 1) with a few shapes on it: discs (2), rectangles (3)
and triangles (4), each class with its own colour family and stripe texture, at random sizes and
positions. Annotation PNGs use ADE20K's coding: 0 = unlabelled (a thin ring around every disc, so
the ignore path is exercised), 1..4 = classes; with ``reduce_zero_label`` the model predicts 4
classes. Images are JPEGs of varying size, as in ADE20K.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ("background", "disc", "rectangle", "triangle")
# base RGB colour per class (background first); each image jitters it
_COLOURS = np.array([[120, 110, 95], [200, 60, 50], [60, 160, 70], [60, 80, 200]], dtype=np.float64)


def _texture(h: int, w: int, rng: np.random.Generator, freq: float) -> np.ndarray:
    """Stripes at a random angle plus pixel noise, in [-1, 1]-ish: [h, w]."""
    yy, xx = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0, np.pi)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    return 0.6 * stripes + 0.4 * rng.standard_normal((h, w))


def _paint(img: np.ndarray, mask: np.ndarray, cls: int, rng: np.random.Generator, freq: float) -> None:
    colour = _COLOURS[cls] + rng.uniform(-30, 30, 3)
    tex = _texture(*mask.shape, rng, freq)[..., None]
    img[mask] = (colour + 35 * tex)[mask]


def make_sample(h: int, w: int, rng: np.random.Generator, max_shapes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [h, w, 3], label uint8 [h, w] in ADE coding: 0 ignore, 1 background, 2.. shapes)."""
    img = np.zeros((h, w, 3))
    label = np.ones((h, w), dtype=np.uint8)
    _paint(img, np.ones((h, w), bool), 0, rng, freq=rng.uniform(0.2, 0.4))
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(1, max_shapes + 1)):
        cls = int(rng.integers(1, 4))  # 1 disc, 2 rectangle, 3 triangle (model classes)
        size = rng.uniform(0.2, 0.45) * min(h, w)
        cy, cx = rng.uniform(size / 2, h - size / 2), rng.uniform(size / 2, w - size / 2)
        ring = None
        if cls == 1:
            r = np.hypot(yy - cy, xx - cx)
            mask = r <= size / 2
            ring = (r > size / 2) & (r <= size / 2 + 1.5)
        elif cls == 2:
            ah = rng.uniform(0.6, 1.4)
            mask = (np.abs(yy - cy) <= size / 2 * ah) & (np.abs(xx - cx) <= size / 2 / ah)
        else:
            size = 1.4 * size  # a triangle covers half its box: enlarged to keep the classes balanced
            top = cy - size / 2
            t = (yy - top) / size  # 0 at the apex, 1 at the base
            mask = (t >= 0) & (t <= 1) & (np.abs(xx - cx) <= t * size / 2)
        _paint(img, mask, cls, rng, freq=rng.uniform(0.6, 1.2))
        label[mask] = cls + 1
        if ring is not None:
            label[ring & ~mask] = 0
    return np.clip(img, 0, 255).astype(np.uint8), label


def make_synthetic_ade20k(root: str | Path, num_train: int = 160, num_val: int = 40, size_range=(48, 96),
                          seed: int = 0) -> Path:
    """Write ``<root>/images/{training,validation}/*.jpg`` and ``<root>/annotations/.../*.png``;
    returns ``root``. Skips the work if the tree is already complete."""
    root = Path(root)
    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    for split, n, prefix in (("training", num_train, "ADE_train"), ("validation", num_val, "ADE_val")):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
            img, label = make_sample(h, w, rng)
            name = f"{prefix}_{i + 1:08d}"
            Image.fromarray(img).save(root / "images" / split / f"{name}.jpg", quality=95)
            Image.fromarray(label).save(root / "annotations" / split / f"{name}.png")
    done.touch()
    return root
