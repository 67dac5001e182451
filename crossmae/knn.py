"""kNN top-1 of a frozen encoder's features (DINO's monitor): a cheap, training-free read of how
linearly separable / clustered the pretrained features are, during pretraining or after it.

Memory bank: features of a fixed subset of ``<data>/train``; queries: a fixed subset of ``<data>/val``.
Each query's k nearest memory features by cosine similarity vote for their labels with weight
exp(similarity / T) (k=20, T=0.07 as in DINO). The cost is feature extraction only: every rank embeds a
disjoint shard of each subset (no duplicates, no padding), the memory shards are gathered, and the correct
counts are summed.

    crossmae knn --checkpoint output/demo/checkpoint.pth --data output/demo/demo_data
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .classification.transforms import eval_transform
from .data import SafeImageFolder, split_dir
from .data.shards import build_eval_loader

logger = logging.getLogger("crossmae")


def knn_predict(memory: torch.Tensor, memory_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 256) -> torch.Tensor:
    """Predicted class per query: [Q]. ``memory`` [M, D] and ``queries`` [Q, D] are L2-normalised here."""
    if memory.shape[0] == 0:
        raise ValueError("kNN: the memory bank is empty")
    memory = F.normalize(memory.float(), dim=1)
    k = min(k, memory.shape[0])
    preds = []
    for q in F.normalize(queries.float(), dim=1).split(chunk):
        sim, idx = (q @ memory.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], num_classes, dtype=sim.dtype, device=sim.device)
        votes.scatter_add_(1, memory_labels[idx], (sim / temperature).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def subset(n: int, count: int, seed: int = 0) -> list[int]:
    """A fixed random subset of ``count`` of ``n`` indices (all of them if count <= 0 or >= n), sorted."""
    if count <= 0 or count >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:count].tolist())


@torch.no_grad()
def encode(encoder, imgs: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """Feature of each image from every patch (no masking): the mean patch token or the cls token."""
    if hasattr(encoder, "pooled_features"):  # a hierarchical encoder (Hiera): no cls token, mean of the last stage
        return encoder.pooled_features(imgs)
    ids = torch.arange(encoder.num_patches, device=imgs.device).expand(imgs.shape[0], -1)
    x = encoder.forward_features(imgs, ids)
    return x[:, 1:].mean(dim=1) if pool == "avg" else x[:, 0]


@torch.no_grad()
def extract(encoder, dataset, device, batch_size: int, num_workers: int, rank: int, world_size: int,
            pool: str = "avg") -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of this rank's shard of ``dataset``."""
    feats, labels = [], []
    for imgs, targets in build_eval_loader(dataset, batch_size, num_workers, rank, world_size):
        feats.append(encode(encoder, imgs.to(device), pool).float())
        labels.append(targets.to(device))
    if not feats:
        return torch.zeros(0, encoder.embed_dim, device=device), torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(feats), torch.cat(labels)


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate each rank's rows (counts may differ by rank) on every rank."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return t
    world = torch.distributed.get_world_size()
    count = torch.tensor([t.shape[0]], device=t.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    torch.distributed.all_gather(counts, count)
    most = int(max(c.item() for c in counts))
    padded = torch.zeros(most, *t.shape[1:], dtype=t.dtype, device=t.device)
    padded[:t.shape[0]] = t
    parts = [torch.zeros_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[:int(c.item())] for p, c in zip(parts, counts)])


class KnnMonitor:
    """kNN top-1 of an encoder on fixed train (memory) / val (query) subsets of a labelled ImageFolder."""

    def __init__(self, path: str | Path, img_size: int, train_images: int = 5000, val_images: int = 1000,
                 k: int = 20, temperature: float = 0.07, batch_size: int = 128, num_workers: int = 2,
                 pool: str = "avg", seed: int = 0):
        if k < 1 or temperature <= 0:
            raise ValueError(f"knn: k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
        if pool not in ("avg", "cls"):
            raise ValueError(f"knn.pool must be avg or cls, got {pool!r}")
        tf = eval_transform(img_size, crop_pct=0.875)  # DINO's kNN: resize to 256, centre 224
        train = SafeImageFolder(split_dir(path, "train"), transform=tf)
        val = SafeImageFolder(split_dir(path, "val"), transform=tf)
        if train.classes != val.classes:
            raise ValueError(f"knn: {path}: train and val have different class folders")
        self.num_classes = len(train.classes)
        self.train = torch.utils.data.Subset(train, subset(len(train), train_images, seed))
        self.val = torch.utils.data.Subset(val, subset(len(val), val_images, seed + 1))
        self.k, self.temperature, self.pool = k, temperature, pool
        self.batch_size, self.num_workers = batch_size, num_workers

    @torch.no_grad()
    def __call__(self, encoder, device=None) -> dict[str, float]:
        """{"knn_top1" (percent), "knn_time_s"}; the same value on every rank."""
        from .engine.distributed import all_reduce_sum, get_rank, get_world_size
        start, was_training = time.time(), encoder.training
        encoder.eval()
        device = device or next(encoder.parameters()).device
        rank, world = get_rank(), get_world_size()
        mem, mem_labels = extract(encoder, self.train, device, self.batch_size, self.num_workers, rank, world,
                                  self.pool)
        mem, mem_labels = gather_rows(mem), gather_rows(mem_labels)
        q, q_labels = extract(encoder, self.val, device, self.batch_size, self.num_workers, rank, world, self.pool)
        encoder.train(was_training)
        finite = torch.isfinite(mem).all() & torch.isfinite(q).all()
        if all_reduce_sum(finite.logical_not().float().reshape(1)) > 0:
            # NaN similarities would vote for arbitrary classes: chance accuracy, not a measurement
            return {"knn_top1": math.nan, "knn_time_s": time.time() - start}
        pred = knn_predict(mem, mem_labels, q, self.num_classes, self.k, self.temperature)
        counts = all_reduce_sum(torch.tensor([float((pred == q_labels).sum()), float(q.shape[0])], device=device))
        return {"knn_top1": 100.0 * float(counts[0]) / max(float(counts[1]), 1.0), "knn_time_s": time.time() - start}


def run(checkpoint: str, data: str, train_images: int = 5000, val_images: int = 1000, k: int = 20,
        temperature: float = 0.07, batch_size: int = 128, num_workers: int = 2, pool: str = "avg",
        random_init: bool = False, device: str = "auto") -> dict:
    """The standalone command: build the checkpoint's pretraining model, load it, score its encoder."""
    from .engine import init_distributed
    from .engine.checkpoint import load_checkpoint, load_model_state
    from .models import build_model
    ckpt = load_checkpoint(checkpoint)
    model_cfg = dict((ckpt.get("config") or {}).get("model") or {})
    if "name" not in model_cfg:
        raise ValueError(f"{checkpoint}: no config.model.name recorded: kNN needs one of this toolkit's "
                         "pretraining checkpoints")
    dist = init_distributed(device)
    model = build_model(model_cfg.pop("name"), **model_cfg)
    if not random_init:
        load_model_state(model, ckpt, checkpoint)
    model.to(dist.device)
    monitor = KnnMonitor(data, model.patch_embed.img_size[0], train_images, val_images, k, temperature,
                         batch_size, num_workers, pool)
    metrics = monitor(model, dist.device)
    if math.isnan(metrics["knn_top1"]):
        raise ValueError(f"{checkpoint}: the encoder's features are not finite (inf/NaN) on the kNN images: its "
                         f"weights are unusable (written by a run that diverged?); no kNN accuracy to report")
    if dist.is_main:
        print(f"kNN top-1 {metrics['knn_top1']:.2f}% (k={k}, T={temperature}, {len(monitor.train)} memory / "
              f"{len(monitor.val)} query images, {monitor.num_classes} classes) in {metrics['knn_time_s']:.1f} s")
    return metrics


def with_knn(evaluate, knn_cfg, img_size: int, epochs: int, demo_root: str | Path):
    """Wrap the training loop's ``evaluate(model, epoch) -> metrics`` (``epoch``: the epochs trained, 1-based)
    so that it adds ``knn_top1`` every ``knn_cfg.every`` epochs and at the last one; unchanged when the monitor
    is off. ``evaluate`` may be None (the monitor alone). ``knn.path=demo`` means ``demo_root``."""
    if not knn_cfg.path or knn_cfg.every <= 0:
        return evaluate
    path = knn_cfg.path
    if path == "demo":
        from .data import make_demo_imagefolder
        from .engine.distributed import barrier, is_main_process
        if is_main_process():
            make_demo_imagefolder(demo_root)
        barrier()
        path = demo_root
    monitor = KnnMonitor(path, img_size, knn_cfg.train_images, knn_cfg.val_images, knn_cfg.k, knn_cfg.temperature,
                         knn_cfg.batch_size, knn_cfg.num_workers, knn_cfg.pool)
    logger.info("kNN monitor every %d epochs: %d memory / %d query images of %s, k=%d, T=%g", knn_cfg.every,
                len(monitor.train), len(monitor.val), path, knn_cfg.k, knn_cfg.temperature)

    def evaluate_with_knn(model, epoch: int) -> dict:
        metrics = dict(evaluate(model, epoch)) if evaluate is not None else {}
        if epoch % knn_cfg.every == 0 or epoch >= epochs:
            metrics.update(monitor(model))
        return metrics
    return evaluate_with_knn
