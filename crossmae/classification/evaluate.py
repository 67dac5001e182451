"""Top-1/top-5 evaluation where every validation image is counted exactly once, however many processes:
each rank reads its unpadded shard (:func:`crossmae.data.shards.build_eval_loader`) and the counts are
summed over ranks."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.shards import ShardSampler, build_eval_loader  # noqa: F401 (re-exported)
from ..engine.distributed import all_reduce_sum
from ..engine.logging import progress_bar
from ..engine.loop import autocast, resolve_precision


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
