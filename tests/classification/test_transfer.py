"""cls_transfer: iNat2019 and Places365 read from tiny trees in their real layouts, bad input, and one run."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from cls_transfer import INat2019, Places365Local, dataset_fn, main
from cls_transfer.config import TransferData

from .fakes import make_inat2019_tree, make_places365_tree


@pytest.fixture(scope="module")
def inat_root(tmp_path_factory):
    return make_inat2019_tree(tmp_path_factory.mktemp("inat"), {3: 2, 500: 2, 1009: 1})


@pytest.fixture(scope="module")
def places_root(tmp_path_factory):
    return make_places365_tree(tmp_path_factory.mktemp("places"), {0: 4, 1: 4})


def test_inat2019_reads_its_layout(inat_root):
    train = INat2019(inat_root, "train")
    assert len(train.classes) == 1010
    assert len(train) == 5 and sorted(train.targets) == [3, 3, 500, 500, 1009]
    img, target = train[4]
    assert img.size == (20, 20) and target == 1009
    val = INat2019(inat_root, "val", transform=lambda im: torch.zeros(1))
    assert len(val) == 5 and all(p.split("/")[-1].startswith("val") for p, _ in val.samples)
    assert val[0][0].shape == (1,)


def test_inat2019_errors(inat_root, tmp_path):
    cfg = OmegaConf.structured(TransferData(dataset="inat2019", path=str(inat_root), nb_classes=1000))
    with pytest.raises(ValueError, match="1010 classes"):
        dataset_fn(cfg)
    with pytest.raises(FileNotFoundError, match="2019"):
        INat2019(tmp_path, "train")
    (tmp_path / "train_val2019" / "Birds").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="symlink"):
        INat2019(tmp_path, "train")
    partial = make_inat2019_tree(tmp_path / "partial", {0: 1}, n_categories=4)
    (partial / "val2019.json").unlink()
    with pytest.raises(FileNotFoundError, match="val2019.json"):
        INat2019(partial, "val")


def test_places365_reads_its_layout(places_root):
    train = Places365Local(places_root, "train-standard", small=True, verify_md5=False)
    val = Places365Local(places_root, "val", small=True, verify_md5=False)
    assert len(train.classes) == 365 == len(val.classes)
    assert len(train) == 8 and sorted(set(train.targets)) == [0, 1]
    assert len(val) == 8 and val[5][1] == 1
    assert train[0][0].size == (20, 20)


def test_places365_archive_folder_names(tmp_path):
    root = make_places365_tree(tmp_path / "p", {2: 1}, archive_names=True)  # data_256/ as the tar extracts
    assert len(Places365Local(root, "train-standard", verify_md5=False)) == 1


def test_places365_errors(places_root, tmp_path):
    with pytest.raises(ValueError, match="md5"):  # our file lists are not the published ones
        Places365Local(places_root, "val", verify_md5=True)
    with pytest.raises(FileNotFoundError, match="val_large"):
        Places365Local(places_root, "val", small=False, verify_md5=False)
    root = make_places365_tree(tmp_path / "noval", {0: 1})
    (root / "places365_val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="places365_val.txt"):
        Places365Local(root, "val", verify_md5=False)
    cfg = OmegaConf.structured(TransferData(dataset="places365", nb_classes=1010))
    with pytest.raises(ValueError, match="365 classes"):
        dataset_fn(cfg)
    with pytest.raises(ValueError, match="data.dataset"):
        dataset_fn(OmegaConf.structured(TransferData(dataset="cifar")))


def test_cls_transfer_runs_on_places365(places_root, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    res = main(None, [f"pretrained={tiny_checkpoint}", "data.dataset=places365", f"data.path={places_root}",
                      "data.nb_classes=365", "data.verify_md5=false", "data.num_workers=0", "epochs=1",
                      "batch_size=4", "optim.warmup_epochs=0", f"output_dir={out}", "device=cpu"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["task"] == "cls_transfer" and saved["dataset"] == "places365"
    assert saved["metrics"]["num_samples"] == 8 and 0 <= saved["metrics"]["top1"] <= 100
    assert res["checkpoint"] == str(tiny_checkpoint.resolve())
