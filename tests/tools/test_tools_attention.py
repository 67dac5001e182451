"""Attention mass (hand-built case with a known answer) and the attention maps read from the models."""
from __future__ import annotations

import pytest
import torch
from tools_fixtures import tiny_crossmae, tiny_mae

from crossmae.analysis.attention import (attention_mass, crossmae_query_maps, dataset_attention_mass,
                                         mae_decoder_attention, masks_with_query, query_distance_stats,
                                         self_attention_map)
from crossmae.models.blocks import SelfAttention


def hand_built():
    """One image, 2 heads, 4 patches (+ cls): patches 0 and 3 visible, 1 and 2 masked.

    Mask queries are tokens 2 and 3 (patches 1, 2). Keys: [cls, p0, p1, p2, p3].
      head 0, query p1: [0.1, 0.4, 0.1, 0.2, 0.2] -> visible 0.6, masked 0.3, cls 0.1
      head 0, query p2: [0.0, 0.2, 0.3, 0.3, 0.2] -> visible 0.4, masked 0.6, cls 0.0
      head 1: uniform 0.2                          -> visible 0.4, masked 0.4, cls 0.2 (both queries)
    Means over queries and heads: visible 0.45, masked 0.425, cls 0.125.
    Per key (2 visible keys, 2 masked keys, 1 cls): 0.225, 0.2125, 0.125; paper = per key x 2 heads."""
    attn = torch.zeros(1, 2, 5, 5)
    attn[:, :, :, 0] = 1.0  # cls and visible-patch queries: everything on cls (must not count)
    attn[0, 0, 2] = torch.tensor([0.1, 0.4, 0.1, 0.2, 0.2])
    attn[0, 0, 3] = torch.tensor([0.0, 0.2, 0.3, 0.3, 0.2])
    attn[0, 1, 2] = attn[0, 1, 3] = 0.2
    visible = torch.tensor([[True, False, False, True]])
    return attn, visible


def test_attention_mass_known_answer():
    attn, visible = hand_built()
    out = {k: float(v[0]) for k, v in attention_mass(attn, visible).items()}
    expected = {"mass/visible": 0.45, "mass/masked": 0.425, "mass/cls": 0.125,
                "per_key/visible": 0.225, "per_key/masked": 0.2125, "per_key/cls": 0.125,
                "paper/visible": 0.45, "paper/masked": 0.425, "paper/cls": 0.25}
    assert out == pytest.approx(expected, abs=1e-6)
    # rows of the cls query and of visible queries do not enter
    attn2 = attn.clone()
    attn2[0, :, 1] = torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0])
    attn2[0, :, 4] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])
    assert {k: float(v[0]) for k, v in attention_mass(attn2, visible).items()} == pytest.approx(expected, abs=1e-6)


def test_attention_mass_per_image_and_shape_errors():
    attn, visible = hand_built()
    other = torch.full((1, 2, 5, 5), 0.2)  # uniform: every patch key gets 0.2
    out = attention_mass(torch.cat([attn, other]), torch.cat([visible, torch.tensor([[True, True, True, False]])]))
    assert out["mass/visible"].tolist() == pytest.approx([0.45, 0.6])  # image 2: one mask query, 3 visible keys
    assert out["mass/masked"].tolist() == pytest.approx([0.425, 0.2])  # its own key only
    with pytest.raises(ValueError, match="does not fit"):
        attention_mass(attn, torch.ones(1, 3, dtype=torch.bool))


def test_self_attention_map_is_what_sdpa_computes():
    torch.manual_seed(0)
    attn = SelfAttention(32, 4)
    x = torch.randn(2, 7, 32)
    weights = self_attention_map(attn, x)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 7), atol=1e-5)
    v = attn.qkv(x).reshape(2, 7, 3, 4, 8).permute(2, 0, 3, 1, 4)[2]
    manual = attn.proj((weights @ v).transpose(1, 2).reshape(2, 7, 32))
    assert torch.allclose(manual, attn(x), atol=1e-5)


def test_mae_attention_mass_over_batches():
    torch.manual_seed(0)
    model = tiny_mae().eval()
    imgs = torch.randn(6, 3, 32, 32)
    masks = model.sample_masks(imgs)
    maps = mae_decoder_attention(model, imgs, masks)
    assert len(maps) == 3 and maps[0].shape == (6, 4, 65, 65)
    result = dataset_attention_mass(model, [(imgs[:4], None), (imgs[4:], None)], progress=False)
    assert result["num_images"] == 6 and len(result["blocks"]) == 3
    for b in result["blocks"]:
        assert b["mass/visible"] + b["mass/masked"] + b["mass/cls"] == pytest.approx(1.0, abs=1e-5)
        # 16 visible and 48 masked keys, 4 heads
        assert b["paper/visible"] == pytest.approx(4 * b["mass/visible"] / 16, rel=1e-5)
        assert b["paper/masked"] == pytest.approx(4 * b["mass/masked"] / 48, rel=1e-5)
    assert result["sum_over_blocks"]["paper/visible"] == pytest.approx(
        sum(b["paper/visible"] for b in result["blocks"]))
    with pytest.raises(TypeError, match="MAE"):
        mae_decoder_attention(tiny_crossmae(), imgs, masks)


def test_crossmae_query_maps():
    torch.manual_seed(0)
    model = tiny_crossmae(pred_ratio=0.25).eval()
    imgs = torch.randn(3, 3, 32, 32)
    masks = masks_with_query(3, 64, 0.75, 0.25, query=27, generator=torch.Generator().manual_seed(0))
    assert bool((masks.ids_pred == 27).any(1).all()) and masks.ids_pred.shape == (3, 16)
    assert int(masks.visible_mask.sum()) == 3 * 16 and not bool(masks.visible_mask[:, 27].any())
    maps = crossmae_query_maps(model, imgs, masks, query=27)
    assert maps.shape == (2, 3, 8, 8)
    flat = maps.flatten(2)
    assert torch.equal(~flat.isnan(), masks.visible_mask.unsqueeze(0).expand(2, -1, -1))  # keys = visible patches
    patch_weight = flat.nan_to_num(0).sum(-1)
    assert bool((patch_weight > 0).all()) and bool((patch_weight < 1).all())  # the rest is on cls
    stats = query_distance_stats(maps, 27, 8)
    assert len(stats["mean_distance"]) == 2 and all(0 < d < 8 * 2 ** 0.5 for d in stats["mean_distance"])
    visible_patch = int(masks.ids_keep[0, 0])  # visible in image 0, so not a query there
    with pytest.raises(ValueError, match="not predicted"):
        crossmae_query_maps(model, imgs, masks, query=visible_patch)
