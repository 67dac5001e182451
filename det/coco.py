"""COCO instance data: ``instances_{train,val}2017.json`` + image folders, read with pycocotools.

Samples are the original images with their targets; training sets pass a transform (large-scale jitter,
:mod:`det.transforms`), evaluation sets none (the detector's transform resizes the longest side and maps
predictions back).

The annotation file is checked when it is opened: malformed JSON, missing sections or a category id
that is not in ``categories`` are errors naming the file and the annotation. Every annotation's
content is then checked as COCOeval and the mask decoder will read it (bbox, area and iscrowd types,
every polygon's point count and coordinates, RLE sizes): in an evaluation set a malformed annotation is
an error naming the file and the annotation id, before anything trains; a training set drops it with a
count and a warning (``bad_annotations="skip"``). Degenerate boxes, boxes lying entirely outside their
image (by its ``width``/``height``) and annotations without a usable mask are skipped, and the counts
are logged. Every listed image is checked against the disk when the dataset is built: by default a
missing one is an error listing the first few (evaluation must see every annotated image, or AP would
silently drop); the training set skips them with a count and a warning (``missing_images="skip"``).
An evaluation set also reads every image's header then (no decode; ~5000 files for COCO val) and
compares its size with the file's ``width``/``height``; a training set skips a mismatched image when it
reads it. Images are decoded by :func:`crossmae.data.image.load_rgb`; an unreadable one stops
evaluation naming the file, and is skipped (logged, counted) in training (``skip_unreadable``), as the
other datasets of the toolkit do (:mod:`crossmae.data.skipping`).
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision.transforms.functional import pil_to_tensor

from crossmae.data.image import UNREADABLE, ImageReadError, header_sizes, load_rgb
from crossmae.data.skipping import CountsSkips, first_readable
from crossmae.errors import WorkerSafe
from crossmae.userfiles import parse_json

logger = logging.getLogger("crossmae")


class AnnotationError(WorkerSafe, ValueError):
    pass


def read_coco(ann_file: str | Path) -> dict:
    """A COCO instances file's content, checked for the structure every use needs (sections, keys, image
    sizes, category and image ids): anything wrong is an :class:`AnnotationError` naming the problem."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"annotation file not found: {ann_file}")
    try:
        data = parse_json(ann_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # bad JSON, or nested deeper than any COCO file
        raise AnnotationError(f"{ann_file} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise AnnotationError(f"{ann_file}: expected a JSON object with images/annotations/categories")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise AnnotationError(f"{ann_file}: missing or non-list section(s) {missing} (a COCO instances file "
                              f"has 'images', 'annotations' and 'categories')")
    for section, keys in (("images", ("id", "file_name", "height", "width")), ("categories", ("id", "name")),
                          ("annotations", ("id", "image_id", "category_id", "bbox"))):
        for entry in data[section]:
            absent = [k for k in keys if k not in entry] if isinstance(entry, dict) else list(keys)
            if absent:
                raise AnnotationError(f"{ann_file}: an entry of '{section}' lacks {absent}: {str(entry)[:200]}")
    for im in data["images"]:
        if not all(isinstance(im[k], int) and not isinstance(im[k], bool) and im[k] > 0 for k in ("height", "width")):
            raise AnnotationError(f"{ann_file}: image {im['id']} ({im['file_name']}) has height/width "
                                  f"{im['height']!r}/{im['width']!r}; expected positive integers")
    cat_ids = {c["id"] for c in data["categories"]}
    img_ids = {im["id"] for im in data["images"]}
    for a in data["annotations"]:
        if a["category_id"] not in cat_ids:
            raise AnnotationError(f"{ann_file}: annotation {a['id']} has category_id {a['category_id']}, which is "
                                  f"not among the categories {sorted(cat_ids)}")
        if a["image_id"] not in img_ids:
            raise AnnotationError(f"{ann_file}: annotation {a['id']} refers to image_id {a['image_id']}, "
                                  f"which is not in 'images'")
    return data


def check_annotations(data: dict, ann_file: str | Path, bad_annotations: str = "error") -> int:
    """Check every annotation's content as COCOeval and the mask decoder will read it (:func:`annotation_problem`).
    A malformed one is an :class:`AnnotationError` naming the file and the annotation (``"error"``: an
    evaluation set, whose ground truth must be read as it is), or is dropped from ``data`` with a warning
    (``"skip"``: training); returns how many were dropped. Fills in COCOeval's optional ``iscrowd``/``area``."""
    if bad_annotations not in ("error", "skip"):
        raise ValueError(f"bad_annotations must be 'error' or 'skip', got {bad_annotations!r}")
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    kept, dropped = [], []
    for a in data["annotations"]:
        problem = annotation_problem(a, sizes[a["image_id"]])
        if problem:
            what = f"{ann_file}: annotation {a['id']} (image {a['image_id']}): {problem}"
            if bad_annotations == "error":
                raise AnnotationError(what)
            dropped.append(what)
            continue
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
        kept.append(a)
    if dropped:
        logger.warning("skipping %d malformed annotations, e.g. %s", len(dropped), dropped[0])
        data["annotations"] = kept
    return len(dropped)


def index_coco(data: dict) -> COCO:
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def load_coco(ann_file: str | Path, bad_annotations: str = "error") -> COCO:
    """Open and validate a COCO instances file (:func:`read_coco`, :func:`check_annotations`)."""
    data = read_coco(ann_file)
    check_annotations(data, ann_file, bad_annotations)
    return index_coco(data)


def _finite_numbers(values: list) -> bool:
    """Only ints and floats (not bools, strings or nulls), all finite: one C-level pass each, as COCO
    has ~35M polygon coordinates."""
    try:
        return {type(v) for v in values} <= {int, float} and math.isfinite(sum(values))
    except OverflowError:  # an integer beyond float range
        return False


def annotation_problem(a: dict, hw: tuple[int, int]) -> str:
    """What COCOeval or the mask decoder would fail on (or misread) in an annotation; '' when fine."""
    if not (isinstance(a["bbox"], list) and len(a["bbox"]) == 4 and _finite_numbers(a["bbox"])):
        return f"bbox {a['bbox']!r}: expected 4 finite numbers [x, y, w, h]"
    if "area" in a and not _finite_numbers([a["area"]]):
        return f"area {a['area']!r}: expected a finite number"
    if a.get("iscrowd", 0) not in (0, 1):
        return f"iscrowd {a['iscrowd']!r}: expected 0 or 1"
    return _segmentation_problem(a.get("segmentation"), hw)


def _segmentation_problem(seg, hw: tuple[int, int]) -> str:
    """What is wrong with a segmentation entry ('' when fine or absent): polygons (a list of coordinate
    lists, each of at least 3 points) or RLE (a dict with 'counts' and 'size' equal to the image's
    [height, width]; uncompressed counts must add up to its pixels)."""
    if seg is None or seg == []:
        return ""
    if isinstance(seg, list):
        for i, poly in enumerate(seg):
            problem = _polygon_problem(poly)
            if problem:
                return f"polygon {i} {problem}"
        return ""
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return f"RLE segmentation lacks 'counts' or 'size' (has {sorted(seg)})"
        if not isinstance(seg["size"], list) or list(seg["size"]) != list(hw):
            return f"RLE size {seg['size']} differs from the image's [height, width] {list(hw)}"
        counts = seg["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                return "uncompressed RLE counts must be non-negative integers"
            if sum(counts) != hw[0] * hw[1]:
                return f"uncompressed RLE counts add up to {sum(counts)} pixels, not {hw[0]} x {hw[1]}"
        elif not isinstance(counts, str):
            return f"RLE counts must be a string (compressed) or a list (uncompressed), not {type(counts).__name__}"
        return ""
    return f"unknown segmentation format {type(seg).__name__}"


def _polygon_problem(poly) -> str:
    if not isinstance(poly, list):
        return "is not a list: polygon segmentation must be a list of [x1, y1, x2, y2, ...] number lists"
    if len(poly) % 2:
        return f"has an odd number ({len(poly)}) of coordinates"
    if len(poly) < 6:
        return f"has {len(poly) // 2} points ({len(poly)} coordinates); a polygon needs 3"
    return "" if _finite_numbers(poly) else "has a non-numeric or non-finite coordinate"


def decode_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Polygons, uncompressed RLE or compressed RLE -> uint8 [height, width]."""
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))  # checked: >= 3 points each
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = segmentation
    else:
        raise AnnotationError(f"unknown segmentation format {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(np.uint8)


class CocoInstances(CountsSkips, torch.utils.data.Dataset):
    """(image, target) pairs. ``image``: float [3, H, W] in 0-1 (RGB). ``target``: ``boxes`` [N, 4] xyxy,
    ``labels`` [N] (1..K, contiguous), ``masks`` [N, H, W] uint8 (when ``with_masks``), ``image_id``.

    Crowd annotations are dropped (torchvision's Mask R-CNN has no ignore regions; neither does
    detectron2's training). ``filter_empty`` drops images with no usable annotation (training);
    evaluation keeps every image.

    ``bad_annotations``: ``"error"`` (evaluation, the default) makes a malformed annotation
    (:func:`annotation_problem`) an error when the dataset is built, and reads every image's header then
    to compare its size with the file's ``width``/``height``; ``"skip"`` (training) drops malformed
    annotations (counted in ``skipped["malformed"]``) and skips an image whose size differs when it is
    read (logged, counted in ``num_skipped()``) instead of reading every header up front.
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, transform=None, with_masks: bool = True,
                 filter_empty: bool = False, with_targets: bool = True, missing_images: str = "error",
                 skip_unreadable: bool = False, bad_annotations: str = "error"):
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image directory not found: {self.image_dir}")
        self.ann_file = Path(ann_file)
        data = read_coco(ann_file)
        malformed = check_annotations(data, ann_file, bad_annotations)
        self.coco = index_coco(data)
        self.bad_annotations = bad_annotations
        self.transform = transform
        self.with_masks = with_masks
        self.with_targets = with_targets
        self.cat_ids = sorted(self.coco.getCatIds())
        self.label_of = {c: i + 1 for i, c in enumerate(self.cat_ids)}  # 0 is background
        self.num_classes = len(self.cat_ids)
        self.skipped = {"malformed": malformed, "crowd": 0, "degenerate_box": 0, "box_outside_image": 0, "no_mask": 0}
        self.skip_unreadable = skip_unreadable
        self._init_skips()
        on_disk = self._on_disk(missing_images)
        self.anns: dict[int, list[dict]] = {}
        for img_id in sorted(self.coco.imgs):
            self.anns[img_id] = [a for a in self.coco.imgToAnns.get(img_id, []) if self._usable(a)]
        self.ids = [i for i in sorted(self.coco.imgs) if (self.anns[i] or not filter_empty) and i in on_disk]
        n_empty = sum(not v for v in self.anns.values())
        if any(self.skipped.values()) or (n_empty and filter_empty):
            logger.info("%s: skipped annotations %s; %d images without usable annotations %s", self.ann_file,
                        self.skipped, n_empty, "dropped" if filter_empty else "kept")
        if not self.ids:
            raise AnnotationError(f"{self.ann_file}: no images left (with filter_empty={filter_empty})")
        if bad_annotations == "error":
            self._check_image_sizes()

    def _check_image_sizes(self) -> None:
        """Every image's header against the file's width/height (threaded header reads, no decode): the
        first mismatch (or unreadable header, unless ``skip_unreadable``) is an error, with the count."""
        paths = [self.image_dir / self.coco.imgs[i]["file_name"] for i in self.ids]
        wrong, unreadable = [], []
        for img_id, path, size in zip(self.ids, paths, header_sizes(paths)):
            info = self.coco.imgs[img_id]
            if isinstance(size, BaseException):
                unreadable.append((img_id, path, size))
            elif size != (info["width"], info["height"]):
                wrong.append(self._size_mismatch(path, size, img_id))
        if unreadable and not self.skip_unreadable:  # else skipped (logged, counted) when read
            img_id, path, e = unreadable[0]
            raise ImageReadError.of(path, e, f"(image_id {img_id}; {len(unreadable)} of {len(paths)} unreadable)")
        if wrong:
            raise AnnotationError(f"{wrong[0]}; {len(wrong)} of {len(paths)} images differ")

    def _size_mismatch(self, path: Path, wh: tuple[int, int], img_id: int) -> str:
        info = self.coco.imgs[img_id]
        return (f"{path} is {wh[0]}x{wh[1]} (WxH) but {self.ann_file} says {info['width']}x{info['height']} "
                f"(image {img_id})")

    def _on_disk(self, missing_images: str) -> set:
        """Ids of the listed images found in ``image_dir`` (one directory listing, not a stat per file);
        missing ones are an error naming the first few, or skipped with a warning (``"skip"``)."""
        if missing_images not in ("error", "skip"):
            raise ValueError(f"missing_images must be 'error' or 'skip', got {missing_images!r}")
        names = set(os.listdir(self.image_dir))
        missing = [i for i, info in sorted(self.coco.imgs.items())
                   if not (info["file_name"] in names or (self.image_dir / info["file_name"]).is_file())]
        if missing:
            example = ", ".join(str(self.coco.imgs[i]["file_name"]) for i in missing[:3])
            what = (f"{len(missing)} of {len(self.coco.imgs)} images listed in {self.ann_file} are not in "
                    f"{self.image_dir} (e.g. {example})")
            if missing_images == "error" or len(missing) == len(self.coco.imgs):
                raise FileNotFoundError(what)
            logger.warning("%s: skipping them", what)
        self.missing = len(missing)
        return set(self.coco.imgs) - set(missing)

    def _usable(self, a: dict) -> bool:
        if a.get("iscrowd", 0):
            self.skipped["crowd"] += 1
            return False
        x, y, w, h = (float(v) for v in a["bbox"])
        if not (w > 1e-3 and h > 1e-3 and all(np.isfinite([x, y, w, h]))):
            self.skipped["degenerate_box"] += 1
            return False
        info = self.coco.imgs[a["image_id"]]
        if min(x + w, info["width"]) - max(x, 0.0) <= 1e-3 or min(y + h, info["height"]) - max(y, 0.0) <= 1e-3:
            self.skipped["box_outside_image"] += 1  # nothing left after clipping to the image
            return False
        if self.with_masks and not a.get("segmentation"):
            self.skipped["no_mask"] += 1
            return False
        return True

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, img_id: int) -> torch.Tensor:
        info = self.coco.imgs[img_id]
        path = self.image_dir / info["file_name"]
        try:
            img = pil_to_tensor(load_rgb(path))
        except UNREADABLE as e:
            raise ImageReadError.of(path, e, f"(image_id {img_id})") from e
        if tuple(img.shape[1:]) != (info["height"], info["width"]):
            raise AnnotationError(self._size_mismatch(path, (img.shape[2], img.shape[1]), img_id))
        return img.float().div_(255)

    def target(self, img_id: int) -> dict:
        info = self.coco.imgs[img_id]
        h, w = info["height"], info["width"]
        anns = self.anns[img_id]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(0, w)
        boxes[:, 1::2].clamp_(0, h)
        target = {"boxes": boxes, "labels": torch.tensor([self.label_of[a["category_id"]] for a in anns],
                                                          dtype=torch.int64), "image_id": img_id}
        if self.with_masks:
            masks = [decode_mask(a["segmentation"], h, w) for a in anns]
            target["masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
        return target

    def __getitem__(self, index: int):
        def unreadable(i: int, e: Exception) -> None:
            self.skip(e, self.skip_unreadable if isinstance(e, ImageReadError) else self.bad_annotations == "skip")

        img, img_id = first_readable(lambda i: (self.load_image(self.ids[i]), self.ids[i]), index, len(self.ids),
                                     unreadable, self.image_dir, errors=(ImageReadError, AnnotationError))
        target = self.target(img_id) if self.with_targets else {"image_id": img_id}
        if self.transform is not None:
            img, target = self.transform(img, target)
        return img, target


def collate(batch):
    """Lists of images and targets: images keep their own sizes (the detector pads them)."""
    return tuple(list(x) for x in zip(*batch))

