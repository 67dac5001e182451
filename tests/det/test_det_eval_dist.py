"""Two-process COCO evaluation scores every validation image exactly once: DistributedSampler pads 5 images
to 6 over 2 ranks (image 0 twice), and rank 0 must drop the padded copy's detections before scoring."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from tiny import free_port, spawn_ranks

from det.evaluation import CocoEvaluator

N = 5  # odd: DistributedSampler pads to 6, so image 0 is inferred on both ranks
BOX = [4.0, 6.0, 10.0, 8.0]  # xywh of every image's one ground-truth object


def coco_gt() -> dict:
    return {"images": [{"id": i, "width": 32, "height": 32, "file_name": f"{i}.png"} for i in range(N)],
            "annotations": [{"id": i + 1, "image_id": i, "category_id": 7, "bbox": BOX, "area": BOX[2] * BOX[3],
                             "iscrowd": 0} for i in range(N)],
            "categories": [{"id": 7, "name": "thing"}]}


class Images(torch.utils.data.Dataset):
    """Image i carries its id in pixel (0, 0, 0), so the oracle below knows which image it sees."""

    def __len__(self):
        return N

    def __getitem__(self, i):
        img = torch.zeros(3, 32, 32)
        img[0, 0, 0] = i
        return img, {"image_id": i}


class Oracle(torch.nn.Module):
    """Finds the object on even images (two boxes: the right one and a shifted one), nothing on odd ones."""

    def forward(self, images):
        out = []
        for img in images:
            i = int(img[0, 0, 0])
            x, y, w, h = BOX
            if i % 2 == 0:
                boxes = torch.tensor([[x, y, x + w, y + h], [x + 8, y + 8, x + w + 8, y + h + 8]])
                out.append({"boxes": boxes, "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.9, 0.95])})
            else:
                out.append({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                            "scores": torch.zeros(0)})
        return out


def collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


def evaluate(rank: int, world: int) -> tuple[dict, list[dict]]:
    sampler = torch.utils.data.DistributedSampler(Images(), num_replicas=world, rank=rank, shuffle=False)
    loader = torch.utils.data.DataLoader(Images(), batch_size=2, sampler=sampler, collate_fn=collate)
    evaluator = CocoEvaluator(loader, coco_gt(), [7], torch.device("cpu"), rank, iou_types=("bbox",))
    metrics = evaluator(Oracle())
    return metrics, evaluator.last_results


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        metrics, results = evaluate(rank, world)
        torch.save({"metrics": metrics, "results": results}, f"{out}.{rank}")
        dist.barrier()  # both ranks done before teardown (gloo on torch 2.5 hangs otherwise)
    finally:
        dist.destroy_process_group()


def test_two_process_eval_scores_each_image_once(tmp_path):
    single_metrics, single_results = evaluate(0, 1)  # one process: no padding, nothing to drop
    assert len(single_results) == 2 * 3  # images 0, 2, 4: two detections each
    out = str(tmp_path / "result")
    spawn_ranks(_worker, 2, (2, free_port(), out), [f"{out}.{r}" for r in range(2)])
    ranks = [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]
    merged = ranks[0]["results"]
    assert sorted(r["image_id"] for r in merged) == [0, 0, 2, 2, 4, 4]  # image 0 once, not from both ranks
    for r in ranks:  # every rank reports rank 0's numbers, equal to the single process's
        m = {k: v for k, v in r["metrics"].items() if k != "eval_time_s"}
        assert m == pytest.approx({k: v for k, v in single_metrics.items() if k != "eval_time_s"}, nan_ok=True)
    assert 0 < single_metrics["bbox_AP"] < 100  # half the images missed, one false positive each: not trivial
