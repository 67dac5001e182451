"""A synthetic COCO-format instance dataset whose classes differ in shape, never in colour.

Every object (rectangle, ellipse, triangle; randomly sized, stretched and rotated) is cut out of a
real photograph (the ones bundled in scikit-image and scikit-learn), recoloured at random (hue rotation,
channel permutation, tint, brightness, contrast) and pasted on another recoloured photograph. Fills and
backgrounds of every class come from one distribution, so colour and texture say nothing about the class
(``colour_baseline`` measures it: near chance) and only the outline does: a backbone has to learn shape.

Writes a real ``annotations/instances_<split>.json`` and ``<split>/*.png`` under a root, the same layout
as COCO 2017, so the whole detection pipeline (pycocotools loading, LSJ, training, COCO evaluation) runs
on it unchanged. Objects do not overlap, so every polygon is exactly the visible object.
``make_unlabelled`` writes images of the same distribution without annotations (a pretraining pool).
``colour_coded=True`` gives each class its own flat colour instead: a set that a detector learns from scratch
in a few hundred steps (the pipeline tests and ``data.root=synthetic``), where colour alone solves the task.

    python -m det.synthetic /tmp/shapes --train 200 --val 50 --size 96
"""
from __future__ import annotations

import argparse
import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = [{"id": 1, "name": "rectangle", "supercategory": "shape"},
              {"id": 2, "name": "ellipse", "supercategory": "shape"},
              {"id": 3, "name": "triangle", "supercategory": "shape"}]
CLASS_COLOURS = np.array([[200, 60, 50], [60, 160, 70], [60, 80, 200]], dtype=np.float64)  # colour_coded only
# photographs bundled in scikit-image (and scikit-learn's two sample images): textures of every kind; not
# coins or clock, whose round objects would be unlabelled ellipses
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "camera", "brick", "grass", "gravel", "moon", "cat", "cell")


@lru_cache(maxsize=1)
def photos() -> tuple[np.ndarray, ...]:
    """The bundled photographs as uint8 RGB arrays (greyscale ones stacked to 3 channels)."""
    import skimage.data
    from sklearn.datasets import load_sample_images
    out = []
    for name in SKIMAGE_PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())
        img = np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3]
        out.append(img.astype(np.uint8))
    return tuple(out) + tuple(np.asarray(i, dtype=np.uint8) for i in load_sample_images().images)


def recolour(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random recolouring of float RGB [..., 3] in 0-255: hue rotation about the grey axis, channel
    permutation, a tint (greyscale photos get colour too), then brightness and contrast."""
    a = rng.uniform(0, 2 * math.pi)
    k = np.full((3, 3), 1 / 3)
    cross = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)
    hue = math.cos(a) * np.eye(3) + (1 - math.cos(a)) * k + math.sin(a) * cross  # Rodrigues about (1,1,1)
    out = rgb @ hue.T
    out = out[..., rng.permutation(3)] * rng.uniform(0.5, 1.5, 3)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.6, 1.4) + mean * rng.uniform(0.6, 1.4)
    return np.clip(out, 0, 255)


def photo_patch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop (5-60% of the shorter side) of a random bundled photograph, resized to [h, w, 3],
    randomly flipped and recoloured: float RGB in 0-255."""
    src = photos()[int(rng.integers(len(photos())))]
    side = rng.uniform(0.05, 0.6) * min(src.shape[:2])
    ch, cw = max(2, int(side * h / max(h, w))), max(2, int(side * w / max(h, w)))
    y, x = int(rng.integers(0, src.shape[0] - ch + 1)), int(rng.integers(0, src.shape[1] - cw + 1))
    crop = Image.fromarray(src[y:y + ch, x:x + cw]).resize((w, h), Image.BILINEAR)
    arr = np.asarray(crop, dtype=np.float64)
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    return recolour(arr, rng)


def shape_polygon(rng: np.random.Generator, category: int, cx: float, cy: float, rx: float, ry: float) -> list:
    """Vertices [(x, y), ...] of a shape of the given category centred at (cx, cy), semi-axes (rx, ry),
    rotated at random (a rectangle, an ellipse as a 32-gon, an isosceles triangle)."""
    if category == 1:
        pts = [(-rx, -ry), (rx, -ry), (rx, ry), (-rx, ry)]
    elif category == 2:
        pts = [(rx * math.cos(t), ry * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 32, endpoint=False)]
    else:
        pts = [(0.0, -ry), (rx, ry), (-rx, ry)]
    rot = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _shoelace(poly: list) -> float:
    x, y = np.array(poly).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def polygon_mask(poly: list, h: int, w: int) -> np.ndarray:
    m = Image.new("L", (w, h), 0)
    ImageDraw.Draw(m).polygon(poly, fill=1)
    return np.asarray(m, dtype=bool)


def class_fill(rng: np.random.Generator, h: int, w: int, colour: np.ndarray | None) -> np.ndarray:
    """[h, w, 3] float fill of one region: a recoloured photo patch, or (``colour`` given: colour_coded sets)
    that colour, jittered per region, with a little pixel noise."""
    if colour is None:
        return photo_patch(rng, h, w)
    return np.clip(colour + rng.uniform(-30, 30, 3) + rng.normal(0, 6, (h, w, 3)), 0, 255)


def make_image(rng: np.random.Generator, h: int, w: int, max_objects: int = 3, min_size: float = 0.3,
               max_size: float = 0.6, colour_coded: bool = False) -> tuple[Image.Image, list[dict]]:
    """One image and its annotations (category_id, bbox xywh, segmentation polygon, area).
    ``min_size``/``max_size``: the shape's extent as a fraction of the shorter side."""
    img = photo_patch(rng, h, w)
    anns, taken = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        category = int(rng.integers(1, len(CATEGORIES) + 1))  # before placing: balanced classes
        for _attempt in range(20):  # rejection-sample a spot whose rotated shape is inside and free
            r = rng.uniform(min_size, max_size) * min(h, w) / 2
            aspect = rng.uniform(0.6, 1.0)
            poly = shape_polygon(rng, category, rng.uniform(0, w), rng.uniform(0, h), r, r * aspect)
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
            box = (min(xs), min(ys), max(xs), max(ys))
            inside = box[0] >= 1 and box[1] >= 1 and box[2] <= w - 1 and box[3] <= h - 1
            if inside and all(box[2] + 2 < t[0] or t[2] + 2 < box[0] or box[3] + 2 < t[1] or t[3] + 2 < box[1]
                              for t in taken):
                break
        else:
            continue
        mask = polygon_mask(poly, h, w)
        img[mask] = class_fill(rng, h, w, CLASS_COLOURS[category - 1] if colour_coded else None)[mask]
        taken.append(box)
        anns.append({"category_id": category, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                     "area": _shoelace(poly), "segmentation": [[round(float(v), 2) for p in poly for v in p]],
                     "iscrowd": 0})
    return Image.fromarray(img.astype(np.uint8)), anns


def make_split(root: str | Path, split: str, num_images: int, size: int | tuple[int, int] = 96, seed: int = 0,
               empty_every: int = 0, max_objects: int = 3, colour_coded: bool = False) -> Path:
    """Write ``<root>/<split>/*.png`` and ``<root>/annotations/instances_<split>.json``; returns the JSON path.

    ``size``: an int for square images or (height, width). ``empty_every``: every n-th image has
    no objects (0 = none), to exercise images without annotations. ``colour_coded``: see the module doc."""
    root = Path(root)
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        img, anns = make_image(rng, h, w, max_objects, colour_coded=colour_coded)
        if empty_every and i % empty_every == empty_every - 1:
            img, anns = Image.fromarray(photo_patch(rng, h, w).astype(np.uint8)), []
        name = f"{i:06d}.png"
        img.save(root / split / name)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for a in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **a})
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def make_unlabelled(folder: str | Path, num_images: int, size: int = 64, seed: int = 0,
                    max_objects: int = 3) -> Path:
    """``<folder>/<i>.png``: images of the same distribution, without annotations (a pretraining pool)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        make_image(rng, size, size, max_objects)[0].save(folder / f"{i:06d}.png")
    return folder


def make_dataset(root: str | Path, num_train: int = 200, num_val: int = 50, size: int | tuple[int, int] = 96,
                 seed: int = 0, colour_coded: bool = False) -> Path:
    """A train2017/val2017 pair in the COCO layout under ``root``."""
    make_split(root, "train2017", num_train, size, seed, empty_every=25, colour_coded=colour_coded)
    make_split(root, "val2017", num_val, size, seed + 1, colour_coded=colour_coded)
    return Path(root)


def colour_histograms(image: np.ndarray, masks: list[np.ndarray], bins: int = 8) -> np.ndarray:
    """One normalised joint RGB histogram (bins**3 values) of the pixels under each mask: [len(masks), bins**3]."""
    q = (image[..., :3].astype(np.int64) * bins // 256) @ np.array([bins * bins, bins, 1])
    rows = [np.bincount(q[m], minlength=bins ** 3) / max(int(m.sum()), 1) for m in masks]
    return np.array(rows, dtype=np.float64).reshape(len(masks), bins ** 3)


def _instances(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(colour histogram of every instance's pixels, its category id) of one split."""
    data = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    feats, labels = [], []
    for im in data["images"]:
        anns = by_image.get(im["id"], [])
        if not anns:
            continue
        image = np.asarray(Image.open(root / split / im["file_name"]).convert("RGB"))
        masks = [polygon_mask(list(zip(a["segmentation"][0][::2], a["segmentation"][0][1::2])),
                               im["height"], im["width"]) for a in anns]
        feats.append(colour_histograms(image, masks))
        labels += [a["category_id"] for a in anns]
    return np.concatenate(feats), np.array(labels)


def colour_baseline(root: str | Path, train_split: str = "train2017", val_split: str = "val2017") -> dict:
    """How well colour alone tells the classes apart: logistic regression on each instance's colour
    histogram, fitted on ``train_split``, scored on ``val_split``. {"accuracy", "chance"} in percent
    (chance: the most frequent val class)."""
    from sklearn.linear_model import LogisticRegression
    root = Path(root)
    x_train, y_train = _instances(root, train_split)
    x_val, y_val = _instances(root, val_split)
    clf = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return {"accuracy": 100.0 * float((clf.predict(x_val) == y_val).mean()),
            "chance": 100.0 * float(np.bincount(y_val).max() / len(y_val)), "instances": int(len(y_val))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root")
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--val", type=int, default=50)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--colour-coded", action="store_true", help="one flat colour per class (an easy set)")
    a = p.parse_args(argv)
    make_dataset(a.root, a.train, a.val, a.size, a.seed, a.colour_coded)
    print(f"wrote {a.train} train and {a.val} val images to {a.root}")
    score = colour_baseline(a.root)
    print(f"colour-histogram classifier: {score['accuracy']:.1f}% on {score['instances']} val instances "
          f"(most frequent class {score['chance']:.1f}%)")


if __name__ == "__main__":
    main()
