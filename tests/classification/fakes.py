"""Tiny on-disk datasets for the classification tests: colour ImageFolders, iNat2019 and Places365 trees."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, color, size: int = 24, seed: int = 0) -> None:
    """A noisy image of a given mean colour (so classes are learnable from colour)."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(color, dtype=np.float64) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]


def make_colour_folder(root: Path, n_classes: int = 2, per_class: int = 8, splits=("train", "val")) -> Path:
    for split in splits:
        for c in range(n_classes):
            for i in range(per_class):
                write_image(root / split / f"class{c}" / f"{i}.png", COLORS[c], seed=hash((split, c, i)) % 2 ** 31)
    return root


INAT_SUPERS = ["Amphibians", "Birds", "Fungi", "Insects", "Plants", "Reptiles"]


def make_inat2019_tree(root: Path, images: dict[int, int], n_categories: int = 1010) -> Path:
    """iNat2019 as torchvision reads it: <root>/2019/<super>/<id>/*.jpg for ids 0..n-1 (empty folders
    except those in ``images``: {category id: images per split}), plus train2019.json / val2019.json in
    the competition's format (file names under train_val2019/)."""
    ann = {"train": {"images": [], "annotations": [], "categories": []},
           "val": {"images": [], "annotations": [], "categories": []}}
    image_id = 0
    for cat in range(n_categories):
        sup = INAT_SUPERS[cat * len(INAT_SUPERS) // n_categories]
        folder = root / "2019" / sup / str(cat)
        folder.mkdir(parents=True, exist_ok=True)
        for split in ("train", "val"):
            ann[split]["categories"].append({"id": cat, "name": f"species {cat}", "supercategory": sup})
            for i in range(images.get(cat, 0)):
                name = f"{split}{i:03d}.jpg"
                write_image(folder / name, COLORS[cat % len(COLORS)], size=20, seed=cat * 100 + i)
                ann[split]["images"].append({"id": image_id, "file_name": f"train_val2019/{sup}/{cat}/{name}",
                                             "width": 20, "height": 20})
                ann[split]["annotations"].append({"id": image_id, "image_id": image_id, "category_id": cat})
                image_id += 1
    for split, data in ann.items():
        (root / f"{split}2019.json").write_text(__import__("json").dumps(data))
    return root


def make_places365_tree(root: Path, images: dict[int, int], small: bool = True, archive_names: bool = False) -> Path:
    """Places365-standard as the devkit and archives lay it out: categories_places365.txt (365 lines
    '/x/name idx'), places365_train_standard.txt ('/x/name/0000001.jpg idx'), places365_val.txt
    ('Places365_val_00000001.jpg idx'), images under data_256_standard/ (torchvision's name; data_256/
    with archive_names) and val_256/."""
    size = "256" if small else "large"
    cats = [f"/{chr(ord('a') + i % 26)}/place{i:03d}" for i in range(365)]
    (root).mkdir(parents=True, exist_ok=True)
    (root / "categories_places365.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(cats)))
    train_dir = root / (f"data_{size}" if archive_names else f"data_{size}_standard")
    train_lines, val_lines, n_val = [], [], 0
    for cat, n in images.items():
        for i in range(n):
            rel = f"{cats[cat]}/{i + 1:08d}.jpg"
            write_image(train_dir / rel.lstrip("/"), COLORS[cat % len(COLORS)], size=20, seed=cat * 100 + i)
            train_lines.append(f"{rel} {cat}\n")
            n_val += 1
            name = f"Places365_val_{n_val:08d}.jpg"
            write_image(root / f"val_{size}" / name, COLORS[cat % len(COLORS)], size=20, seed=cat * 100 + 50 + i)
            val_lines.append(f"{name} {cat}\n")
    (root / "places365_train_standard.txt").write_text("".join(train_lines))
    (root / "places365_val.txt").write_text("".join(val_lines))
    return root
