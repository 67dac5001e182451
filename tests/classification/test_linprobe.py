"""Linear probing: the encoder stays frozen, and a pretrained encoder beats a random one."""
from __future__ import annotations

import json

import pytest
import torch

from tiny import REPO
from crossmae.classification.config import LinprobeConfig
from crossmae.config import load_config
from crossmae.engine import load_checkpoint, model_state
from crossmae.linprobe import run

from .fakes import make_colour_folder


def test_lars_probe_trains_only_the_head(tiny_checkpoint, tmp_path):
    data = make_colour_folder(tmp_path / "data")
    args = [f"pretrained={tiny_checkpoint}", f"data.path={data}", "data.nb_classes=2", "data.num_workers=0",
            "batch_size=4", "epochs=2", "optim.warmup_epochs=1", "optim.blr=16", "device=cpu"]
    res = run(load_config(LinprobeConfig, None, args + [f"output_dir={tmp_path / 'lp'}"]))
    trained = load_checkpoint(tmp_path / "lp" / "checkpoint.pth")["model"]
    pre = model_state(load_checkpoint(tiny_checkpoint))
    for k in ("blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.bias", "patch_embed.proj.weight", "cls_token"):
        assert torch.equal(trained[k], pre[k]), k
    init = run(load_config(LinprobeConfig, None, args + [f"output_dir={tmp_path / 'lp0'}", "epochs=1"]))
    assert res["task"] == "linprobe" and res["metrics"]["num_samples"] == 16
    assert trained["head.0.running_mean"].abs().sum() > 0  # the BatchNorm statistics were updated
    ev = run(load_config(LinprobeConfig, None, args + [f"output_dir={tmp_path / 'ev'}", "eval_only=true",
                                                        f"resume={tmp_path / 'lp' / 'checkpoint.pth'}"]))
    assert ev["metrics"]["top1"] == res["metrics"]["top1"]
    assert init["metrics"]["num_samples"] == 16
    with pytest.raises(ValueError, match="drop path"):
        run(load_config(LinprobeConfig, None, args + ["model.drop_path_rate=0.1"]))
    with pytest.raises(ValueError, match="optim.name.*one of lars, sgd"):
        run(load_config(LinprobeConfig, None, args + [f"output_dir={tmp_path / 'x'}", "optim.name=adam"]))


@pytest.mark.slow
def test_pretrained_encoder_beats_random_in_linear_probe(pretrained_demo_run, tmp_path):
    """The demo pretraining's encoder vs the same architecture at random init, probed on the 16 photo
    classes (mean-pooled feature, SGD, 5 epochs; the demo's probe settings, see configs/linprobe/demo.yaml)."""
    results = {}
    for init in ("false", "true"):
        out = tmp_path / f"random_{init}"
        results[init] = run(load_config(LinprobeConfig, str(REPO / "configs/linprobe/demo.yaml"), [
            f"pretrained={pretrained_demo_run / 'checkpoint.pth'}", f"data.path={pretrained_demo_run / 'demo_data'}",
            f"output_dir={out}", "data.num_workers=0", f"random_init={init}", "epochs=5", "eval_every=5",
            "save_every=5"]))["metrics"]["top1"]
        saved = json.loads((out / "results.json").read_text())
        assert saved["random_init"] == (init == "true")
    pre, rand = results["false"], results["true"]
    print(f"linear probe top-1: pretrained {pre:.1f}%, random {rand:.1f}%")
    # measured (5 epochs): pretrained 86.5 / random 70.3 with the fixture; 82.8 / 71.4 and 85.9 / 71.9 with
    # seeds 1 and 2 on a separately pretrained 8-epoch checkpoint (10 epochs: 90.1 / 80.7)
    assert pre > rand + 5.0, (pre, rand)
    assert pre > 60.0
