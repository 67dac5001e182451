"""Evaluation over several processes with every sample counted exactly once.

torch's DistributedSampler pads the index list so all ranks get equal shares, which evaluates a few
samples twice; here rank r takes indices r, r + world_size, r + 2 * world_size, ... (no padding), and the
task sums (or gathers) its results over the ranks. Classification, detection and segmentation evaluate
through :func:`build_eval_loader`.
"""
from __future__ import annotations

import torch


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


def build_eval_loader(dataset, batch_size: int | None, num_workers: int, rank: int, world_size: int,
                      pin_memory: bool = False, collate_fn=None) -> torch.utils.data.DataLoader:
    """This rank's shard of ``dataset`` in order, no sample dropped; ``batch_size=None`` gives the samples
    one by one, unbatched (images of different sizes)."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                       sampler=ShardSampler(len(dataset), rank, world_size), num_workers=num_workers,
                                       pin_memory=pin_memory, drop_last=False, collate_fn=collate_fn)
