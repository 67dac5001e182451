"""A small synthetic segmentation set in the ADE20K layout whose classes differ in shape, never in colour.

Each image is a recoloured crop of a real photograph (class 1, background) with a few shapes on it:
discs (2), rectangles (3) and triangles (4), at random sizes, stretches, rotations and positions, later
ones over earlier ones. Every region, background included, is filled from one distribution: a random
crop of a bundled photograph (scikit-image / scikit-learn), recoloured at random (``det.synthetic``'s
``photo_patch``, shared so that the two toy tasks see the same photographs). Colour and texture therefore
say nothing about the class (``colour_baseline`` measures it: near chance); only the region's outline does.
Annotation PNGs use ADE20K's coding: 0 = unlabelled (a thin ring around every disc, so the ignore path is
exercised), 1..4 = classes; with ``reduce_zero_label`` the model predicts 4 classes. Images are JPEGs of
varying size, as in ADE20K. ``make_unlabelled`` writes images of the same distribution without labels.
``colour_coded=True`` gives each shape class its own flat colour instead (the background stays a photograph):
a set that UperNet learns from scratch in a few hundred steps (the pipeline tests and ``data.path=synthetic``),
where colour alone solves the task.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from det.synthetic import CLASS_COLOURS, class_fill, colour_histograms, photo_patch, polygon_mask, shape_polygon

CLASS_NAMES = ("background", "disc", "rectangle", "triangle")
_SHAPE_POLYGON = {3: 1, 4: 3}  # ADE class -> det.synthetic's polygon category (rectangle, triangle)


def make_sample(h: int, w: int, rng: np.random.Generator, max_shapes: int = 3, min_size: float = 0.35,
                max_size: float = 0.7, colour_coded: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [h, w, 3], label uint8 [h, w] in ADE coding: 0 ignore, 1 background, 2.. shapes).
    ``min_size``/``max_size``: a shape's extent as a fraction of the shorter side."""
    img = photo_patch(rng, h, w)
    label = np.ones((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(1, max_shapes + 1)):
        cls = int(rng.integers(2, 5))
        r = rng.uniform(min_size, max_size) * min(h, w) / 2
        cy, cx = rng.uniform(0.15 * h, 0.85 * h), rng.uniform(0.15 * w, 0.85 * w)  # may leave the frame
        ring = None
        if cls == 2:
            dist = np.hypot(yy - cy, xx - cx)
            mask = dist <= r
            ring = (dist > r) & (dist <= r + 1.5)
        else:
            mask = polygon_mask(shape_polygon(rng, _SHAPE_POLYGON[cls], cx, cy, r, r * rng.uniform(0.6, 1.0)), h, w)
        img[mask] = class_fill(rng, h, w, CLASS_COLOURS[cls - 2] if colour_coded else None)[mask]
        label[mask] = cls
        if ring is not None:
            label[ring] = 0
    return img.astype(np.uint8), label


def make_synthetic_ade20k(root: str | Path, num_train: int = 160, num_val: int = 40, size_range=(48, 96),
                          seed: int = 0, colour_coded: bool = False) -> Path:
    """Write ``<root>/images/{training,validation}/*.jpg`` and ``<root>/annotations/.../*.png``;
    returns ``root``. Skips the work if the tree is already complete. ``colour_coded``: see the module doc."""
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
            img, label = make_sample(h, w, rng, colour_coded=colour_coded)
            name = f"{prefix}_{i + 1:08d}"
            Image.fromarray(img).save(root / "images" / split / f"{name}.jpg", quality=95)
            Image.fromarray(label).save(root / "annotations" / split / f"{name}.png")
    done.touch()
    return root


def make_unlabelled(folder: str | Path, num_images: int, size_range=(64, 96), seed: int = 0) -> Path:
    """``<folder>/<i>.jpg``: images of the same distribution, without labels (a pretraining pool)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
        Image.fromarray(make_sample(h, w, rng)[0]).save(folder / f"{i:06d}.jpg", quality=95)
    return folder


def _regions(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(colour histogram of each class's pixels in each image, the class) of one split."""
    feats, labels = [], []
    for ann in sorted((root / "annotations" / split).glob("*.png")):
        label = np.asarray(Image.open(ann))
        image = np.asarray(Image.open(root / "images" / split / f"{ann.stem}.jpg").convert("RGB"))
        classes = [c for c in range(1, len(CLASS_NAMES) + 1) if (label == c).sum() >= 16]
        feats.append(colour_histograms(image, [label == c for c in classes]))
        labels += classes
    return np.concatenate(feats), np.array(labels)


def colour_baseline(root: str | Path) -> dict:
    """How well colour alone tells the classes apart: logistic regression on the colour histogram of each
    class region (every class's pixels in an image), fitted on training, scored on validation.
    {"accuracy", "chance"} in percent (chance: the most frequent validation class)."""
    from sklearn.linear_model import LogisticRegression
    root = Path(root)
    x_train, y_train = _regions(root, "training")
    x_val, y_val = _regions(root, "validation")
    clf = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return {"accuracy": 100.0 * float((clf.predict(x_val) == y_val).mean()),
            "chance": 100.0 * float(np.bincount(y_val).max() / len(y_val)), "regions": int(len(y_val))}
