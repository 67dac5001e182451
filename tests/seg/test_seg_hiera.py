"""A Hiera backbone through UperNet: the heads on its stages (no rescaling neck), its pretrained encoder
loaded, a few training steps and an evaluation through the usual command (configs/seg/demo_hiera.yaml)."""
from __future__ import annotations

import json
import math

import torch

from crossmae.config import load_config
from crossmae.engine import encoder_state, load_checkpoint, model_state
from seg.config import SegConfig
from seg.model import load_pretrained_encoder
from seg.train import build_model, main
from tiny import REPO

CONFIG = REPO / "configs/seg/demo_hiera.yaml"


def test_upernet_reads_the_hiera_stages_and_loads_the_encoder(tiny_hiera_checkpoint):
    cfg = load_config(SegConfig, CONFIG, [f"pretrained={tiny_hiera_checkpoint}"])
    model = build_model(cfg)
    assert cfg.model.backbone["stages"] == [1, 2, 1] and cfg.model.backbone["embed_dim"] == 16  # from the file
    assert model.neck is None and model.feature_strides == [2, 4, 8]  # 2 px patches, one pool per stage
    assert [c.conv.in_channels for c in model.decode_head.lateral_convs] == [16, 32]  # widths 16, 32, (64)
    assert model.auxiliary_head.convs[0].conv.in_channels == 64  # aux_in_index 2: the last stage
    assert model.size_divisor == 8  # one 8 px mask unit
    assert model.eval()(torch.randn(1, 3, 40, 24)).shape == (1, 4, 40, 24)

    missing, unexpected = load_pretrained_encoder(model, str(tiny_hiera_checkpoint))
    assert missing == [] and unexpected == []
    enc = encoder_state(model_state(load_checkpoint(tiny_hiera_checkpoint)))
    own = model.backbone.state_dict()
    for k in ("blocks.3.attn.qkv.weight", "patch_embed.proj.bias", "pos_embed"):
        assert torch.equal(own[k], enc[k]), k


def test_upernet_on_hiera_trains_and_evaluates_through_the_command(tiny_hiera_checkpoint, tmp_path):
    out = tmp_path / "run"
    summary = main(str(CONFIG), [f"pretrained={tiny_hiera_checkpoint}", f"output_dir={out}", "max_iters=2",
                                 "iters_per_epoch=2", "eval_every=1", "batch_size=4", "log_every=1",
                                 "optim.warmup_iters=1", "data.synthetic_train=8", "data.synthetic_val=2",
                                 "data.num_workers=0", "device=cpu"])
    assert "Hiera 16w/1-2-1 32px" in summary["model_description"]
    steps = [json.loads(line) for line in open(out / "train_log.jsonl")]
    assert len(steps) == 2 and all(math.isfinite(s["loss"]) for s in steps)
    assert 0 <= summary["metrics"]["mIoU"] <= 100
