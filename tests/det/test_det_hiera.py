"""A Hiera backbone through the detector: torchvision's FPN on its stages, its pretrained encoder loaded, a
few training steps and an evaluation through the usual command."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork

from crossmae.config import load_config
from crossmae.engine import encoder_state, load_checkpoint, model_state
from det.backbone import load_encoder
from det.fpn import MultiScalePyramid
from det.train import DetConfig, build_detector, main

# the tiny CrossMAE-Hiera (tests/tiny.py): stages at strides 2, 4, 8 (8 px mask units) at 64 px;
# one anchor size per level p1, p2, p3 and the max-pool level p4
HIERA_DET = ["model.family=hiera", "model.anchor_sizes=[8,16,32,64]"]


def test_hiera_detector_has_an_fpn_on_its_stages_and_loads_the_encoder(tiny_hiera_checkpoint, tiny_det_args):
    cfg = load_config(DetConfig, None, tiny_det_args + HIERA_DET + [f"pretrained={tiny_hiera_checkpoint}"])
    model = build_detector(cfg, num_classes=3)
    assert cfg.model.hiera["stages"] == [1, 2, 1] and cfg.model.hiera["img_size"] == 32  # read from the file
    fpn = model.backbone.fpn
    assert isinstance(fpn.fpn, FeaturePyramidNetwork)
    assert (fpn.names, fpn.strides) == (["p1", "p2", "p3", "p4"], [2, 4, 8, 16])
    assert [m[0].in_channels for m in fpn.fpn.inner_blocks] == [16, 32, 64]
    feats = model.backbone(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {"p1": (1, 32, 32, 32), "p2": (1, 32, 16, 16),
                                                             "p3": (1, 32, 8, 8), "p4": (1, 32, 4, 4)}
    assert model.roi_heads.box_roi_pool.featmap_names == ["p1", "p2", "p3"]

    missing, unexpected = load_encoder(model.backbone.net, tiny_hiera_checkpoint)
    assert missing == [] and unexpected == []
    enc = encoder_state(model_state(load_checkpoint(tiny_hiera_checkpoint)))
    net = model.backbone.net.state_dict()
    for k in ("blocks.1.attn.qkv.weight", "patch_embed.proj.weight", "pos_embed"):
        assert torch.equal(net[k], enc[k]), k


def test_hiera_detector_trains_and_evaluates_through_the_command(tiny_hiera_checkpoint, tiny_det_args, tmp_path):
    from det.synthetic import make_split
    root = tmp_path / "coco"
    make_split(root, "train2017", 8, 64, seed=0, colour_coded=True)
    make_split(root, "val2017", 4, 64, seed=1, colour_coded=True)
    out = tmp_path / "run"
    args = tiny_det_args + HIERA_DET + [f"pretrained={tiny_hiera_checkpoint}", f"data.root={root}",
                                        f"output_dir={out}", "batch_size=4", "eval_batch_size=4", "epochs=1",
                                        "eval_every=1", "log_every=1", "optim.warmup_iters=1", "device=cpu"]
    summary = main(None, args)
    assert "Hiera 16w/1-2-1 32px" in summary["model_description"]
    steps = [json.loads(line) for line in open(out / "train_log.jsonl")]
    assert len(steps) == 2 and all(math.isfinite(s["loss"]) for s in steps)
    assert {"bbox_AP", "segm_AP"} <= set(summary["metrics"])
    saved = load_config(DetConfig, out / "config.yaml")  # the resolved Hiera: rebuilt without the checkpoint
    assert saved.model.hiera["stages"] == [1, 2, 1]
    again = main(str(out / "config.yaml"), ["pretrained=''"], eval_only=True)  # no checkpoint to read
    assert again["metrics"]["bbox_AP"] == summary["metrics"]["bbox_AP"]


def test_fpn_needs_strides_that_double():
    assert MultiScalePyramid([16, 32, 64], [4, 8, 16], 8).names == ["p2", "p3", "p4", "p5"]
    for strides in ([2, 4, 4], [3, 6, 12]):  # Hiera pretrained with q_pool 1 at its own q_pool; not a power of 2
        with pytest.raises(ValueError, match="q_pool = number of stages - 1"):
            MultiScalePyramid([16, 32, 64], strides, 8)
