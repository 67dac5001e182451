"""One "skip unreadable and count" policy (crossmae/data/skipping.py) and one evaluation shard sampler
(crossmae/data/shards.py) for every dataset and task."""
from __future__ import annotations

import logging

import pytest
import torch

from crossmae.data.image import ImageReadError
from crossmae.data.shards import ShardSampler, build_eval_loader
from crossmae.data.skipping import CountsSkips


class Bad(CountsSkips):
    def __init__(self):
        self._init_skips()


def test_skip_raises_where_no_substitute_is_allowed_else_logs_and_counts(caplog):
    ds, error = Bad(), ImageReadError("unreadable image /d/1.png (OSError: truncated)")
    with pytest.raises(ImageReadError) as info:
        ds.skip(error, allowed=False)
    assert info.value is error and ds.num_skipped() == 0
    with caplog.at_level(logging.WARNING, logger="crossmae"):
        ds.skip(error, allowed=True)
        ds.skip(error, allowed=True, what="unreadable pair /d/1.png / /a/1.png (OSError: truncated)")
        ds.skip(error, allowed=True, count=False)  # a read outside training: logged, not counted
    assert ds.num_skipped() == 2
    assert [r.getMessage() for r in caplog.records] == [
        "skipping unreadable image /d/1.png (OSError: truncated)",
        "skipping unreadable pair /d/1.png / /a/1.png (OSError: truncated)",
        "skipping unreadable image /d/1.png (OSError: truncated)"]


def test_a_refused_substitute_is_raised_from_its_cause():
    ds, cause = Bad(), OSError("truncated")
    with pytest.raises(ImageReadError) as info:
        ds.skip(ImageReadError.of("/d/1.png", cause), allowed=False, cause=cause)
    assert str(info.value) == "unreadable image /d/1.png (OSError: truncated)" and info.value.__cause__ is cause


def test_every_dataset_skips_and_counts_through_the_one_mixin():
    from cls_transfer.datasets import INat2019, Places365Local
    from crossmae.data import FastPretrainFolder, SafeImageFolder
    from crossmae.data.fast_device import EncodedCropFolder
    from det.coco import CocoInstances
    from seg.data import ADE20KDataset
    for cls in (SafeImageFolder, FastPretrainFolder, EncodedCropFolder, INat2019, Places365Local, CocoInstances,
                ADE20KDataset):
        assert issubclass(cls, CountsSkips), cls
        own = [name for c in cls.__mro__ if c is not CountsSkips for name in ("num_skipped", "skip", "_init_skips")
               if name in vars(c)]
        assert not own, f"{cls.__name__} re-implements {own}"


class Numbers(torch.utils.data.Dataset):
    def __len__(self):
        return 7

    def __getitem__(self, i):
        return torch.tensor(i)


@pytest.mark.parametrize("batch_size", [None, 2])
def test_eval_loader_shards_cover_the_set_once_without_padding(batch_size):
    seen = [torch.atleast_1d(b).tolist() for r in range(3) for b in build_eval_loader(Numbers(), batch_size, 0, r, 3)]
    flat = [i for b in seen for i in b]
    assert sorted(flat) == list(range(7))  # 7 over 3 ranks: 3 + 2 + 2, no index twice
    assert [len(ShardSampler(7, r, 3)) for r in range(3)] == [3, 2, 2]
    with pytest.raises(ValueError, match="rank 3 outside world_size 3"):
        ShardSampler(7, 3, 3)


def test_seg_and_classification_shard_with_the_one_sampler():
    import seg.data
    from crossmae.classification.evaluate import ShardSampler as classification_sampler
    assert seg.data.ShardSampler is ShardSampler and classification_sampler is ShardSampler
    loader = seg.data.eval_loader(Numbers(), 0, 1, 2)
    assert isinstance(loader.sampler, ShardSampler) and [int(x) for x in loader] == [1, 3, 5]
