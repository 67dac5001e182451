"""COCO evaluation: result conversion and box/mask AP with pycocotools (and faster-coco-eval if installed)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from det.coco import CocoInstances
from det.evaluation import coco_metrics, to_coco_results


def _perfect_outputs(ds, shift: float = 0.0, score_noise: bool = False):
    """torchvision-style predictions made from the ground truth (boxes shifted by ``shift`` px)."""
    results = []
    for i in range(len(ds)):
        img_id = ds.ids[i]
        t = ds.target(img_id)
        n = len(t["boxes"])
        out = {"boxes": t["boxes"] + shift, "labels": t["labels"], "scores": torch.linspace(1.0, 0.5, n),
               "masks": t["masks"][:, None].float().roll(int(shift), dims=-1)}
        results.extend(to_coco_results(out, img_id, ds.cat_ids))
    return results


@pytest.fixture(scope="module")
def val_set(synthetic_coco):
    return CocoInstances(synthetic_coco / "val2017", synthetic_coco / "annotations/instances_val2017.json")


def test_to_coco_results_format(val_set):
    img_id = val_set.ids[0]
    t = val_set.target(img_id)
    out = {"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["boxes"])),
           "masks": t["masks"][:, None].float()}
    res = to_coco_results(out, img_id, val_set.cat_ids)
    assert len(res) == len(t["boxes"]) and json.dumps(res)  # JSON-serialisable (RLE counts as str)
    x0, y0, x1, y1 = t["boxes"][0].tolist()
    assert res[0]["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=1e-3)
    assert res[0]["category_id"] == val_set.cat_ids[int(t["labels"][0]) - 1]
    assert to_coco_results({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)},
                           img_id, val_set.cat_ids) == []


def test_perfect_predictions_score_100_and_shifted_ones_less(val_set):
    gt = val_set.coco.dataset
    perfect = coco_metrics(gt, _perfect_outputs(val_set))
    for k in ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75"):
        assert perfect[k] == pytest.approx(100.0, abs=0.01), k
    assert set(perfect) == {f"{t}_{n}" for t in ("bbox", "segm") for n in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    assert math.isnan(perfect["bbox_APl"])  # no large (> 96^2 px) objects in 64 px images: NaN, as detectron2
    shifted = coco_metrics(gt, _perfect_outputs(val_set, shift=1.0))
    assert 5 < shifted["bbox_AP"] < 90 and 5 < shifted["segm_AP"] < 90
    # every box moved right by a fifth of its width: IoU = 0.8 w h / (1.2 w h) = 2/3, a hit at IoU 0.5, a miss at 0.75
    moved = []
    for r in _perfect_outputs(val_set):
        x, y, w, h = r["bbox"]
        moved.append({**r, "bbox": [x + w / 5, y, w, h]})
    moved = coco_metrics(gt, moved, iou_types=("bbox",))
    assert moved["bbox_AP50"] == pytest.approx(100.0, abs=0.01) and moved["bbox_AP75"] == pytest.approx(0.0, abs=0.01)


def test_no_predictions_give_zero(val_set, caplog):
    m = coco_metrics(val_set.coco.dataset, [])
    assert m["bbox_AP"] == 0.0 and m["segm_AP"] == 0.0
    assert "no bbox predictions" in caplog.text


def test_unknown_backend_is_an_error(val_set):
    with pytest.raises(ValueError, match="eval backend must be"):
        coco_metrics(val_set.coco.dataset, [], backend="detectron2")


def test_faster_coco_eval_gives_the_same_numbers(val_set):
    pytest.importorskip("faster_coco_eval")
    results = _perfect_outputs(val_set, shift=2.0)
    a = coco_metrics(val_set.coco.dataset, results, backend="pycocotools")
    b = coco_metrics(val_set.coco.dataset, results, backend="faster_coco_eval")
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], abs=1e-6), k
