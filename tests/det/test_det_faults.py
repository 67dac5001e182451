"""ViTDet faults: same seed gives the same run, a finished run re-run keeps its AP, and COCO files that
disagree with the disk (missing images, boxes outside their image) are caught before training."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from crossmae.data.image import ImageReadError
from crossmae.engine import load_checkpoint
from det.coco import AnnotationError, CocoInstances
from det.synthetic import make_split
from det.train import cli

FAST = ["batch_size=4", "eval_batch_size=4", "epochs=1", "eval_every=1", "log_every=1", "optim.warmup_iters=2"]


@pytest.fixture(scope="module")
def small_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_coco")
    make_split(root, "train2017", 8, 64, seed=0)
    make_split(root, "val2017", 4, 64, seed=1)
    return root


def edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_same_seed_same_run_and_a_finished_rerun_keeps_its_ap(small_coco, tiny_det_args, tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        assert cli(tiny_det_args + FAST + [f"data.root={small_coco}", f"output_dir={out}"]) == 0
    a, b = (load_checkpoint(out / "checkpoint.pth")["model"] for out in runs)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []

    first = json.loads((runs[0] / "results.json").read_text())["metrics"]
    assert {"bbox_AP", "segm_AP", "train_time_s"} <= first.keys()
    args = tiny_det_args + FAST + [f"data.root={small_coco}", f"output_dir={runs[0]}"]
    assert cli(args) == 0  # the finished run, run again
    kept = json.loads((runs[0] / "results.json").read_text())["metrics"]
    first.pop("eval_time_s"), kept.pop("eval_time_s")  # re-evaluated: the same numbers, another duration
    assert kept == pytest.approx(first, nan_ok=True)  # train_time_s kept from the run that trained
    (runs[0] / "results.json").unlink()  # killed between the last checkpoint and the results
    assert cli(args) == 0
    again = json.loads((runs[0] / "results.json").read_text())["metrics"]
    assert again["bbox_AP"] == pytest.approx(first["bbox_AP"]) and again["segm_AP"] == pytest.approx(first["segm_AP"])


@pytest.fixture
def coco_copy(small_coco, tmp_path):
    import shutil
    root = tmp_path / "coco"
    shutil.copytree(small_coco, root)
    return root


def test_missing_image_is_an_error_for_eval_and_skipped_with_a_count_for_training(coco_copy, caplog):
    (coco_copy / "train2017" / "000003.png").unlink()
    ann = coco_copy / "annotations" / "instances_train2017.json"
    with pytest.raises(FileNotFoundError, match=r"1 of 8 images listed in .* are not in .*000003\.png"):
        CocoInstances(coco_copy / "train2017", ann)
    with caplog.at_level(logging.WARNING, logger="crossmae"):
        ds = CocoInstances(coco_copy / "train2017", ann, missing_images="skip")
    assert len(ds) == 7 and 4 not in ds.ids and ds.missing == 1
    assert "000003.png" in caplog.text and "skipping" in caplog.text
    for p in (coco_copy / "train2017").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match="8 of 8"):  # nothing at all is an error even when skipping
        CocoInstances(coco_copy / "train2017", ann, missing_images="skip")


def test_boxes_outside_the_image_and_degenerate_boxes_are_dropped_with_a_count(coco_copy):
    ann = coco_copy / "annotations" / "instances_train2017.json"

    def corrupt(data):
        data["annotations"][0]["bbox"] = [70.0, 10.0, 20.0, 20.0]  # right of a 64 px image
        data["annotations"][1]["bbox"] = [-30.0, -30.0, 10.0, 10.0]  # above and left of it
        data["annotations"][2]["bbox"] = [5.0, 5.0, 0.0, 10.0]  # zero width
    edit_json(ann, corrupt)
    ds = CocoInstances(coco_copy / "train2017", ann, filter_empty=True)
    assert ds.skipped["box_outside_image"] == 2 and ds.skipped["degenerate_box"] == 1
    for i in range(len(ds)):  # every box left is a valid torchvision box inside its image
        _, t = ds[i]
        b = t["boxes"]
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all() and (b >= 0).all() and (b <= 64).all()


def test_training_with_broken_coco_fails_or_skips_before_training(coco_copy, tiny_det_args, tmp_path, capsys):
    (coco_copy / "val2017" / "000001.png").unlink()
    assert cli(tiny_det_args + FAST + [f"data.root={coco_copy}", f"output_dir={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: 1 of 4 images listed in" in err[-1] and "000001.png" in err[-1]
    assert not (tmp_path / "o" / "checkpoint.pth").exists()


def test_unreadable_image_is_skipped_and_counted_in_training_and_stops_evaluation(coco_copy, caplog):
    (coco_copy / "train2017" / "000000.png").write_bytes(b"")  # zero bytes: on disk, not decodable
    ann = coco_copy / "annotations" / "instances_train2017.json"
    train = CocoInstances(coco_copy / "train2017", ann, skip_unreadable=True)
    img, target = train[0]
    assert train.num_skipped() == 1 and target["image_id"] == train.ids[1] and "000000.png" in caplog.text
    with pytest.raises(ImageReadError, match=r"unreadable image .*000000\.png \(image_id 1; 1 of 8 unreadable\)"):
        CocoInstances(coco_copy / "train2017", ann)  # evaluation: found by the header check, when built


@pytest.mark.parametrize("field,value,message", [
    ("segmentation", {"counts": "abc", "size": [32, 32]}, r"RLE size \[32, 32\] differs .* \[64, 64\]"),
    ("segmentation", "polygon", "unknown segmentation format str"),
    ("segmentation", [["1", 2, 3, 4, 5, 6]], "polygon 0 has a non-numeric or non-finite coordinate"),
    ("segmentation", [7], "polygon 0 is not a list"),
    ("width", 0, "expected positive integers")])
def test_malformed_masks_and_image_sizes_fail_when_the_file_is_opened(coco_copy, field, value, message):
    from det.coco import AnnotationError, load_coco
    ann = coco_copy / "annotations" / "instances_train2017.json"
    edit_json(ann, lambda d: (d["images"] if field == "width" else d["annotations"])[0].__setitem__(field, value))
    with pytest.raises(AnnotationError, match=message):
        load_coco(ann)


@pytest.mark.parametrize("spelling", [["--eval-only"], ["eval_only=true"]], ids=["flag", "config-field"])
def test_eval_only_with_weights_of_another_model_is_one_message(synthetic_coco, tiny_checkpoint, tiny_det_args,
                                                                tmp_path, capsys, spelling):
    """--eval-only (or the config field every task has) given a pretraining checkpoint, not a trained
    detector: one line saying what differs."""
    from det.train import cli
    args = tiny_det_args + [f"data.root={synthetic_coco}", f"output_dir={tmp_path / 'run'}",
                            f"weights={tiny_checkpoint}"]
    assert cli(spelling + args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "trained detector" in err and "Traceback" not in err


def test_the_eval_only_keyword_of_run_still_evaluates_with_a_deprecation_warning(synthetic_coco, tiny_checkpoint,
                                                                                 tiny_det_args, tmp_path):
    from crossmae.config import load_config
    from det.train import DetConfig, run
    cfg = load_config(DetConfig, None, tiny_det_args + [f"data.root={synthetic_coco}", f"output_dir={tmp_path}",
                                                        f"weights={tiny_checkpoint}"])
    with pytest.deprecated_call(), pytest.raises(Exception, match="trained detector"):  # it went to evaluation
        run(cfg, eval_only=True)


# ------------------------------------------------------------------ content the evaluator would read (issue 20 §2)

MALFORMED = [  # (field, value, what the message says)
    ("segmentation", [[10.0, 10.0, 20.0, 20.0]], r"polygon 0 has 2 points \(4 coordinates\); a polygon needs 3"),
    ("segmentation", [[10.0, 10.0, 20.0, 20.0, 30.0, 10.0, 5.0]], r"polygon 0 has an odd number \(7\) of coordinates"),
    ("segmentation", [[10.0, 10.0, 20.0, 20.0, 30.0, 10.0], [1.0, 2.0, "3", 4.0, 5.0, 6.0]],
     "polygon 1 has a non-numeric or non-finite coordinate"),
    ("segmentation", [[10.0, 10.0, 20.0, None, 30.0, 10.0]], "polygon 0 has a non-numeric or non-finite coordinate"),
    ("bbox", ["10", 10.0, 5.0, 5.0], r"bbox \['10', 10.0, 5.0, 5.0\]: expected 4 finite numbers"),
    ("area", "big", "area 'big': expected a finite number"),
    ("iscrowd", "no", "iscrowd 'no': expected 0 or 1"),
]


@pytest.mark.parametrize("field,value,message", MALFORMED)
def test_malformed_val_annotations_are_errors_naming_file_and_annotation(coco_copy, field, value, message):
    ann = coco_copy / "annotations" / "instances_val2017.json"
    edit_json(ann, lambda d: d["annotations"][2].__setitem__(field, value))
    annotation_id = json.loads(ann.read_text())["annotations"][2]["id"]
    with pytest.raises(AnnotationError, match=rf"instances_val2017\.json: annotation {annotation_id} \(image \d+\): "
                                              rf"{message}"):
        CocoInstances(coco_copy / "val2017", ann, with_targets=False)


@pytest.mark.parametrize("field,value,message", MALFORMED)
def test_malformed_train_annotations_are_skipped_and_counted(coco_copy, field, value, message, caplog):
    ann = coco_copy / "annotations" / "instances_train2017.json"
    edit_json(ann, lambda d: d["annotations"][2].__setitem__(field, value))
    bad = json.loads(ann.read_text())["annotations"][2]
    with caplog.at_level(logging.WARNING, logger="crossmae"):
        ds = CocoInstances(coco_copy / "train2017", ann, bad_annotations="skip")
    assert ds.skipped["malformed"] == 1
    assert bad["id"] not in {a["id"] for anns in ds.anns.values() for a in anns}
    assert f"annotation {bad['id']}" in caplog.text and "instances_train2017.json" in caplog.text
    for i in range(len(ds)):  # every remaining sample loads
        ds[i]


def test_a_wrong_image_size_in_the_val_json_is_an_error_when_the_dataset_is_built(coco_copy):
    ann = coco_copy / "annotations" / "instances_val2017.json"
    edit_json(ann, lambda d: d["images"][1].__setitem__("width", 80))
    with pytest.raises(AnnotationError, match=r"000001\.png is 64x64 \(WxH\) but .*instances_val2017\.json says "
                                              r"80x64 \(image 2\); 1 of 4 images differ"):
        CocoInstances(coco_copy / "val2017", ann, with_targets=False)


def test_a_wrong_image_size_in_the_train_json_is_skipped_and_counted(coco_copy, caplog):
    ann = coco_copy / "annotations" / "instances_train2017.json"
    edit_json(ann, lambda d: d["images"][0].__setitem__("width", 80))
    ds = CocoInstances(coco_copy / "train2017", ann, bad_annotations="skip", skip_unreadable=True)
    img, target = ds[0]
    assert ds.num_skipped() == 1 and target["image_id"] == ds.ids[1]
    assert "000000.png is 64x64" in caplog.text


def test_a_two_point_val_polygon_stops_training_before_the_first_step(coco_copy, tiny_det_args, tmp_path, capsys):
    ann = coco_copy / "annotations" / "instances_val2017.json"
    edit_json(ann, lambda d: d["annotations"][0].__setitem__("segmentation", [[1.0, 1.0, 9.0, 9.0]]))
    out = tmp_path / "o"
    assert cli(tiny_det_args + FAST + [f"data.root={coco_copy}", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "instances_val2017.json: annotation 1 (image 1): polygon 0 has 2 points" in err[-1]
    assert not (out / "checkpoint.pth").exists() and not (out / "train_log.jsonl").exists()
