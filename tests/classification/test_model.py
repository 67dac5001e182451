"""The classifier: layer-decay groups, encoder loading from CrossMAE/MAE checkpoints, pos-embed resize."""
from __future__ import annotations

import argparse
import logging

import pytest
import torch

from crossmae.classification.model import (arch_from_checkpoint, build_classifier, load_encoder, make_linear_probe,
                                           resize_pos_embed, resolve_arch)
from crossmae.classification.config import ClsModel
from crossmae.engine import CheckpointError, load_checkpoint, model_state, param_groups
from tiny import tiny_model

ARCH = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4)


def test_layer_decay_groups():
    model = build_classifier(10, **ARCH)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5, num_layers=4)
    scale, decay = {}, {}
    for g in groups:
        for n in g["param_names"]:
            scale[n], decay[n] = g["lr_scale"], g["weight_decay"]
    assert len(scale) == sum(1 for _ in model.parameters())
    for i in range(4):  # block i (0-based) is layer i + 1: rate ** (depth + 1 - (i + 1))
        assert scale[f"blocks.{i}.attn.qkv.weight"] == pytest.approx(0.5 ** (4 - i))
    for n in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        assert scale[n] == pytest.approx(0.5 ** 5)
    for n in ("head.weight", "fc_norm.weight"):
        assert scale[n] == 1.0
    no_decay = ("cls_token", "pos_embed", "blocks.0.attn.qkv.bias", "blocks.3.norm1.weight", "fc_norm.bias",
                "head.bias", "patch_embed.proj.bias")
    assert all(decay[n] == 0.0 for n in no_decay)
    assert all(decay[n] == 0.05 for n in ("head.weight", "blocks.2.mlp.fc1.weight", "patch_embed.proj.weight"))


def test_encoder_loads_with_only_head_missing(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    state = model_state(ckpt)
    model = build_classifier(10, global_pool="avg", **arch_from_checkpoint(ckpt))
    missing = load_encoder(model, state)
    assert sorted(missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    own = model.state_dict()
    for k in ("blocks.3.attn.qkv.weight", "blocks.0.attn.proj.bias", "patch_embed.proj.weight", "cls_token",
              "pos_embed"):
        assert torch.equal(own[k], state[k]), k


def test_cls_path_without_final_norm_is_fresh_and_logged(tiny_checkpoint, caplog):
    """CrossMAE with inter-block attention has no encoder norm: the cls path starts it fresh, with a warning."""
    state = model_state(load_checkpoint(tiny_checkpoint))
    assert not any(k.startswith("norm.") for k in state)
    model = build_classifier(10, global_pool="token", **ARCH)
    logging.getLogger("crossmae").propagate = True
    with caplog.at_level(logging.WARNING, logger="crossmae"):
        missing = load_encoder(model, state)
    assert sorted(missing) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert "no final encoder norm" in caplog.text
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_mae_checkpoint_keeps_its_norm_on_the_cls_path():
    mae = tiny_model(name="mae_vit_small_patch16")
    with torch.no_grad():
        mae.norm.weight.uniform_(0.5, 1.5)
    model = build_classifier(10, global_pool="token", **ARCH)
    assert load_encoder(model, mae.state_dict()) == ["head.bias", "head.weight"]
    assert torch.equal(model.norm.weight, mae.norm.weight)


@pytest.mark.parametrize("change,needle", [(dict(depth=3), "unexpected keys"), (dict(depth=5), "missing keys"),
                                           (dict(embed_dim=32), "shape mismatch")])
def test_encoder_mismatch_is_a_clear_error(tiny_checkpoint, change, needle):
    state = model_state(load_checkpoint(tiny_checkpoint))
    model = build_classifier(10, **{**ARCH, **change})
    with pytest.raises(CheckpointError, match=needle):
        load_encoder(model, state, source="tiny.pth")


def test_not_an_encoder_is_a_clear_error():
    with pytest.raises(CheckpointError, match="no ViT encoder"):
        load_encoder(build_classifier(10, **ARCH), {"fc.weight": torch.zeros(2, 2)})


def test_pos_embed_resize_on_load(tiny_checkpoint):
    """A 32 px (8x8) checkpoint fine-tuned at 64 px (16x16), like 224 -> 448."""
    state = model_state(load_checkpoint(tiny_checkpoint))
    model = build_classifier(10, **{**ARCH, "img_size": 64})
    load_encoder(model, state)
    pe = model.pos_embed.detach()
    assert pe.shape == (1, 1 + 16 * 16, 64)
    assert torch.equal(pe[:, :1], state["pos_embed"][:, :1])  # the cls position is kept as is
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert resize_pos_embed(state["pos_embed"], (8, 8)) is state["pos_embed"]


def test_pos_embed_resize_interpolates_positions():
    """A table whose channels are the column / row index: after 8x8 -> 16x16 each new cell holds about
    the coordinate of its centre in old-cell units. MAE's plain bicubic (torch's a=-0.75 kernel) is not
    exact on ramps: away from the border it alternates +-3/64 around them, exact on average per pair."""
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    pe = torch.zeros(1, 1 + 64, 4)
    pe[0, 0] = 7.0  # the cls position
    pe[0, 1:, 0], pe[0, 1:, 1] = cols.flatten(), rows.flatten()
    out = resize_pos_embed(pe, (16, 16))
    assert out.shape == (1, 1 + 256, 4) and torch.equal(out[0, 0], pe[0, 0])
    grid = out[0, 1:].reshape(16, 16, 4)
    expect = torch.arange(16.0) / 2 - 0.25
    for line in (grid[4, 3:13, 0], grid[3:13, 4, 1]):
        err = line - expect[3:13]
        assert torch.allclose(err.abs(), torch.full_like(err, 3 / 64), atol=1e-4)
        assert torch.allclose(err[0::2] + err[1::2], torch.zeros(5), atol=1e-4)


def test_arch_from_our_and_official_checkpoints(tiny_checkpoint):
    arch = arch_from_checkpoint(load_checkpoint(tiny_checkpoint))
    assert arch == {"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 4.0}
    official = {"model": {}, "args": argparse.Namespace(model="mae_vit_large_patch16", input_size=224)}
    assert arch_from_checkpoint(official) == {"img_size": 224, "patch_size": 16, "embed_dim": 1024, "depth": 24,
                                              "num_heads": 16, "mlp_ratio": 4.0}
    with pytest.raises(CheckpointError, match="model.arch"):
        arch_from_checkpoint({"model": {}})
    cfg = ClsModel(arch="auto", img_size=64)
    assert resolve_arch(cfg, load_checkpoint(tiny_checkpoint))["img_size"] == 64
    with pytest.raises(ValueError, match="model.arch"):
        resolve_arch(ClsModel(arch="gigantic"), None)
    with pytest.raises(ValueError, match="pretrained"):
        resolve_arch(ClsModel(arch="auto"), None)


def test_linear_probe_freezes_the_encoder():
    model = make_linear_probe(build_classifier(10, global_pool="token", **ARCH))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.1.weight", "head.1.bias"]
    bn = model.head[0]
    assert not bn.affine and bn.eps == 1e-6
