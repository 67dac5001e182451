import numpy as np
import pytest
import torch
from PIL import Image

from seg.data import ADE20K_CLASSES, ADE20KDataset, IterationSampler, SegDataError, ShardSampler, reduce_zero_label
from seg.synthetic import CLASS_NAMES, make_synthetic_ade20k
from seg.transforms import (IGNORE_INDEX, TrainTransform, hsv_u8_to_rgb, photometric_distortion, random_crop,
                            rescale_size, rgb_to_hsv_u8)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_ade20k(tmp_path_factory.mktemp("ade") / "ADEChallengeData2016", num_train=12, num_val=4)


def _write_pair(root, split, name, img_hw, label):
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*img_hw, 3), 128, np.uint8)).save(root / "images" / split / f"{name}.jpg")
    if label is not None:
        Image.fromarray(np.asarray(label, np.uint8)).save(root / "annotations" / split / f"{name}.png")


def test_ade20k_has_150_distinct_class_names():
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150


def test_synthetic_set_has_the_ade20k_layout_and_is_read_with_zero_label_reduced(synthetic):
    assert len(list((synthetic / "images" / "training").glob("ADE_train_*.jpg"))) == 12
    assert len(list((synthetic / "annotations" / "validation").glob("ADE_val_*.png"))) == 4
    ds = ADE20KDataset(synthetic, "training", num_classes=len(CLASS_NAMES))
    raw = np.asarray(Image.open(ds.pairs[0][1]))
    img, label = ds[0]
    assert img.dtype == torch.uint8 and img.shape[:2] == label.shape == raw.shape
    assert set(np.unique(raw)) <= {0, 1, 2, 3, 4}
    # ADE coding: raw 0 -> ignore, raw k -> k - 1
    assert torch.equal(label == IGNORE_INDEX, torch.from_numpy(raw == 0))
    assert torch.equal(label[raw > 0], torch.from_numpy(raw[raw > 0].astype(np.int64) - 1))
    values = torch.cat([ds[i][1].flatten() for i in range(len(ds))]).unique().tolist()
    assert {0, 1, IGNORE_INDEX} <= set(values) <= {0, 1, 2, 3, IGNORE_INDEX}


def test_reduce_zero_label_keeps_255_ignored():
    assert reduce_zero_label(np.array([0, 1, 150, 255], np.uint8)).tolist() == [255, 0, 149, 255]


def test_missing_annotation_is_reported_with_its_path(tmp_path):
    _write_pair(tmp_path, "training", "ADE_train_00000001", (8, 8), np.ones((8, 8)))
    _write_pair(tmp_path, "training", "ADE_train_00000002", (8, 8), None)
    with pytest.raises(FileNotFoundError, match="ADE_train_00000002.png"):
        ADE20KDataset(tmp_path, "training")


def test_missing_split_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="images/validation"):
        ADE20KDataset(tmp_path, "validation")


def test_label_map_of_another_size_is_reported_up_front_and_on_load(tmp_path):
    _write_pair(tmp_path, "training", "ADE_train_00000001", (8, 10), np.ones((8, 9)))
    with pytest.raises(SegDataError, match=r"ADE_train_00000001\.png.*9x8.*10x8"):
        ADE20KDataset(tmp_path, "training")
    ds = ADE20KDataset(tmp_path, "training", check_sizes=False)
    with pytest.raises(SegDataError, match="ADE_train_00000001.png"):
        ds[0]


def test_label_value_outside_the_class_range_is_reported_with_the_file(tmp_path):
    label = np.ones((8, 8))
    label[2, 3] = 200
    _write_pair(tmp_path, "training", "ADE_train_00000001", (8, 8), label)
    with pytest.raises(SegDataError, match=r"ADE_train_00000001\.png has values \[200\]"):
        ADE20KDataset(tmp_path, "training")  # the first label maps are read when the dataset is built
    ds = ADE20KDataset(tmp_path, "training", check_sizes=False)
    with pytest.raises(SegDataError, match=r"ADE_train_00000001\.png has values \[200\]"):
        ds[0]


def test_train_transform_gives_padded_crops_with_ignore_outside_the_image():
    torch.manual_seed(0)
    img = torch.randint(0, 256, (20, 30, 3), dtype=torch.uint8)
    label = torch.randint(0, 3, (20, 30))
    tf = TrainTransform(crop_size=64, scale=(64, 16), ratio_range=(1.0, 1.0))  # resized to 16 x 24: smaller than 64
    x, y = tf(img, label)
    assert x.shape == (3, 64, 64) and y.shape == (64, 64)
    assert (y[16:] == IGNORE_INDEX).all() and (y[:, 24:] == IGNORE_INDEX).all()
    assert (y[:16, :24] != IGNORE_INDEX).all()
    assert (x[:, 16:] == 0).all()  # padding is zero after normalisation, as in mmseg


def test_rescale_size_follows_the_keep_ratio_rule():
    assert rescale_size(512, 683, (2048, 512)) == (512, 683)
    assert rescale_size(300, 400, (2048, 512)) == (512, 683)
    assert rescale_size(100, 1000, (2048, 512)) == (205, 2048)  # long side bound wins


def test_random_crop_avoids_crops_dominated_by_one_class():
    label = torch.zeros(40, 40, dtype=torch.long)
    label[:, 30:] = 1  # class 1 only in a 10-pixel strip on the right
    img = torch.zeros(3, 40, 40)
    g = torch.Generator().manual_seed(0)
    shares = []
    for _ in range(30):
        _, y = random_crop(img, label, (20, 20), cat_max_ratio=0.75, g=g)
        shares.append(float((y == 0).float().mean()))
    # without the cap most 20x20 crops would be all class 0; with it nearly all stay below 0.75
    assert sum(s < 0.75 for s in shares) >= 25


def test_hsv_round_trip_and_photometric_range():
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(3, 16, 16, generator=g) * 255).round()
    # 8-bit HSV loses a little: OpenCV's round trip is within a few levels, never further
    assert (hsv_u8_to_rgb(rgb_to_hsv_u8(img)) - img).abs().max() <= 4
    outs = [photometric_distortion(img, g) for _ in range(8)]
    assert all(o.min() >= 0 and o.max() <= 255 for o in outs)
    assert sum(not torch.allclose(o, img) for o in outs) >= 4


def test_iteration_sampler_gives_fixed_length_disjoint_shards_reproducibly():
    shards = [IterationSampler(10, 12, rank=r, world_size=2, seed=3) for r in range(2)]
    for s in shards:
        s.set_epoch(1)
    a, b = list(shards[0]), list(shards[1])
    assert len(a) == len(b) == 12
    # together: 24 draws from back-to-back permutations of 10 -> every image 2 or 3 times
    counts = np.bincount(a + b, minlength=10)
    assert counts.min() >= 2 and counts.max() <= 3
    assert list(shards[0]) == a  # same epoch, same order
    shards[0].set_epoch(2)
    assert list(shards[0]) != a
    assert sorted(list(ShardSampler(5, 0, 2)) + list(ShardSampler(5, 1, 2))) == [0, 1, 2, 3, 4]
