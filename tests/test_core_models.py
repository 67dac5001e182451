import argparse

import pytest
import timm
import torch

from crossmae.engine import encoder_state, load_checkpoint, model_state
from crossmae.masking import random_masking
from crossmae.models import MODELS, build_model
from crossmae.models.blocks import CrossAttention
from crossmae.models.crossmae import reconstruction_loss
from crossmae.models.pos_embed import patchify, sincos_2d, unpatchify

from tiny import TINY_CROSSMAE, tiny_model


def fixed_masks(model, n, seed=0):
    return random_masking(n, model.num_patches, model.mask_ratio, model.pred_ratio,
                          generator=torch.Generator().manual_seed(seed))


def test_factories_match_paper_sizes():
    # (width, depth, heads, patch, decoder width, decoder heads): the paper's Table 10 and the release's defaults
    for name, (dim, depth, heads, patch, dec_dim, dec_heads) in {
            "small": (384, 12, 6, 16, 256, 8), "base": (768, 12, 12, 16, 512, 16),
            "large": (1024, 24, 16, 16, 512, 16), "huge": (1280, 32, 16, 14, 512, 16)}.items():
        with torch.device("meta"):  # full-size models without allocating their weights
            m = MODELS[f"crossmae_vit_{name}_patch{patch}"](img_size=2 * patch)
            mae = MODELS[f"mae_vit_{name}_patch{patch}"](img_size=2 * patch)
        for model in (m, mae):
            assert (model.embed_dim, model.patch_size, len(model.blocks)) == (dim, patch, depth), name
            assert {b.attn.num_heads for b in model.blocks} == {heads}, name
            assert model.decoder_pred.in_features == dec_dim, name
        assert {b.cross_attn.num_heads for b in m.decoder_blocks} == {dec_heads}
        assert len(m.decoder_blocks) == 12  # the released models' decoder depth
        assert len(mae.decoder_blocks) == 8  # MAE's


def test_patchify_roundtrip_and_sincos():
    x = torch.randn(2, 3, 32, 48)
    assert torch.equal(unpatchify(patchify(x, 8), 8, 4, 6), x)
    emb = sincos_2d(16, 3, 5, cls_token=True)
    assert emb.shape == (16, 16) and torch.all(emb[0] == 0)
    # first half of the channels encodes the column, second half the row (MAE's layout)
    assert torch.allclose(emb[1 + 0 * 5 + 2, :8], emb[1 + 2 * 5 + 2, :8])
    assert torch.allclose(emb[1 + 1 * 5 + 0, 8:], emb[1 + 1 * 5 + 4, 8:])


def test_loss_only_touches_predicted_patches():
    torch.manual_seed(0)
    model = tiny_model(mask_ratio=0.75, pred_ratio=0.25, norm_pix_loss=True)
    imgs = torch.randn(2, 3, 32, 32, requires_grad=True)
    masks = fixed_masks(model, 2)
    model(imgs, masks).loss.backward()
    grad = patchify(imgs.grad, 4).abs().sum(-1)  # [N, L]
    masked_unpredicted = ~masks.visible_mask & (masks.pred_mask == 0)
    assert masked_unpredicted.sum() == 2 * 32  # 64 patches: 16 visible, 16 predicted, 32 neither
    assert torch.all(grad[masked_unpredicted] == 0)
    assert torch.all(grad[masks.pred_mask.bool()] > 0)
    # and the loss itself: changing unpredicted target pixels changes nothing
    pred = torch.randn(2, 16, 48)
    a = reconstruction_loss(imgs.detach(), pred, masks.ids_pred, 4, False)
    noisy = patchify(imgs.detach(), 4).clone()
    noisy[masked_unpredicted] += 5.0
    b = reconstruction_loss(unpatchify(noisy, 4, 8, 8), pred, masks.ids_pred, 4, False)
    assert torch.equal(a, b)


def test_inter_block_mix_shapes_and_every_encoder_block_gets_gradient():
    torch.manual_seed(0)
    model = tiny_model(decoder_depth=3)
    assert model.norm is None and model.wfm.linear.weight.shape == (3, TINY_CROSSMAE["depth"] + 1)
    imgs = torch.randn(2, 3, 32, 32)
    masks = fixed_masks(model, 2)
    memory = model.decoder_memory(imgs, masks)
    assert len(memory) == 3 and all(m.shape == (2, 1 + 16, 64) for m in memory)
    model(imgs, masks).loss.backward()
    for i, blk in enumerate(model.blocks):
        assert blk.mlp.fc2.weight.grad.abs().sum() > 0, f"encoder block {i} got no gradient"
    assert torch.all(model.wfm.linear.weight.grad != 0)
    # each decoder block reads its own mix
    assert not torch.allclose(memory[0], memory[1])


def test_plain_variant_reads_normed_last_layer():
    torch.manual_seed(0)
    model = tiny_model(inter_block=False)
    assert not hasattr(model, "wfm") and model.norm is not None
    imgs = torch.randn(2, 3, 32, 32)
    masks = fixed_masks(model, 2)
    memory = model.decoder_memory(imgs, masks)
    assert all(m is memory[0] for m in memory)
    assert torch.allclose(memory[0], model.forward_features(imgs, masks.ids_keep))
    assert torch.isfinite(model(imgs, masks).loss)


def test_decoder_self_attention_option_and_sdpa_matches_explicit_attention():
    torch.manual_seed(0)
    model = tiny_model(decoder_self_attn=True)
    assert hasattr(model.decoder_blocks[0], "self_attn")
    assert torch.isfinite(model(torch.randn(2, 3, 32, 32)).loss)
    attn = CrossAttention(64, 32, 4)
    x, y = torch.randn(2, 5, 32), torch.randn(2, 7, 64)
    q, k, v = attn.split_heads(x, y)
    explicit = (attn.attention_map(x, y) @ v).transpose(1, 2).reshape(2, 5, 32)
    assert torch.allclose(attn(x, y), attn.proj(explicit), atol=1e-5)


def test_mae_baseline_runs_and_predicts_every_masked_patch():
    torch.manual_seed(0)
    model = build_model("mae_vit_small_patch16", img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4,
                        decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.pred.shape == (2, 48, 48) and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.decoder_embed.weight.grad.abs().sum() > 0


def test_encoder_loads_into_timm_vit_and_gives_the_same_features():
    torch.manual_seed(0)
    mae = build_model("mae_vit_small_patch16", img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4,
                      decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, patch_size=4, embed_dim=64,
                            depth=2, num_heads=4, num_classes=0, global_pool="token")
    vit.load_state_dict(encoder_state(mae.state_dict()), strict=True)
    imgs = torch.randn(2, 3, 32, 32)
    ids_all = torch.arange(64).expand(2, -1)
    assert torch.allclose(mae.forward_features(imgs, ids_all), vit.forward_features(imgs), atol=1e-5)
    # CrossMAE with inter-block attention has no final norm: only timm's head parts are missing
    ours = encoder_state(tiny_model().state_dict())
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, patch_size=4, embed_dim=64,
                            depth=4, num_heads=4, num_classes=10, global_pool="avg", fc_norm=True)
    result = vit.load_state_dict(ours, strict=False)
    assert sorted(result.missing_keys) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert result.unexpected_keys == []


# the official release's key names (models_cross.py / transformer_utils.py), checked one by one
OFFICIAL_KEYS = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                 "blocks.0.norm1.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
                 "blocks.0.norm2.bias", "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.bias",
                 "dec_norms.0.weight", "wfm.linear.weight", "mask_token", "decoder_pos_embed",
                 "decoder_blocks.0.norm1.weight", "decoder_blocks.0.cross_attn.q.weight",
                 "decoder_blocks.0.cross_attn.kv.weight", "decoder_blocks.0.cross_attn.proj.bias",
                 "decoder_blocks.0.norm2.weight", "decoder_blocks.0.mlp.fc1.weight", "decoder_norm.weight",
                 "decoder_pred.weight", "decoder_pred.bias"]


def test_official_release_checkpoint_format_loads_without_renaming(tmp_path):
    model = tiny_model()
    keys = set(model.state_dict())
    assert set(OFFICIAL_KEYS) <= keys
    assert all(k.split(".")[0] in {"cls_token", "pos_embed", "patch_embed", "blocks", "dec_norms", "wfm",
                                   "mask_token", "decoder_pos_embed", "decoder_blocks", "decoder_norm",
                                   "decoder_pred"} for k in keys)
    # the release saves argparse args and optimizer state next to the model
    release = {"model": model.state_dict(), "optimizer": {}, "epoch": 799, "scaler": {},
               "args": argparse.Namespace(model="mae_vit_small_patch16", cross_mae=True, weight_fm=True)}
    torch.save(release, tmp_path / "release.pth")
    fresh = tiny_model()
    fresh.load_state_dict(model_state(load_checkpoint(tmp_path / "release.pth")), strict=True)
    assert torch.equal(fresh.wfm.linear.weight, model.wfm.linear.weight)


@pytest.mark.parametrize("kwargs,match", [
    (dict(pred_ratio=0.9), "pred_ratio"), (dict(mask_ratio=1.0), "mask_ratio"), (dict(img_size=30), "divisible"),
    (dict(not_an_arg=1), "not_an_arg")])
def test_bad_model_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(**kwargs)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'crossmae_vit_gigantic'.*available"):
        build_model("crossmae_vit_gigantic")


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected images of shape \[N, 3, 32, 32\]"):
        tiny_model()(torch.randn(1, 3, 64, 64))


def test_torch_hub_entry_loads_a_checkpoint(tiny_checkpoint):
    from tiny import REPO
    kwargs = {k: v for k, v in TINY_CROSSMAE.items() if k != "name"}
    model = torch.hub.load(str(REPO), "crossmae_vit_small_patch16", source="local", checkpoint=str(tiny_checkpoint),
                           **kwargs)
    expected = model_state(load_checkpoint(tiny_checkpoint))
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
