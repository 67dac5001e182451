"""Every downstream task: two fresh runs with the same seed end with the same weights, and a finished run
run again keeps its metrics in results.json (pretraining and det have their own tests beside their data
faults: tests/test_faults_data.py, tests/det/test_det_faults.py)."""
from __future__ import annotations

import json

import pytest
import torch

from crossmae.engine import load_checkpoint
from tiny import REPO

from classification.fakes import make_colour_folder, make_places365_tree

SEG = ["model.backbone.patch_size=8", "model.backbone.embed_dim=32", "model.backbone.depth=4",
       "model.backbone.num_heads=2", "model.backbone.out_indices=[0,1,2,3]", "model.backbone.img_size=32",
       "model.channels=16", "model.aux_channels=8", "data.crop_size=32", "data.scale=[128,32]",
       "data.num_workers=0", "data.synthetic_train=8", "data.synthetic_val=2", "data.synthetic_size=[32,40]",
       "test.stride=24", "max_iters=4", "iters_per_epoch=2", "eval_every=2", "batch_size=2",
       "optim.warmup_iters=1", "optim.layer_decay=null", "log_every=1", "device=cpu", "data.path=synthetic"]


def classification_args(ckpt, data, **extra):
    base = {"pretrained": ckpt, "data.path": data, "data.nb_classes": 2, "data.num_workers": 0, "batch_size": 4,
            "epochs": 1, "optim.warmup_epochs": 0, "log_every": 1, "device": "cpu", **extra}
    return [f"{k}={v}" for k, v in base.items()]


def run_task(task, out, ckpt, tmp_path):
    if task == "finetune":
        from crossmae.classification.config import FinetuneConfig
        from crossmae.config import load_config
        from crossmae.finetune import run
        data = make_colour_folder(tmp_path / "colours", per_class=4)
        return run(load_config(FinetuneConfig, None, classification_args(ckpt, data, **{
            "model.drop_path_rate": 0.1, "aug.mixup": 0.8, "output_dir": out})))
    if task == "linprobe":
        from crossmae.classification.config import LinprobeConfig
        from crossmae.config import load_config
        from crossmae.linprobe import run
        data = make_colour_folder(tmp_path / "colours", per_class=4)
        return run(load_config(LinprobeConfig, None, classification_args(ckpt, data, output_dir=out)))
    if task == "cls_transfer":
        from cls_transfer import main
        root = tmp_path / "places"
        if not root.exists():
            make_places365_tree(root, {0: 4, 1: 4})
        return main(None, classification_args(ckpt, root, **{
            "data.dataset": "places365", "data.nb_classes": 365, "data.verify_md5": "false", "output_dir": out}))
    from seg.train import main
    return main(str(REPO / "configs/seg/demo.yaml"), SEG + [f"output_dir={out}"])


METRIC = {"finetune": "top1", "linprobe": "top1", "cls_transfer": "top1", "seg": "mIoU"}


@pytest.mark.parametrize("task", ["finetune", "linprobe", "cls_transfer", "seg"])
def test_same_seed_same_weights_and_a_rerun_keeps_the_metrics(task, tiny_checkpoint, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        run_task(task, out, tiny_checkpoint, tmp_path)
    a, b = (load_checkpoint(out / "checkpoint.pth")["model"] for out in outs)
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []

    first = json.loads((outs[0] / "results.json").read_text())["metrics"]
    run_task(task, outs[0], tiny_checkpoint, tmp_path)  # finished: nothing to train, results kept
    again = json.loads((outs[0] / "results.json").read_text())["metrics"]
    assert again[METRIC[task]] == pytest.approx(first[METRIC[task]])
    assert again["train_time_s"] == first["train_time_s"]  # of the run that trained, not of the re-run
