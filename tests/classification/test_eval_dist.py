"""Distributed evaluation counts every validation image exactly once (no DistributedSampler padding)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from tiny import free_port, spawn_ranks

from crossmae.classification.evaluate import ShardSampler, build_eval_loader, evaluate

N = 13  # uneven over 2 processes; DistributedSampler would pad to 14 and count image 0 twice


class Labelled(torch.utils.data.Dataset):
    """Image i has label i % 3; the "image" carries its index so the model below can look it up."""

    def __len__(self):
        return N

    def __getitem__(self, i):
        return torch.tensor([float(i)]), i % 3


class Oracle(torch.nn.Module):
    """Right on even indices, wrong on odd ones: top-1 = 7/13 exactly, and only if each image counts once."""

    def forward(self, x):
        idx = x[:, 0].long()
        label = idx % 3
        pred = torch.where(idx % 2 == 0, label, (label + 1) % 3)
        return torch.nn.functional.one_hot(pred, 3).float() * 5


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        loader = build_eval_loader(Labelled(), batch_size=4, num_workers=0, rank=rank, world_size=world)
        metrics = evaluate(Oracle(), loader, torch.device("cpu"), "fp32", expected=N)
        seen = torch.tensor(list(loader.sampler))
        torch.save({"metrics": metrics, "seen": seen}, f"{out}.{rank}")
        dist.barrier()  # both ranks done before teardown (gloo on torch 2.5 hangs otherwise)
    finally:
        dist.destroy_process_group()


def test_shard_sampler_covers_once():
    shards = [list(ShardSampler(N, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(N))
    assert [len(s) for s in shards] == [5, 4, 4]


def test_two_process_eval_counts_each_image_once(tmp_path):
    out = str(tmp_path / "result")
    spawn_ranks(_worker, 2, (2, free_port(), out), [f"{out}.{r}" for r in range(2)])
    results = [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]
    assert sorted(torch.cat([r["seen"] for r in results]).tolist()) == list(range(N))
    for r in results:  # every rank reports the global numbers
        assert r["metrics"]["num_samples"] == N
        assert abs(r["metrics"]["top1"] - 100 * 7 / N) < 1e-9
        assert r["metrics"]["top5"] == 100.0
    # the padded sampler this replaces would have counted 14
    padded = sum(len(torch.utils.data.DistributedSampler(Labelled(), 2, r, shuffle=False)) for r in range(2))
    assert padded == N + 1
