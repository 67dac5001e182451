"""Hiera with mask units (crossmae/models/hiera.py), CrossMAE-Hiera and MAE-Hiera: parity with timm's Hiera,
mask-unit semantics against hand-built cases, the decoder's view of the encoder, the loss, the recipes."""
import pytest
import timm
import torch

from crossmae.config import PretrainConfig, load_config
from crossmae.masking import Masks, random_masking
from crossmae.models import MODELS, build_model
from crossmae.models.hiera import (HieraEncoder, random_unit_masking, reroll, unit_mask_counts, unit_patch_ids,
                                   units_to_image, unroll)

from tiny import REPO

# 32 px, 3x3/2 patch conv: 16x16 tokens, units of 4x4 tokens (a 4x4 grid of 8 px units), one q-pool:
# stages at strides 2, 4, 4 and widths 16, 32, 64; prediction patches of 4 px, 2x2 per unit
TINY_HIERA = dict(img_size=32, embed_dim=16, num_heads=1, stages=(1, 2, 1), q_pool=1, mask_unit_size=4,
                  mask_unit_attn=(True, False, False), patch_kernel=3, patch_stride=2, patch_padding=1)
TINY_DECODER = dict(decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2)


def timm_hiera(**kwargs):
    """timm's Hiera for TINY_HIERA-style arguments (ints where timm takes tuples), classifier head off."""
    pairs = ("mask_unit_size", "patch_kernel", "patch_stride", "patch_padding")
    args = {k: (v, v) if k in pairs else v for k, v in kwargs.items()}
    size = args.pop("img_size")
    return timm.models.hiera.Hiera(img_size=size if isinstance(size, tuple) else (size, size), num_classes=0,
                                   **args).eval()


def tiny_pretrainer(name="crossmae_hiera_tiny_224", **overrides):
    torch.manual_seed(0)
    return build_model(name, **{**TINY_HIERA, **TINY_DECODER, **overrides})


def unit_masks(model, n, seed=0):
    return model.sample_masks(torch.zeros(n, 3, 1, 1), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- parity with timm
@pytest.mark.parametrize("arch", ["hiera_tiny_224", "tiny"])
def test_unmasked_encoder_equals_timm_hiera_on_the_same_weights(arch):
    torch.manual_seed(0)
    if arch == "tiny":
        ours, ref, size = HieraEncoder(**TINY_HIERA), timm_hiera(**TINY_HIERA), 32
    else:  # the real Hiera-T (timm's default q_pool 3, and 2 as in the MAE recipe), random weights
        q_pool = 2 if arch.endswith("qpool2") else 3
        ours = HieraEncoder(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), q_pool=q_pool)
        ref, size = timm.create_model("hiera_tiny_224", pretrained=False, num_classes=0, q_pool=q_pool).eval(), 224
    ours.eval()
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours_maps = ours.forward_feature_maps(x)
        _, ref_maps = ref.forward_intermediates(x)
        assert len(ours_maps) == len(ref_maps) == len(ours.stages)
        for a, b, info in zip(ours_maps, ref_maps, ours.feature_info):
            assert a.shape == b.shape and a.shape[1] == info["num_chs"] and size // a.shape[-1] == info["reduction"]
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.pooled_features(x), ref.forward_features(x).mean(dim=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["crossmae_hiera_tiny_224", "mae_hiera_tiny_224"])
def test_encoder_of_a_pretraining_model_loads_into_timm_hiera(name):
    """The toolkit's encoder_state (what det / seg / classification take from a checkpoint) of a Hiera
    pretraining model is exactly timm's Hiera without its head, with the same features."""
    from crossmae.engine import encoder_state
    model = tiny_pretrainer(name).eval()
    ref = timm_hiera(**TINY_HIERA)
    missing, unexpected = ref.load_state_dict(encoder_state(model.state_dict()), strict=False)
    assert not unexpected and sorted(missing) == ["head.norm.bias", "head.norm.weight"], (missing, unexpected)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(model.forward_feature_maps(x), ref.forward_intermediates(x)[1]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["hiera_tiny_224_qpool2", "tiny"])
def test_masked_encoder_equals_timm_hiera_masked_forward(arch):
    """timm's masked forward is the reference MAE-Hiera's encoder (``super().forward(x, mask, ...)``)."""
    torch.manual_seed(0)
    if arch == "tiny":
        ours, ref, size = HieraEncoder(**TINY_HIERA), timm_hiera(**TINY_HIERA), 32
    else:
        ours = HieraEncoder(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), q_pool=2)
        ref, size = timm.create_model("hiera_tiny_224", pretrained=False, num_classes=0, q_pool=2).eval(), 224
    ours.eval()
    ref.load_state_dict(ours.state_dict(), strict=False)
    u = ours.num_units
    keep = torch.tensor([[0, 3, u - 1], [1, 2, u // 2]]).sort(dim=1).values  # 3 visible units per image
    mask = torch.zeros(2, u, dtype=torch.bool).scatter_(1, keep, True)  # timm: True = keep
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours_stages = ours.forward_stages(x, keep)
        _, ref_stages = ref.forward_features(x, mask=mask, return_intermediates=True)
    for a, b in zip(ours_stages, ref_stages):
        assert a.shape == b.shape and a.shape[1] == 3
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("half", ["bottom", "right"])
def test_masked_forward_equals_hiera_run_on_the_visible_half(half):
    """Hand-built case: keeping one half of the units must give what Hiera gives when the visible half is
    the whole input (its own position embeddings, zero padding where the masked half was). The 3x3/2 patch
    conv of the first token row/column of that half reads the last pixel row/column of the masked half:
    the masked pixels must be zeroed, not merely their tokens dropped."""
    torch.manual_seed(0)
    ours = HieraEncoder(**TINY_HIERA).eval()
    gh, gw = ours.unit_grid
    units = torch.arange(gh * gw).view(gh, gw)
    keep = (units[gh // 2:] if half == "bottom" else units[:, gw // 2:]).reshape(1, -1)
    crop_size = (16, 32) if half == "bottom" else (32, 16)
    ref = timm_hiera(**{**TINY_HIERA, "img_size": crop_size})
    state = ours.state_dict()
    pos = state["pos_embed"].view(1, 16, 16, -1)  # the 16x16 token grid
    pos = pos[:, 8:] if half == "bottom" else pos[:, :, 8:]
    state["pos_embed"] = pos.reshape(1, -1, pos.shape[-1])
    ref.load_state_dict(state, strict=False)
    x = torch.randn(1, 3, 32, 32)
    crop = x[:, :, 16:] if half == "bottom" else x[:, :, :, 16:]
    grid = (gh // 2, gw) if half == "bottom" else (gh, gw // 2)
    with torch.no_grad():
        ours_maps = [units_to_image(s, grid) for s in ours.forward_stages(x, keep)]
        _, ref_maps = ref.forward_intermediates(crop)  # NCHW: timm 1.0.3 (our lower bound) has no NHWC here
        ref_maps = [m.permute(0, 2, 3, 1) for m in ref_maps]
    for a, b in zip(ours_maps, ref_maps):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- mask units
def test_mask_units_cover_the_image_exactly_once():
    enc = HieraEncoder(**TINY_HIERA)
    gh, gw = enc.unit_grid
    # pixels: the units' pixel masks, one unit at a time, add up to exactly one everywhere
    one_at_a_time = torch.stack([enc.pixel_mask(torch.tensor([[u]])) for u in range(gh * gw)])
    assert torch.equal(one_at_a_time.sum(0), torch.ones(1, 1, 32, 32))
    assert all(int(m.sum()) == 8 * 8 for m in one_at_a_time)  # 8 x 8 px each
    # unit u's pixels are the 8x8 block at (u // gw, u % gw), by hand
    for u in (0, 1, gw, gh * gw - 1):
        block = torch.zeros(32, 32)
        block[(u // gw) * 8:(u // gw + 1) * 8, (u % gw) * 8:(u % gw + 1) * 8] = 1
        assert torch.equal(one_at_a_time[u, 0, 0], block)
    # tokens: unrolling an image of token indices puts every token in exactly one unit, the right one
    idx = torch.arange(16 * 16, dtype=torch.float).view(1, 16, 16, 1)
    tokens = unroll(idx, unit=4, stride=2, steps=1).view(-1, gh * gw)  # [T, U]
    assert torch.equal(tokens.flatten().sort().values, torch.arange(256.0))
    for u in range(gh * gw):
        rows, cols = tokens[:, u].long() // 16, tokens[:, u].long() % 16
        assert set((rows // 4).tolist()) == {u // gw} and set((cols // 4).tolist()) == {u % gw}
    # patches: the prediction grid (2x2 patches per unit) is covered exactly once
    ids = unit_patch_ids((gh, gw), 2)
    assert torch.equal(ids.flatten().sort().values, torch.arange(64))
    assert ids[1].tolist() == [2, 3, 10, 11]  # unit 1 = patches (0, 2), (0, 3), (1, 2), (1, 3) of the 8x8 grid


def test_unroll_pools_2x2_neighbourhoods_and_reroll_inverts_it():
    x = torch.randn(2, 16, 16, 3)
    flat = unroll(x, unit=8, stride=2, steps=2)  # 2x2 units of 8x8 tokens, two pooling levels
    pooled = flat.view(2, 4, -1, 3).amax(dim=1)  # what a q-pool does: a max over the leading block
    by_hand = x.view(2, 8, 2, 8, 2, 3).amax(dim=(2, 4))  # 2x2 max pooling of the image
    assert torch.equal(units_to_image(reroll(pooled, 4, 4, 2, 1), (2, 2)), by_hand)
    assert torch.equal(units_to_image(reroll(flat, 4, 8, 2, 2), (2, 2)), x)


@pytest.mark.parametrize("units,side,mask_ratio,pred_ratio,visible,predicted", [
    (16, 2, 0.6, 0.6, 6, 40),  # int(16 * 0.4) = 6 units visible; 10 masked units = 40 patches, all predicted
    (16, 2, 0.6, 0.25, 6, 18),  # 40 - int(64 * 0.35) = 40 - 22
    (49, 2, 0.6, 0.6, 19, 120),  # Hiera's 224 px recipe: int(49 * 0.4) = 19 units visible (as its get_random_mask)
])
def test_unit_mask_counts_and_random_unit_masks(units, side, mask_ratio, pred_ratio, visible, predicted):
    assert unit_mask_counts(units, side * side, mask_ratio, pred_ratio) == (visible, predicted)
    grid = (int(units ** 0.5),) * 2
    m = random_unit_masking(3, grid, side, mask_ratio, pred_ratio, generator=torch.Generator().manual_seed(0))
    assert m.ids_keep.shape == (3, visible * side * side) and m.ids_pred.shape == (3, predicted)
    ids = unit_patch_ids(grid, side)
    for i in range(3):
        keep, pred = set(m.ids_keep[i].tolist()), set(m.ids_pred[i].tolist())
        assert not keep & pred
        assert sum(set(ids[u].tolist()) <= keep for u in range(units)) == visible  # whole units
        # ids_restore inverts [visible, masked only, predicted]
        order = m.ids_restore[i].argsort()
        assert set(order[:len(keep)].tolist()) == keep and set(order[-predicted:].tolist()) == pred


def test_masks_that_split_a_mask_unit_are_refused():
    model = tiny_pretrainer()
    split = random_masking(2, model.num_patches, 0.75, 0.75, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="whole mask units"):
        model(torch.randn(2, 3, 32, 32), split)


# ----------------------------------------------------------------------------- the decoders' view
@pytest.mark.parametrize("name,inter_block", [("crossmae_hiera_tiny_224", "stages"),
                                              ("crossmae_hiera_tiny_224", "middle"),
                                              ("crossmae_hiera_tiny_224", "none"), ("mae_hiera_tiny_224", None)])
def test_decoder_never_attends_to_masked_units(name, inter_block):
    model = tiny_pretainer_for(name, inter_block).eval()
    masks = unit_masks(model, 2)
    visible_units = model.visible_units(masks)
    imgs = torch.randn(2, 3, 32, 32)
    noisy = imgs.clone()
    hidden = (1 - model.pixel_mask(visible_units)).bool().expand_as(imgs)
    noisy[hidden] = torch.randn(int(hidden.sum())) * 10  # every masked pixel replaced
    with torch.no_grad():
        memory, memory_noisy = model.decoder_memory(imgs, masks), model.decoder_memory(noisy, masks)
        pred, pred_noisy = model(imgs, masks).pred, model(noisy, masks).pred
    tokens_per_unit = model.units_side ** 2
    for m, mn in zip(memory if isinstance(memory, list) else [memory],
                     memory_noisy if isinstance(memory_noisy, list) else [memory_noisy]):
        assert m.shape[1] == visible_units.shape[1] * tokens_per_unit  # keys: the visible units' tokens only
        assert torch.equal(m, mn)
    assert torch.equal(pred, pred_noisy)
    if name.startswith("crossmae"):  # the queries' attention covers exactly those keys
        queries = model.decoder_queries(masks)
        attn = model.decoder_blocks[0].cross_attn.attention_map(model.decoder_blocks[0].norm1(queries), memory[0])
        assert attn.shape == (2, 2, masks.ids_pred.shape[1], visible_units.shape[1] * tokens_per_unit)


def tiny_pretainer_for(name, inter_block):
    return tiny_pretrainer(name, **({} if inter_block is None else {"inter_block": inter_block}))


@pytest.mark.parametrize("name", ["crossmae_hiera_tiny_224", "mae_hiera_tiny_224"])
def test_loss_counts_only_predicted_patches(name):
    extra = {"pred_ratio": 0.25} if name.startswith("crossmae") else {}
    model = tiny_pretrainer(name, norm_pix_loss=True, **extra)
    masks = unit_masks(model, 2)
    imgs = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(imgs, masks)
    out.loss.backward()
    visible = masks.visible_mask
    predicted = masks.pred_mask.bool()
    if name.startswith("mae"):
        assert torch.equal(predicted, ~visible)  # MAE-Hiera predicts every masked patch
    else:
        assert predicted.sum() == 2 * 18  # 40 masked patches - int(64 * 0.35)
    # a patch's gradient: the predicted ones through the target, the visible ones through the encoder
    grad = imgs.grad.view(2, 3, 8, 4, 8, 4).abs().sum(dim=(1, 3, 5)).flatten(1)  # [N, 64] patches of 4 px
    assert torch.all(grad[~visible & ~predicted] == 0) and torch.all(grad[predicted] > 0)
    # the loss by hand: per predicted patch, its pixels normalised by their own mean / variance
    expected = []
    for i in range(2):
        for j, patch_id in enumerate(masks.ids_pred[i].tolist()):
            r, c = divmod(patch_id, 8)
            target = imgs[i, :, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4].detach().permute(1, 2, 0).flatten()
            target = (target - target.mean()) / (target.var() + 1e-6) ** 0.5
            expected.append(((out.pred[i, j].detach() - target) ** 2).mean())
    torch.testing.assert_close(out.loss.detach(), torch.stack(expected).mean())


# ----------------------------------------------------------------------------- inter-block mix, MAE-Hiera
def test_inter_block_designs_read_the_intended_features():
    stages = tiny_pretrainer(inter_block="stages", decoder_depth=3)
    assert stages.mix_sources == [0, 2, 3]  # the three stage ends of stages (1, 2, 1)
    assert stages.wfm.linear.weight.shape == (3, 3)
    assert stages.fuse["0"].kernel_size == (2, 2) and stages.fuse["0"].in_channels == 16  # 4x4 tokens -> 2x2
    assert stages.fuse["1"].kernel_size == (1, 1) and stages.fuse["1"].in_channels == 32  # width only
    assert isinstance(stages.fuse["2"], torch.nn.Identity)
    middle = tiny_pretrainer(inter_block="middle", decoder_depth=3)
    assert middle.mix_sources == [1, 2, 3]  # every block after the q-pool (stride 4): stage 2's and stage 3's
    assert set(middle.fuse) == {"1", "2"}
    for model in (stages, middle):
        masks = unit_masks(model, 2)
        memory = model.decoder_memory(torch.randn(2, 3, 32, 32), masks)
        assert len(memory) == 3 and not torch.allclose(memory[0], memory[1])  # each decoder block its own mix
        model(torch.randn(2, 3, 32, 32), masks).loss.backward()
        for i, blk in enumerate(model.blocks):
            assert blk.mlp.fc2.weight.grad.abs().sum() > 0, f"encoder block {i} got no gradient"
        assert torch.all(model.wfm.linear.weight.grad != 0)


def test_mae_hiera_fuses_stages_and_places_tokens_like_the_reference():
    """The reference's encoder output: the fusion heads on the stages before the last pool plus the last stage
    (timm's masked intermediates here), summed, normed; the decoder gets each visible token at its patch
    (row-major over the 8x8 prediction grid) and the mask token elsewhere, plus the position embedding."""
    model = tiny_pretrainer("mae_hiera_tiny_224").eval()
    ref = timm_hiera(**TINY_HIERA)
    ref.load_state_dict({k: v for k, v in model.state_dict().items()
                         if k.startswith(("patch_embed.", "blocks.", "pos_embed"))}, strict=False)
    masks = unit_masks(model, 2)
    keep = model.visible_units(masks)
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        mask = torch.zeros(2, 16, dtype=torch.bool).scatter_(1, keep, True)
        _, inter = ref.forward_features(imgs, mask=mask, return_intermediates=True)
        head0 = model.multi_scale_fusion_heads[0]  # stage 1 (4x4 tokens per unit) -> 2x2, width 16 -> 64
        n, u = inter[0].shape[:2]
        s0 = head0(inter[0].reshape(n * u, 4, 4, 16).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(n, u, 2, 2, 64)
        expected = model.encoder_norm(s0 + inter[2]).flatten(1, 3)  # stage 2 skipped: same grid as stage 3
        latent = model.decoder_memory(imgs, masks)
        torch.testing.assert_close(latent, expected, rtol=1e-5, atol=1e-6)
        tokens = model.decoder_tokens(latent, masks) - model.decoder_pos_embed
        embedded = model.decoder_embed(latent).view(2, -1, 2, 2, 32)
    for i in range(2):
        for j, unit in enumerate(keep[i].tolist()):
            for a in range(2):
                for b in range(2):
                    patch = ((unit // 4) * 2 + a) * 8 + (unit % 4) * 2 + b
                    torch.testing.assert_close(tokens[i, patch], embedded[i, j, a, b])
        hidden = ~masks.visible_mask[i]
        torch.testing.assert_close(tokens[i, hidden], model.mask_token[0].expand(int(hidden.sum()), -1))


# ----------------------------------------------------------------------------- sizes, errors, recipes
def test_factories_match_hiera_sizes():
    # widths per stage, heads per stage, blocks per stage: the Hiera paper's Table 2 (= timm's hiera_*_224)
    table = {"tiny": ([96, 192, 384, 768], [1, 2, 4, 8], (1, 2, 7, 2)),
             "small": ([96, 192, 384, 768], [1, 2, 4, 8], (1, 2, 11, 2)),
             "base": ([96, 192, 384, 768], [1, 2, 4, 8], (2, 3, 16, 3)),
             "base_plus": ([112, 224, 448, 896], [2, 4, 8, 16], (2, 3, 16, 3)),
             "large": ([144, 288, 576, 1152], [2, 4, 8, 16], (2, 6, 36, 4))}
    for size, (widths, heads, stages) in table.items():
        with torch.device("meta"):
            models = [MODELS[f"crossmae_hiera_{size}_224"](), MODELS[f"mae_hiera_{size}_224"]()]
        for model in models:
            ends = [sum(stages[:i + 1]) - 1 for i in range(4)]
            assert [model.blocks[e].dim_out for e in ends] == widths, size
            assert [model.blocks[e].attn.heads for e in ends] == heads, size
            assert len(model.blocks) == sum(stages)
            # MAE recipe: 7x7 units of 32 px, q_pool 2 -> 16 px prediction patches, 14x14 of them
            assert (model.num_units, model.patch_size, model.grid_size) == (49, 16, (14, 14))
            assert model.decoder_pred.in_features == 512 and len(model.decoder_blocks) == 8
            assert model.mask_ratio == 0.6


@pytest.mark.parametrize("kwargs,match", [
    (dict(img_size=30), "img_size"), (dict(q_pool=3), "q_pool"), (dict(mask_unit_attn=(True, False)), "mask_unit_attn"),
    (dict(inter_block="all"), "inter_block"), (dict(mask_ratio=0.99), "visible units"),
    (dict(pred_ratio=0.7), "pred_ratio"), (dict(mask_unit_size=3), "mask_unit_size"), (dict(stages=(1, 0, 1)), "stages"),
    (dict(pos_embed_init="zeros"), "pos_embed_init")])
def test_bad_hiera_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model("crossmae_hiera_tiny_224", **{**TINY_HIERA, **TINY_DECODER, **kwargs})


def test_sincos_position_start():
    """pos_embed_init="sincos" starts the learned table at MAE's 2-D sin-cos values (by hand: the first half of
    the channels encodes the column, the second half the row; channel 0 of each half is sin(position))."""
    enc = HieraEncoder(**TINY_HIERA, pos_embed_init="sincos")  # 16 x 16 tokens, width 16
    pe = enc.pos_embed.detach()[0]
    assert enc.pos_embed.requires_grad
    assert pe[1, 0] == pytest.approx(torch.sin(torch.tensor(1.0)).item())  # token (0, 1): column 1
    assert pe[16, 8] == pytest.approx(torch.sin(torch.tensor(1.0)).item())  # token (1, 0): row 1
    assert pe[3 * 16 + 5, 0] == pytest.approx(torch.sin(torch.tensor(5.0)).item()) and pe[0].abs().max() == 1.0
    assert HieraEncoder(**TINY_HIERA).pos_embed.detach().abs().max() < 0.1  # Hiera's default: trunc. normal 0.02


def test_hiera_recipes_load_and_build():
    recipes = sorted((REPO / "configs/pretrain").glob("*_hiera_*.yaml"))
    names = {p.stem for p in recipes}
    for fam in ("crossmae", "mae"):
        assert {f"{fam}_hiera_{s}" for s in ("tiny", "small", "base", "base_plus", "large", "demo")} <= names
    for path in recipes:
        cfg = load_config(PretrainConfig, path)
        assert cfg.model["name"] in MODELS and cfg.model["mask_ratio"] == 0.6, path.name
        if path.stem.endswith("_demo"):  # built (the full sizes are built in test_factories_match_hiera_sizes)
            kwargs = dict(cfg.model)
            assert build_model(kwargs.pop("name"), **kwargs).patch_embed.img_size == (32, 32)
        else:  # the Hiera paper's IN1K MAE recipe (docs/hiera.md)
            assert cfg.epochs == 1600 and cfg.global_batch_size == 4096 and cfg.optim.warmup_epochs == 40
            assert cfg.optim.blr * 4096 / 256 == pytest.approx(8e-4) and cfg.model["norm_pix_loss"]



@pytest.mark.slow  # 10-20 s each on a loaded 2-core machine
@pytest.mark.parametrize("config,decoder", [("crossmae_hiera_demo", "CrossMAEHiera"), ("mae_hiera_demo", "MAEHiera")])
def test_pretrain_command_trains_hiera_and_knn_reads_its_encoder(tmp_path, config, decoder):
    """``crossmae pretrain`` on the Hiera demo recipe (shrunk to one short epoch): checkpoint, results, the
    reconstruction figure and the kNN monitor (mean of the last stage's tokens) all go through."""
    import json

    from crossmae.cli import main as cli
    shrink = ["model.embed_dim=16", "model.stages=[1,1,1]", "model.decoder_embed_dim=32", "model.decoder_depth=1",
              "epochs=1", "data.num_workers=0", "num_vis=2", "knn.every=1", "knn.train_images=64",
              "knn.val_images=32"]
    out = tmp_path / "run"
    assert cli(["pretrain", "--config", str(REPO / f"configs/pretrain/{config}.yaml"), f"output_dir={out}",
                *shrink]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["decoder"] == decoder and results["mask_ratio"] == 0.6
    assert "Hiera 16w/1-1-1/p4 32px" in results["model"]
    assert 0 <= results["metrics"]["knn_top1"] <= 100
    assert (out / "reconstruction.png").stat().st_size > 1000 and (out / "checkpoint.pth").is_file()
