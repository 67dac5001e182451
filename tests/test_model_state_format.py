"""The four pretraining models keep their tensors' names and order: checkpoints (ours and the official
releases') load by name, and a resumed optimizer state addresses parameters by their position in
``named_parameters()`` (only the trainable ones), so a reordering would silently pair Adam moments with
the wrong tensors. Expected orders written from the modules' registration order (own parameters first, then
submodules), as in the releases' models_cross.py / models_mae.py and MAE-Hiera."""
import pytest
import torch

from crossmae.models import build_model

from tiny import TINY_CROSSMAE

VIT = {k: v for k, v in TINY_CROSSMAE.items() if k != "name"}
HIERA = dict(img_size=32, embed_dim=16, num_heads=1, stages=(1, 2, 1), q_pool=1, mask_unit_size=4,
             mask_unit_attn=(True, False, False), patch_kernel=3, patch_stride=2, patch_padding=1,
             decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2)
DECODER = ["decoder_blocks", "decoder_norm", "decoder_pred"]

# model, kwargs -> (top-level names in parameter order, the frozen ones)
CASES = {
    "crossmae": ("crossmae_vit_small_patch16", VIT,
                 ["cls_token", "pos_embed", "mask_token", "decoder_pos_embed", "patch_embed", "blocks", "wfm",
                  "dec_norms", *DECODER], {"pos_embed", "decoder_pos_embed"}),
    "crossmae_plain": ("crossmae_vit_small_patch16", dict(VIT, inter_block=False),
                       ["cls_token", "pos_embed", "mask_token", "decoder_pos_embed", "patch_embed", "blocks", "norm",
                        *DECODER], {"pos_embed", "decoder_pos_embed"}),
    "mae": ("mae_vit_small_patch16", VIT,
            ["cls_token", "pos_embed", "mask_token", "decoder_pos_embed", "patch_embed", "blocks", "norm",
             "decoder_embed", *DECODER], {"pos_embed", "decoder_pos_embed"}),
    "crossmae_hiera": ("crossmae_hiera_tiny_224", HIERA,
                       ["pos_embed", "mask_token", "decoder_pos_embed", "patch_embed", "blocks", "fuse", "wfm",
                        "dec_norms", *DECODER], {"decoder_pos_embed"}),
    "crossmae_hiera_plain": ("crossmae_hiera_tiny_224", dict(HIERA, inter_block="none"),
                             ["pos_embed", "mask_token", "decoder_pos_embed", "patch_embed", "blocks", "norm",
                              *DECODER], {"decoder_pos_embed"}),
    "mae_hiera": ("mae_hiera_tiny_224", HIERA,
                  ["pos_embed", "mask_token", "decoder_pos_embed", "patch_embed", "blocks",
                   "multi_scale_fusion_heads", "encoder_norm", "decoder_embed", *DECODER], set()),
}


def top_level(names):
    """['a', 'b.0.w', 'b.1.w', 'c.w'] -> ['a', 'b', 'c'] (consecutive repeats merged, so any interleaving shows)."""
    out = []
    for n in names:
        head = n.split(".")[0]
        if not out or out[-1] != head:
            out.append(head)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_parameter_names_order_and_frozen_tables(case):
    name, kwargs, expected, frozen = CASES[case]
    model = build_model(name, **kwargs)
    params = [n for n, _ in model.named_parameters()]
    assert top_level(params) == expected
    assert list(model.state_dict()) == params  # nothing but the parameters is saved
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen


def test_decoder_sizes_and_depths():
    cross = build_model("crossmae_vit_small_patch16", **dict(VIT, decoder_depth=3))
    assert cross.wfm.linear.weight.shape == (3, VIT["depth"] + 1) and len(cross.dec_norms) == 3
    assert cross.decoder_pos_embed.shape == (1, 1 + 64, 32)  # the 8 x 8 patch grid after a cls slot
    assert cross.decoder_pred.weight.shape == (4 * 4 * 3, 32)
    hiera = build_model("mae_hiera_tiny_224", **HIERA)
    assert hiera.decoder_pos_embed.shape == (1, 64, 32) and len(hiera.decoder_blocks) == 2
    assert hiera.decoder_pred.weight.shape == (4 * 4 * 3, 32)  # 4 px prediction patches
