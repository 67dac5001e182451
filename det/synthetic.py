"""A synthetic COCO-format instance dataset: coloured shapes on textured backgrounds.

Writes a real ``annotations/instances_<split>.json`` and ``<split>/*.png`` under a root, the same
layout as COCO 2017, so the whole detection pipeline (pycocotools loading, LSJ, training, COCO
evaluation) runs on it unchanged. Three categories: rectangle, ellipse, triangle. Shapes do not
overlap, so every polygon is exactly the visible object.

    python -m det.synthetic /tmp/shapes --train 200 --val 50 --size 96
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = [{"id": 1, "name": "rectangle", "supercategory": "shape"},
              {"id": 2, "name": "ellipse", "supercategory": "shape"},
              {"id": 3, "name": "triangle", "supercategory": "shape"}]


def _background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """Smooth colour gradient + low-contrast stripes + pixel noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / max(h, w)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    period, angle = rng.uniform(4, 16), rng.uniform(0, math.pi)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    img += 12 * stripes[..., None] + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _polygon(rng: np.random.Generator, category: int, cx: float, cy: float, rx: float, ry: float) -> list:
    """Vertices [(x, y), ...] of a shape of the given category centred at (cx, cy)."""
    if category == 1:  # axis-aligned rectangle
        return [(cx - rx, cy - ry), (cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry)]
    if category == 2:  # ellipse as a 24-gon
        return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
    rot = rng.uniform(0, 2 * math.pi)  # triangle, randomly rotated
    return [(cx + rx * math.cos(rot + k * 2 * math.pi / 3), cy + ry * math.sin(rot + k * 2 * math.pi / 3))
            for k in range(3)]


def _shoelace(poly: list) -> float:
    x, y = np.array(poly).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def make_image(rng: np.random.Generator, h: int, w: int, max_objects: int = 4,
               min_size: float = 0.12, max_size: float = 0.35) -> tuple[Image.Image, list[dict]]:
    """One image and its annotations (category_id, bbox xywh, segmentation polygon, area)."""
    img = _background(rng, h, w)
    draw = ImageDraw.Draw(img)
    anns, taken = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):  # rejection-sample a free spot
            rx, ry = rng.uniform(min_size, max_size, 2) * min(h, w) / 2
            cx, cy = rng.uniform(rx + 1, w - rx - 1), rng.uniform(ry + 1, h - ry - 1)
            box = (cx - rx, cy - ry, cx + rx, cy + ry)
            if all(box[2] + 2 < t[0] or t[2] + 2 < box[0] or box[3] + 2 < t[1] or t[3] + 2 < box[1] for t in taken):
                break
        else:
            continue
        category = int(rng.integers(1, len(CATEGORIES) + 1))
        poly = _polygon(rng, category, cx, cy, rx, ry)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.polygon(poly, fill=colour, outline=tuple(max(0, v - 60) for v in colour))
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        x0, y0, x1, y1 = max(0.0, min(xs)), max(0.0, min(ys)), min(float(w), max(xs)), min(float(h), max(ys))
        taken.append((x0, y0, x1, y1))
        anns.append({"category_id": category, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": _shoelace(poly),
                     "segmentation": [[round(float(v), 2) for p in poly for v in p]], "iscrowd": 0})
    return img, anns


def make_split(root: str | Path, split: str, num_images: int, size: int | tuple[int, int] = 96, seed: int = 0,
               empty_every: int = 0, max_objects: int = 4) -> Path:
    """Write ``<root>/<split>/*.png`` and ``<root>/annotations/instances_<split>.json``; returns the JSON path.

    ``size``: an int for square images or (height, width). ``empty_every``: every n-th image has
    no objects (0 = none), to exercise images without annotations."""
    root = Path(root)
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        img, anns = make_image(rng, h, w, max_objects)
        if empty_every and i % empty_every == empty_every - 1:
            img, anns = _background(rng, h, w), []
        name = f"{i:06d}.png"
        img.save(root / split / name)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for a in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **a})
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def make_dataset(root: str | Path, num_train: int = 200, num_val: int = 50, size: int | tuple[int, int] = 96,
                 seed: int = 0) -> Path:
    """A train2017/val2017 pair in the COCO layout under ``root``."""
    make_split(root, "train2017", num_train, size, seed, empty_every=25)
    make_split(root, "val2017", num_val, size, seed + 1)
    return Path(root)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root")
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--val", type=int, default=50)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    make_dataset(a.root, a.train, a.val, a.size, a.seed)
    print(f"wrote {a.train} train and {a.val} val images to {a.root}")


if __name__ == "__main__":
    main()
