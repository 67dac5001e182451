import math
import os

import pytest
import torch

from seg.metrics import SegMetric, intersect_and_union, summarize
from tiny import free_port, spawn_ranks

IGN = 255


def test_intersect_and_union_against_a_hand_computed_confusion_matrix():
    # 4 classes; class 3 appears nowhere, class 2 only in the prediction; two pixels ignored
    label = torch.tensor([[0, 0, 1, 1],
                          [0, 1, 1, IGN],
                          [0, 0, 1, IGN]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 1, 2, 3],    # the 3 lies on an ignored pixel: it must not count
                         [2, 0, 1, 0]])   # so does the 0 here
    # confusion over the 10 labelled pixels (rows = label, cols = pred):
    #   label 0 (5 px): pred 0 x3, 1 x1, 2 x1      label 1 (5 px): pred 1 x4, 2 x1
    inter, union, area_pred, area_label = intersect_and_union(pred, label, 4, IGN)
    assert inter.tolist() == [3, 4, 0, 0]
    assert area_pred.tolist() == [3, 5, 2, 0]
    assert area_label.tolist() == [5, 5, 0, 0]
    assert union.tolist() == [5, 6, 2, 0]

    res = summarize(torch.stack([inter, union, area_pred, area_label]))
    # IoU: 3/5, 4/6, 0/2 (predicted but absent: counts as 0), 0/0 (absent everywhere: left out)
    assert res["mIoU"] == pytest.approx(100 * (3 / 5 + 4 / 6 + 0) / 3)
    # Acc: 3/5, 4/5; classes 2 and 3 have no labelled pixels: left out
    assert res["mAcc"] == pytest.approx(100 * (3 / 5 + 4 / 5) / 2)
    assert res["aAcc"] == pytest.approx(100 * 7 / 10)
    assert res["per_class"]["3"] == {"IoU": None, "Acc": None}
    assert res["per_class"]["2"]["IoU"] == 0.0


def test_dataset_miou_sums_areas_over_images_before_dividing():
    m = SegMetric(2)
    # image 1: one pixel of class 1, missed; image 2: 99 pixels of class 1, all right
    m.update(torch.tensor([0, 0]), torch.tensor([0, 1]))
    m.update(torch.zeros(99, dtype=torch.long) + 1, torch.zeros(99, dtype=torch.long) + 1)
    res = m.compute()
    # class 0: I=1, U=2 -> 0.5 ; class 1: I=99, U=100 -> 0.99 (a per-image mean would give something else)
    assert res["mIoU"] == pytest.approx(100 * (0.5 + 0.99) / 2)
    assert res["num_images"] == 2


def test_label_outside_the_class_range_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        intersect_and_union(torch.tensor([0, 1]), torch.tensor([0, 7]), 4)
    with pytest.raises(ValueError, match="shape"):
        intersect_and_union(torch.zeros(2, 3), torch.zeros(3, 2), 4)


def test_no_labelled_pixel_gives_nan_not_a_crash():
    res = summarize(torch.zeros(4, 3, dtype=torch.float64))
    assert math.isnan(res["mIoU"]) and math.isnan(res["aAcc"])


def _reduce_worker(rank, world, port, preds, labels, out: str):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    m = SegMetric(3)
    for p, t in list(zip(preds, labels))[rank::world]:
        m.update(p, t)
    res = m.compute()
    dist.barrier()
    if rank == 0:  # written last: the caller takes it as "the ranks' work is done"
        torch.save((res["mIoU"], res["aAcc"], res["num_images"]), out)
    dist.destroy_process_group()


def test_areas_are_summed_over_processes(tmp_path):
    g = torch.Generator().manual_seed(0)
    preds = [torch.randint(0, 3, (5, 6), generator=g) for _ in range(5)]
    labels = [torch.randint(0, 3, (5, 6), generator=g) for _ in range(5)]
    labels[1][0] = IGN
    single = SegMetric(3)
    for p, t in zip(preds, labels):
        single.update(p, t)
    expected = single.compute()
    out = tmp_path / "reduced.pt"
    spawn_ranks(_reduce_worker, 2, (2, free_port(), preds, labels, str(out)), [out])
    miou, aacc, n = torch.load(out)
    assert n == 5
    assert miou == pytest.approx(expected["mIoU"]) and aacc == pytest.approx(expected["aAcc"])
