"""COCO data: loading, mask formats, crowd/empty handling, large-scale jitter, bad annotation files."""
from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from det.coco import AnnotationError, CocoInstances, collate, decode_mask, load_coco
from det.transforms import LargeScaleJitter, hflip
from det.synthetic import CATEGORIES


def _write(tmp_path, data, name="instances_val2017.json"):
    (tmp_path / "val2017").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _tiny_set(tmp_path, annotations, categories=None):
    (tmp_path / "val2017").mkdir(exist_ok=True)
    Image.new("RGB", (40, 30), (90, 120, 30)).save(tmp_path / "val2017" / "a.png")
    data = {"images": [{"id": 7, "file_name": "a.png", "height": 30, "width": 40}], "annotations": annotations,
            "categories": categories or [{"id": 5, "name": "thing"}, {"id": 9, "name": "other"}]}
    return _write(tmp_path, data)


def test_synthetic_set_is_consistent(synthetic_coco):
    ds = CocoInstances(synthetic_coco / "train2017", synthetic_coco / "annotations/instances_train2017.json")
    assert ds.num_classes == len(CATEGORIES) == 3
    n_objects = 0
    for i in range(10):
        img, t = ds[i]
        assert img.shape == (3, 64, 64) and 0 <= img.min() and img.max() <= 1
        assert t["masks"].shape == (len(t["boxes"]), 64, 64) and t["labels"].min() >= 1
        for box, m in zip(t["boxes"], t["masks"]):
            ys, xs = torch.where(m > 0)
            # the polygon fills its box: rasterised extent within ~1.5 px of the annotated box
            assert abs(xs.min() - box[0]) <= 1.5 and abs(xs.max() + 1 - box[2]) <= 1.5
            assert abs(ys.min() - box[1]) <= 1.5 and abs(ys.max() + 1 - box[3]) <= 1.5
        n_objects += len(t["boxes"])
    assert n_objects >= 10


def test_empty_images_dropped_for_training_kept_for_eval(synthetic_coco, caplog):
    ann = synthetic_coco / "annotations/instances_train2017.json"
    n_images = len(json.loads(ann.read_text())["images"])
    with caplog.at_level(logging.INFO, logger="crossmae"):
        train = CocoInstances(synthetic_coco / "train2017", ann, filter_empty=True)
    full = CocoInstances(synthetic_coco / "train2017", ann, filter_empty=False)
    assert len(full) == n_images and len(train) == n_images - n_images // 20  # every 20th image is empty
    assert "8 images without usable annotations dropped" in caplog.text
    empty = next(i for i in range(len(full)) if not full.anns[full.ids[i]])
    img, t = full[empty]
    assert t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 64, 64)


def test_mask_formats_agree(tmp_path):
    poly = [[5, 5, 30, 5, 30, 20, 5, 20]]
    m_poly = decode_mask(poly, 30, 40)
    rle = mask_utils.encode(np.asfortranarray(m_poly))
    m_rle = decode_mask({"size": rle["size"], "counts": rle["counts"].decode()}, 30, 40)
    # uncompressed RLE (counts as a list), the form COCO uses for crowd regions
    flat = m_poly.flatten(order="F")
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], change])).tolist()
    m_unc = decode_mask({"size": [30, 40], "counts": counts}, 30, 40)
    assert m_poly.sum() == 25 * 15
    np.testing.assert_array_equal(m_poly, m_rle)
    np.testing.assert_array_equal(m_poly, m_unc)


def test_crowd_and_degenerate_boxes_are_skipped_and_counted(tmp_path, caplog):
    seg = [[2, 2, 20, 2, 20, 12, 2, 12]]
    anns = [{"id": 1, "image_id": 7, "category_id": 5, "bbox": [2, 2, 18, 10], "segmentation": seg},
            {"id": 2, "image_id": 7, "category_id": 9, "bbox": [2, 2, 18, 10], "segmentation": seg, "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 5, "bbox": [4, 4, 0, 10], "segmentation": seg},
            {"id": 4, "image_id": 7, "category_id": 5, "bbox": [4, 4, 10, -3], "segmentation": seg}]
    with caplog.at_level(logging.INFO, logger="crossmae"):
        ds = CocoInstances(tmp_path / "val2017", _tiny_set(tmp_path, anns))
    assert ds.skipped == {"malformed": 0, "crowd": 1, "degenerate_box": 2, "box_outside_image": 0, "no_mask": 0}
    assert "'degenerate_box': 2" in caplog.text
    _, t = ds[0]
    assert t["boxes"].tolist() == [[2.0, 2.0, 20.0, 12.0]]
    assert t["labels"].tolist() == [1]  # category 5 -> contiguous label 1 (9 -> 2)


def test_malformed_annotation_file(tmp_path):
    with pytest.raises(AnnotationError, match="instances_val2017.json is not valid JSON"):
        load_coco(_write(tmp_path, '{"images": [1, 2'))
    with pytest.raises(AnnotationError, match=r"missing or non-list section\(s\) \['categories'\]"):
        load_coco(_write(tmp_path, {"images": [], "annotations": []}))
    with pytest.raises(AnnotationError, match="lacks \\['bbox'\\]"):
        load_coco(_write(tmp_path, {"images": [{"id": 1, "file_name": "a", "height": 1, "width": 1}],
                                    "annotations": [{"id": 3, "image_id": 1, "category_id": 1}],
                                    "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        load_coco(tmp_path / "nope.json")


def test_unknown_category_id_is_an_error(tmp_path):
    anns = [{"id": 11, "image_id": 7, "category_id": 4, "bbox": [2, 2, 10, 10],
             "segmentation": [[2, 2, 12, 2, 12, 12]]}]
    with pytest.raises(AnnotationError,
                       match=r"annotation 11 has category_id 4, which is not among the categories \[5, 9\]"):
        CocoInstances(tmp_path / "val2017", _tiny_set(tmp_path, anns))


def test_image_size_mismatch_is_an_error(tmp_path):
    path = _tiny_set(tmp_path, [])
    data = json.loads(path.read_text())
    data["images"][0]["width"] = 41
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"a.png is 40x30 \(WxH\) but .* says 41x30"):  # when built
        CocoInstances(tmp_path / "val2017", path)


def test_hflip_boxes_and_masks():
    img = torch.zeros(3, 10, 20)
    masks = torch.zeros(1, 10, 20, dtype=torch.uint8)
    masks[0, 2:5, 1:4] = 1
    img2, t = hflip(img, {"boxes": torch.tensor([[1.0, 2.0, 4.0, 5.0]]), "masks": masks, "labels": torch.tensor([1])})
    assert t["boxes"].tolist() == [[16.0, 2.0, 19.0, 5.0]]
    ys, xs = torch.where(t["masks"][0] > 0)
    assert (xs.min().item(), xs.max().item() + 1) == (16, 19)


def test_large_scale_jitter_keeps_boxes_and_masks_together(synthetic_coco):
    random.seed(0)
    lsj = LargeScaleJitter(image_size=48, min_scale=0.3, max_scale=2.0)
    ds = CocoInstances(synthetic_coco / "train2017", synthetic_coco / "annotations/instances_train2017.json",
                       transform=lsj, filter_empty=True)
    sizes, cropped = set(), 0
    for i in range(24):
        img, t = ds[i]
        h, w = img.shape[-2:]
        sizes.add((h, w))
        assert h <= 48 and w <= 48
        assert t["masks"].shape[1:] == (h, w) and len(t["masks"]) == len(t["boxes"]) == len(t["labels"])
        for box, m in zip(t["boxes"], t["masks"]):
            ys, xs = torch.where(m > 0)
            assert len(xs), "an instance left without pixels must be dropped"
            extent = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            if (h, w) == (48, 48):  # cropped: boxes recomputed from the masks, tight
                assert box.tolist() == extent.tolist()
            else:  # only resized: the scaled annotation, within the rasterisation error of the nearest resize
                assert (box - extent).abs().max() <= 2.5
        cropped += (h, w) == (48, 48)
    assert len(sizes) > 5 and cropped > 0  # scales vary; large ones get cropped
    images, targets = collate([ds[0], ds[1]])
    assert isinstance(images, list) and len(targets) == 2
