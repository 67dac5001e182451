"""ADE20K faults found before training: a label value out of range in any file (not only the first few),
validated by a cached scan; 16-bit images are read through the shared reader."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import seg.data as seg_data
from crossmae.data.image import ImageReadError
from seg.data import ADE20KDataset, SegDataError


def write_split(root, n=20, size=12, bad=None, bad_value=200):
    (root / "images" / "training").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "training").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"ADE_train_{i:08d}"
        Image.fromarray(np.full((size, size, 3), 100, np.uint8)).save(root / "images" / "training" / f"{name}.jpg")
        label = np.full((size, size), 1 + i % 150, np.uint8)
        if i == bad:
            label[3, 4] = bad_value
        Image.fromarray(label).save(root / "annotations" / "training" / f"{name}.png")
    return root


def test_a_bad_label_beyond_the_first_files_is_found_when_the_dataset_is_built(tmp_path):
    write_split(tmp_path, bad=17)
    with pytest.raises(SegDataError, match=r"ADE_train_00000017\.png has values \[200\].*1 of 20 label maps"):
        ADE20KDataset(tmp_path, "training", label_values_cache=tmp_path / "cache.json")


def test_the_scan_is_cached_and_sees_changed_files(tmp_path, monkeypatch):
    write_split(tmp_path)
    cache = tmp_path / "cache.json"
    calls = []
    real = seg_data.label_values
    monkeypatch.setattr(seg_data, "label_values", lambda p: calls.append(p) or real(p))
    ADE20KDataset(tmp_path, "training", label_values_cache=cache)
    assert len(calls) == 20 and cache.is_file()
    calls.clear()
    ADE20KDataset(tmp_path, "training", label_values_cache=cache)
    assert calls == []  # nothing changed: no file decoded
    changed = tmp_path / "annotations" / "training" / "ADE_train_00000005.png"
    label = np.full((12, 12), 3, np.uint8)
    label[0, 0] = 151
    Image.fromarray(label).save(changed)
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse file-system clocks
    with pytest.raises(SegDataError, match=r"ADE_train_00000005\.png has values \[151\]"):
        ADE20KDataset(tmp_path, "training", label_values_cache=cache)
    assert [p.name for p in calls] == ["ADE_train_00000005.png"]


def test_default_cache_lies_beside_the_annotations(tmp_path):
    write_split(tmp_path, n=3)
    ADE20KDataset(tmp_path, "training")
    assert (tmp_path / "annotations" / ".crossmae_label_values_training.json").is_file()
    assert len(ADE20KDataset(tmp_path, "training")) == 3


def test_labels_without_reduce_zero_label_use_0_to_k_minus_1(tmp_path):
    write_split(tmp_path, n=3, bad=1, bad_value=150)  # 150 is a class with reduce_zero_label, not without
    ADE20KDataset(tmp_path, "training", label_values_cache=tmp_path / "a.json")
    with pytest.raises(SegDataError, match=r"\[150\].*expected 0\.\.149"):
        ADE20KDataset(tmp_path, "training", reduce_zero_label=False, label_values_cache=tmp_path / "b.json")


def test_16bit_image_is_scaled_not_clipped(tmp_path):
    write_split(tmp_path, n=1, size=16)
    img = np.linspace(0, 65535, 256).round().astype(np.uint16).reshape(16, 16)
    (tmp_path / "images" / "training" / "ADE_train_00000000.jpg").unlink()
    Image.fromarray(img).save(tmp_path / "images" / "training" / "ADE_train_00000000.png")
    rgb, _ = ADE20KDataset(tmp_path, "training", label_values_cache=tmp_path / "c.json")[0]
    assert (rgb.numpy() == 255).mean() < 0.01 and int(rgb.max()) == 255


def test_unreadable_image_is_skipped_in_training_and_stops_evaluation(tmp_path, caplog):
    write_split(tmp_path, n=4)
    (tmp_path / "images" / "training" / "ADE_train_00000000.jpg").write_bytes(b"")
    kw = dict(label_values_cache=tmp_path / "c.json")
    train = ADE20KDataset(tmp_path, "training", skip_unreadable=True, **kw)  # the size check passes over it
    _, label = train[0]
    assert train.num_skipped() == 1 and int(label.max()) == 1  # the next pair (raw 2 -> class 1)
    assert "ADE_train_00000000.jpg" in caplog.text
    with pytest.raises(ImageReadError, match="unreadable image .*ADE_train_00000000.jpg"):
        ADE20KDataset(tmp_path, "training", check_sizes=False, **kw)[0]
    with pytest.raises(ImageReadError, match="unreadable image .*ADE_train_00000000.jpg"):
        ADE20KDataset(tmp_path, "training", **kw)  # evaluation sets: found when the dataset is built


def test_unreadable_annotation_is_named_up_front(tmp_path):
    write_split(tmp_path, n=3)
    (tmp_path / "annotations" / "training" / "ADE_train_00000002.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(SegDataError, match=r"annotation .*ADE_train_00000002\.png cannot be read"):
        ADE20KDataset(tmp_path, "training", check_sizes=False, check_labels=True,
                      label_values_cache=tmp_path / "c.json")
    with pytest.raises(SegDataError, match=r"annotation .*ADE_train_00000002\.png cannot be read"):
        ADE20KDataset(tmp_path, "training", label_values_cache=tmp_path / "c.json")


# ------------------------------------------------------------------ train-set problems skipped, val-set problems errors

def damage_pairs(root, which=(2, 4, 6)):
    """Bad pairs: a label map of another size (2), a value out of range (4), an unreadable label map (6)."""
    ann = root / "annotations" / "training"
    if 2 in which:
        Image.fromarray(np.full((10, 12), 1, np.uint8)).save(ann / "ADE_train_00000002.png")
    if 4 in which:
        label = np.full((12, 12), 1, np.uint8)
        label[0, 0] = 200
        Image.fromarray(label).save(ann / "ADE_train_00000004.png")
    if 6 in which:
        (ann / "ADE_train_00000006.png").write_bytes(b"\x89PNG broken")


def test_bad_training_pairs_are_skipped_and_counted_when_the_dataset_is_built(tmp_path, caplog):
    write_split(tmp_path, n=8)
    damage_pairs(tmp_path)
    train = ADE20KDataset(tmp_path, "training", skip_unreadable=True, bad_pairs="skip",
                          label_values_cache=tmp_path / "c.json")
    kept = {p.name for p, _ in train.pairs}
    assert len(train) == 5 and train.dropped == 3
    assert not kept & {"ADE_train_00000002.jpg", "ADE_train_00000004.jpg", "ADE_train_00000006.jpg"}
    assert "skipping 3 of 8" in caplog.text and "ADE_train_00000002.png" in caplog.text
    for i in range(len(train)):
        train[i]
    assert train.num_skipped() == 0


@pytest.mark.parametrize("bad,message", [(2, r"ADE_train_00000002\.png is 12x10 \(WxH\)"),
                                         (4, r"ADE_train_00000004\.png has values \[200\]"),
                                         (6, r"ADE_train_00000006\.png cannot be read")])
def test_each_bad_pair_is_an_error_in_an_evaluation_set(tmp_path, bad, message):
    write_split(tmp_path, n=8)
    damage_pairs(tmp_path, which=(bad,))
    with pytest.raises(SegDataError, match=message):
        ADE20KDataset(tmp_path, "training", label_values_cache=tmp_path / "c.json")


def test_a_label_map_changed_after_the_scan_is_skipped_in_training(tmp_path, caplog):
    write_split(tmp_path, n=4)
    train = ADE20KDataset(tmp_path, "training", skip_unreadable=True, bad_pairs="skip",
                          label_values_cache=tmp_path / "c.json")
    label = np.full((12, 12), 1, np.uint8)
    label[0, 0] = 200
    Image.fromarray(label).save(tmp_path / "annotations" / "training" / "ADE_train_00000000.png")
    _, label = train[0]
    assert train.num_skipped() == 1 and int(label.max()) == 1  # the next pair (raw 2 -> class 1)
    assert "ADE_train_00000000.png has values [200]" in caplog.text
    evaluation = ADE20KDataset(tmp_path, "training", check_sizes=False)
    with pytest.raises(SegDataError, match=r"ADE_train_00000000\.png has values \[200\]"):
        evaluation[0]
