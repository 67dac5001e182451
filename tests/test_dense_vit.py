"""The dense-prediction ViT backbone shared by det/ (ViTDet) and seg/ (UperNet)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from crossmae.engine.checkpoint import CheckpointError, encoder_state, load_checkpoint, model_state
from crossmae.engine.optim import param_groups, vit_layer_id
from crossmae.models.dense_vit import DenseViT, RelPosAttention, seg_backbone, seg_out_indices, vitdet_global_indexes
from crossmae.models.rel_pos import (decomposed_rel_pos_bias, get_rel_pos, relative_position_index,
                                     resize_abs_pos, resize_bias_table, resize_rel_pos, window_padding_mask,
                                     window_partition, window_unpartition)

# matches the tiny_checkpoint encoder: width 64, 4 blocks, 4 heads, patch 4, 8 x 8 pretraining grid
TINY = dict(embed_dim=64, depth=4, num_heads=4, patch_size=4)


def tiny_vitdet(**kw):
    """ViTDet's settings (window attention with a few global blocks, decomposed rel-pos, the last block's map)."""
    return DenseViT(**{**TINY, "img_size": 64, "pretrain_img_size": 32, "window_size": 4, "global_attn_indexes": (1, 3),
                       "rel_pos": "decomposed", "use_abs_pos": True, "drop_path_rate": 0.1, "out_indices": (-1,), **kw})


def tiny_seg(**kw):
    return seg_backbone("base", **{**TINY, "img_size": 32, **kw})


# ----------------------------------------------------------------------------- pure functions
def test_window_partition_round_trip_with_padding():
    x = torch.randn(2, 5, 7, 3)
    windows, pad_hw = window_partition(x, 3)
    assert pad_hw == (6, 9) and windows.shape == (2 * 2 * 3, 3, 3, 3)
    # window 0 of image 0 is the top-left 3x3 block; the last window of each image holds padding
    assert torch.equal(windows[0], x[0, :3, :3])
    assert torch.equal(windows[5, 2, :], torch.zeros(3, 3))  # row 5 of image 0 is padding
    assert torch.equal(window_unpartition(windows, 3, pad_hw, (5, 7)), x)
    mask = window_padding_mask((5, 7), 3)
    assert mask.shape == (6, 9)
    assert mask.sum() == 6 * 9 - 5 * 7
    assert torch.equal(mask.reshape(6, 3, 3), windows[:6].abs().sum(-1) == 0)
    # divisible grid: no padding, still a round trip
    windows, pad_hw = window_partition(x[:, :3, :6], 3)
    assert pad_hw == (3, 6) and torch.equal(window_unpartition(windows, 3, pad_hw, (3, 6)), x[:, :3, :6])


def test_decomposed_rel_pos_identity_when_sizes_match_and_interpolated_otherwise():
    table = torch.randn(2 * 5 - 1, 8)
    assert resize_rel_pos(table, 9) is table
    rel = get_rel_pos(5, 5, table)
    assert rel.shape == (5, 5, 8)
    for i in range(5):
        for j in range(5):
            assert torch.equal(rel[i, j], table[i - j + 4])
    # a table made for 3 positions used at 6: resized to 11 offsets; a linear ramp stays monotone
    ramp = torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 2)
    big = get_rel_pos(6, 6, ramp)
    assert big.shape == (6, 6, 2)
    assert resize_rel_pos(ramp, 11).shape == (11, 2)
    assert (resize_rel_pos(ramp, 11)[1:, 0] >= resize_rel_pos(ramp, 11)[:-1, 0]).all()
    assert get_rel_pos(3, 6, table).shape == (3, 6, 8)


def test_decomposed_bias_matches_definition():
    torch.manual_seed(0)
    q = torch.randn(2, 3, 4 * 5, 8)
    rh, rw = torch.randn(7, 8), torch.randn(9, 8)
    bias = decomposed_rel_pos_bias(q, (4, 5), (4, 5), rh, rw)
    assert bias.shape == (2, 3, 20, 20)
    qg = q.reshape(2, 3, 4, 5, 8)
    for (i, j, k, l) in [(0, 0, 3, 4), (3, 1, 0, 2), (2, 4, 2, 4)]:
        want = qg[:, :, i, j] @ rh[i - k + 3] + qg[:, :, i, j] @ rw[j - l + 4]
        torch.testing.assert_close(bias[:, :, i * 5 + j, k * 5 + l], want)


def test_relative_position_index_encodes_offsets():
    h, w = 3, 4
    index = relative_position_index((h, w))
    pos = [(i, j) for i in range(h) for j in range(w)]
    for p, (a, b) in enumerate(pos):
        for q, (c, d) in enumerate(pos):
            assert index[p, q] == (a - c + h - 1) * (2 * w - 1) + (b - d + w - 1)
    with_cls = relative_position_index((h, w), cls_token=True)
    n_rel = (2 * h - 1) * (2 * w - 1)
    assert with_cls.shape == (13, 13) and torch.equal(with_cls[1:, 1:], index)
    assert with_cls[0, 1:].eq(n_rel).all() and with_cls[1:, 0].eq(n_rel + 1).all() and with_cls[0, 0] == n_rel + 2
    table = torch.randn(n_rel + 3, 2)
    resized = resize_bias_table(table, (h, w), (5, 2), cls_token=True)
    assert resized.shape == (9 * 3 + 3, 2) and torch.equal(resized[-3:], table[-3:])
    assert resize_bias_table(table, (h, w), (h, w), cls_token=True) is table


def test_resize_abs_pos_keeps_cls_and_is_identity_on_same_grid():
    pe = torch.randn(1, 1 + 16, 8)
    assert resize_abs_pos(pe, (4, 4), (4, 4)) is pe
    out = resize_abs_pos(pe, (4, 4), (6, 3))
    assert out.shape == (1, 1 + 18, 8) and torch.equal(out[:, 0], pe[:, 0])
    const = torch.ones(1, 17, 8)  # bicubic (align_corners=False) keeps a constant field constant
    torch.testing.assert_close(resize_abs_pos(const, (4, 4), (7, 5)), torch.ones(1, 36, 8))


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("rel_pos", ["decomposed", "bias_table"])
def test_attention_with_rel_pos_matches_explicit_softmax(rel_pos):
    torch.manual_seed(0)
    attn = RelPosAttention(32, 4, rel_pos=rel_pos, input_size=(3, 4)).eval()
    for p in attn.parameters():
        nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 12, 32)
    q, k, v = attn.qkv(x).reshape(2, 12, 3, 4, 8).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-2, -1) * 8 ** -0.5
    if rel_pos == "decomposed":
        logits = logits + decomposed_rel_pos_bias(q, (3, 4), (3, 4), attn.rel_pos_h, attn.rel_pos_w)
    else:
        idx = relative_position_index((3, 4))
        logits = logits + attn.relative_position_bias_table[idx].permute(2, 0, 1)[None]
    want = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 12, 32))
    got = attn(x, (3, 4))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the gradient through the fused path's float mask equals the explicit one
    tables = [p for n, p in attn.named_parameters() if "rel" in n]
    g_want = torch.autograd.grad(want.pow(2).sum(), tables)
    g_got = torch.autograd.grad(got.pow(2).sum(), tables)
    for a, b in zip(g_got, g_want):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("use_cls_token", [False, True])
def test_zero_bias_table_equals_no_bias(use_cls_token):
    torch.manual_seed(0)
    plain = tiny_seg(rel_pos="none", use_cls_token=use_cls_token, depth=2).eval()
    biased = tiny_seg(rel_pos="bias_table", use_cls_token=use_cls_token, depth=2).eval()
    missing, _ = biased.load_pretrained(plain.state_dict())  # same weights, zero tables
    assert missing and all("relative_position_bias_table" in k for k in missing)
    x = torch.randn(1, 3, 24, 40)  # another grid than the tables were made for: they get resized
    with torch.no_grad():
        for a, b in zip(plain(x), biased(x)):
            torch.testing.assert_close(a, b)
        biased.blocks[0].attn.relative_position_bias_table.add_(0.5 * torch.randn_like(
            biased.blocks[0].attn.relative_position_bias_table))
        assert not torch.allclose(plain(x)[0], biased(x)[0], atol=1e-4)


def test_window_covering_the_grid_equals_global_attention():
    torch.manual_seed(0)
    glob = tiny_vitdet(window_size=0, rel_pos="none", depth=2, global_attn_indexes=()).eval()
    x = torch.randn(1, 3, 24, 32)  # 6 x 8 grid
    exact = tiny_vitdet(window_size=8, rel_pos="none", global_attn_indexes=(), depth=2).eval()  # pads 6 -> 8 rows
    masked = tiny_vitdet(window_size=8, rel_pos="none", global_attn_indexes=(), mask_window_padding=True,
                         depth=2).eval()
    for m in (exact, masked):
        m.load_state_dict(glob.state_dict())
    with torch.no_grad():
        ref = glob(x)[0]
        torch.testing.assert_close(masked(x)[0], ref, atol=1e-5, rtol=1e-5)
        # detectron2's window attention lets the zero padding take part as keys
        assert not torch.allclose(exact(x)[0], ref, atol=1e-4)
        x = torch.randn(1, 3, 32, 32)  # 8 x 8 grid = one window, no padding
        torch.testing.assert_close(exact(x)[0], glob(x)[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- backbone
def test_feature_shapes_non_square_at_each_out_index():
    seg = tiny_seg(out_indices=(0, 1, 3), out_norm=True)
    x = torch.randn(1, 3, 48, 72)  # 12 x 18 grid, not a multiple of window 5 below
    feats = seg(x)
    assert [tuple(f.shape) for f in feats] == [(1, 64, 12, 18)] * 3
    assert seg.out_channels == [64] * 3 and seg.out_strides == [4] * 3
    det = tiny_vitdet(window_size=5)
    (last,) = det(x)
    assert last.shape == (1, 64, 12, 18)
    no_cls = tiny_seg(use_cls_token=False)
    assert [tuple(f.shape) for f in no_cls(x)] == [(1, 64, 12, 18)] * 4
    with pytest.raises(ValueError, match="divisible by the patch size"):
        det(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="out_indices"):
        tiny_seg(out_indices=(2, 1))
    with pytest.raises(ValueError, match="use_cls_token"):
        tiny_vitdet(use_cls_token=True)


def test_pretrained_encoder_loads_with_only_new_parts_missing(tiny_checkpoint):
    enc = encoder_state(model_state(load_checkpoint(tiny_checkpoint)))
    det = tiny_vitdet(pretrain_img_size=48)  # 12 x 12 pos grid: the 8 x 8 checkpoint table is resized
    missing, unexpected = det.load_pretrained(enc)
    assert missing == sorted(f"blocks.{i}.attn.rel_pos_{a}" for i in range(4) for a in "hw")
    assert unexpected == ["cls_token"]
    sd = det.state_dict()
    assert torch.equal(sd["blocks.2.attn.qkv.weight"], enc["blocks.2.attn.qkv.weight"])
    assert torch.equal(sd["patch_embed.proj.weight"], enc["patch_embed.proj.weight"])
    torch.testing.assert_close(sd["pos_embed"], resize_abs_pos(enc["pos_embed"], (8, 8), (12, 12)))

    seg = tiny_seg(use_cls_token=True, out_norm=True)
    missing, unexpected = seg.load_pretrained(enc)
    assert unexpected == [] and torch.equal(seg.cls_token, enc["cls_token"])
    assert {k.rsplit(".", 1)[-1] for k in missing} == {"relative_position_bias_table", "gamma_1", "gamma_2",
                                                        "weight", "bias"}
    assert all(k.startswith("out_norms.") for k in missing if k.endswith(("weight", "bias")))

    bad = dict(enc, **{"blocks.1.mlp.fc1.weight": torch.zeros(10, 64)})
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc1\.weight"):
        tiny_vitdet().load_pretrained(bad)
    with pytest.raises(CheckpointError, match="decoder_pred"):
        tiny_vitdet().load_pretrained(dict(enc, **{"decoder_pred.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"blocks\.3\.norm2\.bias"):
        tiny_vitdet().load_pretrained({k: v for k, v in enc.items() if k != "blocks.3.norm2.bias"})
    # another patch size: an error naming the fix; with it, the projection is resampled
    det8 = tiny_vitdet(patch_size=8, img_size=64, pretrain_img_size=64)
    with pytest.raises(CheckpointError, match="resize_patch_embed"):
        det8.load_pretrained(enc)
    det8.load_pretrained(enc, resize_patch_embed=True)
    assert det8.patch_embed.proj.weight.shape == (64, 3, 8, 8)


def test_gradients_reach_every_parameter_and_act_checkpoint_agrees():
    torch.manual_seed(0)
    for model in (tiny_vitdet(drop_path_rate=0.0), tiny_seg(drop_path_rate=0.0, use_cls_token=True)):
        for p in model.parameters():  # make the zero-initialised tables matter
            if p.ndim == 2 and p.abs().sum() == 0:
                nn.init.normal_(p, std=0.1)
        x = torch.randn(1, 3, 24, 32)
        model.train()
        sum(f.pow(2).mean() for f in model(x)).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), \
            [n for n, g in grads.items() if g is None or g.abs().sum() == 0]
        model.zero_grad()
        model.use_act_checkpoint = True
        sum(f.pow(2).mean() for f in model(x)).backward()
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-4)


def test_drop_path_schedule_and_recipes():
    model = tiny_vitdet(drop_path_rate=0.3)
    rates = [0.0 if isinstance(b.drop_path, nn.Identity) else b.drop_path.drop_prob for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert [b.window_size for b in model.blocks] == [4, 0, 4, 0]
    assert vitdet_global_indexes(12) == (2, 5, 8, 11)
    assert vitdet_global_indexes(24) == (5, 11, 17, 23)
    assert vitdet_global_indexes(32) == (7, 15, 23, 31)
    assert seg_out_indices(12) == (3, 5, 7, 11) and seg_out_indices(24) == (7, 11, 15, 23)
    with torch.device("meta"):  # full-size recipes without allocating them
        b = DenseViT(img_size=1024, pretrain_img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                     window_size=14, global_attn_indexes=vitdet_global_indexes(12), rel_pos="decomposed",
                     drop_path_rate=0.1)  # ViTDet-B (detectron2's projects/ViTDet)
        assert b.out_indices == (11,) and b.blocks[-1].drop_path.drop_prob == pytest.approx(0.1)
        assert [i for i, blk in enumerate(b.blocks) if blk.window_size == 0] == [2, 5, 8, 11]
        assert b.blocks[0].attn.rel_pos_h.shape == (27, 64) and b.blocks[2].attn.rel_pos_h.shape == (127, 64)
        assert b.pos_embed.shape == (1, 197, 768)
        s = seg_backbone("large")
        assert s.out_indices == (7, 11, 15, 23) and s.pos_embed.shape == (1, 1 + 32 * 32, 1024)
        assert s.blocks[0].gamma_1.shape == (1024,)
        assert s.blocks[0].attn.relative_position_bias_table.shape == (63 * 63 + 3, 16)


def test_layer_decay_ids_for_a_wrapped_backbone():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = tiny_seg()
            self.head = nn.Linear(64, 2)

    groups = param_groups(Wrapper(), weight_decay=0.05, layer_decay=0.5, num_layers=4)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    assert scale["backbone.pos_embed"] == 0.5 ** 5
    assert scale["backbone.patch_embed.proj.weight"] == 0.5 ** 5
    assert scale["backbone.blocks.2.attn.relative_position_bias_table"] == 0.5 ** 2
    assert scale["backbone.blocks.0.gamma_1"] == 0.5 ** 4
    assert scale["head.weight"] == 1.0
    assert vit_layer_id("backbone.blocks.3.attn.rel_pos_h", 4) == 4
    decay = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert decay["backbone.blocks.2.attn.relative_position_bias_table"] == 0.0
    assert decay["backbone.blocks.2.attn.qkv.weight"] == 0.05
