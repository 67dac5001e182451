"""Fine-tuning and linear probing of a CrossMAE-Hiera checkpoint: the architecture read from it, its encoder
loaded, the mean of the last stage + fc_norm + head, a training epoch through the usual runs."""
from __future__ import annotations

import json
import math

import pytest
import torch

from crossmae.classification.config import ClsModel, FinetuneConfig, LinprobeConfig
from crossmae.classification.model import (HieraClassifier, arch_from_checkpoint, build_classifier, load_encoder,
                                           make_linear_probe, resolve_arch)
from crossmae.config import load_config
from crossmae.engine import load_checkpoint, model_state
from crossmae.finetune import run as finetune
from crossmae.linprobe import run as linprobe

from .fakes import make_colour_folder

# the tiny CrossMAE-Hiera of tests/tiny.py as the classifier's ClsModel fields: 4 blocks (1 + 2 + 1)
ARCH = {"family": "hiera", "img_size": 32, "depth": 4,
        "hiera": dict(embed_dim=16, num_heads=1, stages=[1, 2, 1], mask_unit_size=4,
                      mask_unit_attn=[True, False, False], patch_kernel=3, patch_stride=2, patch_padding=1)}


def test_hiera_checkpoint_gives_a_hiera_classifier_with_its_encoder(tiny_hiera_checkpoint):
    ckpt = load_checkpoint(tiny_hiera_checkpoint)
    assert arch_from_checkpoint(ckpt) == ARCH
    assert resolve_arch(ClsModel(arch="auto", img_size=64), ckpt)["img_size"] == 64
    model = build_classifier(5, **ARCH)
    assert isinstance(model, HieraClassifier) and model.embed_dim == 64  # the last stage's width
    state = model_state(ckpt)
    assert load_encoder(model, state) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    own = model.state_dict()
    for k in ("blocks.2.mlp.fc1.weight", "patch_embed.proj.weight", "pos_embed"):
        assert torch.equal(own[k], state[k]), k
    # the head reads the mean of the last stage's tokens, through fc_norm
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_blocks(x)[-1].mean(dim=1)
    torch.testing.assert_close(model(x), model.head(model.fc_norm(feats)))
    with pytest.raises(ValueError, match="Hiera has no cls token"):
        build_classifier(5, global_pool="token", **ARCH)


def test_linear_probe_of_hiera_trains_only_the_head():
    model = make_linear_probe(build_classifier(5, **ARCH))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.1.weight", "head.1.bias"]


def overrides(ckpt, data, out, **extra):
    base = {"pretrained": ckpt, "data.path": data, "data.nb_classes": 2, "data.num_workers": 0, "output_dir": out,
            "batch_size": 4, "epochs": 1, "optim.warmup_epochs": 1, "log_every": 1, "device": "cpu",
            "model.global_pool": "avg", **extra}
    return [f"{k}={v}" for k, v in base.items()]


@pytest.mark.parametrize("task", ["finetune", "linprobe"])
def test_hiera_fine_tunes_and_probes_through_the_runs(tiny_hiera_checkpoint, tmp_path, task):
    data = make_colour_folder(tmp_path / "data")
    schema, run = (FinetuneConfig, finetune) if task == "finetune" else (LinprobeConfig, linprobe)
    extra = {"model.drop_path_rate": 0.0} if task == "linprobe" else {}
    summary = run(load_config(schema, None, overrides(tiny_hiera_checkpoint, data, tmp_path / "run", **extra)))
    assert summary["model_description"] == "Hiera 16w/1-2-1 32px"
    steps = [json.loads(line) for line in open(tmp_path / "run" / "train_log.jsonl")]
    assert len(steps) == 4 and all(math.isfinite(s["loss"]) for s in steps)
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pth")
    assert saved["config"]["model"]["family"] == "hiera" and saved["config"]["model"]["hiera"] == ARCH["hiera"]
    again = run(load_config(schema, None, overrides(tiny_hiera_checkpoint, data, tmp_path / "eval", eval_only=True,
                                                    resume=tmp_path / "run" / "checkpoint.pth", **extra)))
    assert again["metrics"]["top1"] == summary["metrics"]["top1"]
