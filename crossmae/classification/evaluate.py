"""Top-1/top-5 evaluation where every validation image is counted exactly once, however many processes.

torch's DistributedSampler pads the index list so all ranks get equal shares, which counts a few
images twice; here rank r takes indices r, r + world, r + 2*world, ... (no padding), and the counts
are summed over ranks."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.distributed import all_reduce_sum
from ..engine.logging import progress_bar
from ..engine.loop import autocast, resolve_precision


class ShardSampler(torch.utils.data.Sampler):
    """Indices rank, rank + world_size, ... of a dataset: disjoint shards covering it once, unpadded."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_eval_loader(dataset, batch_size: int, num_workers: int, rank: int, world_size: int,
                      pin_memory: bool = False):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                       sampler=ShardSampler(len(dataset), rank, world_size), num_workers=num_workers,
                                       pin_memory=pin_memory, drop_last=False)


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of samples whose target is among the k highest logits, per k (k capped at num classes)."""
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hit = pred.eq(targets[:, None])
    return [int(hit[:, :min(k, kmax)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, precision: str = "auto",
             expected: int | None = None, desc: str = "eval") -> dict[str, float]:
    """{"top1", "top5" (percent), "loss" (mean cross-entropy), "num_samples"} over all processes.
    ``expected`` (the dataset size) turns a miscount into an error instead of a wrong number."""
    was_training = model.training
    model.eval()
    precision = resolve_precision(precision, device)
    sums = torch.zeros(4, dtype=torch.float64)  # top1, top5, loss sum, count
    for imgs, targets in progress_bar(loader, desc=desc,
                                      disable=torch.distributed.is_initialized() and torch.distributed.get_rank() != 0):
        imgs, targets = imgs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast(precision, device):
            logits = model(imgs)
        logits = logits.float()
        c1, c5 = topk_correct(logits, targets)
        sums += torch.tensor([c1, c5, float(F.cross_entropy(logits, targets, reduction="sum")), len(targets)],
                             dtype=torch.float64)
    model.train(was_training)
    sums = all_reduce_sum(sums.to(device if device.type == "cuda" else "cpu")).cpu()
    n = int(sums[3])
    if expected is not None and n != expected:
        raise RuntimeError(f"evaluation counted {n} images, the dataset has {expected}")
    if n == 0:
        return {"top1": math.nan, "top5": math.nan, "loss": math.nan, "num_samples": 0}
    return {"top1": float(100 * sums[0] / n), "top5": float(100 * sums[1] / n), "loss": float(sums[2] / n),
            "num_samples": n}
