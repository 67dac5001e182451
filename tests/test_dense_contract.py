"""The dense-backbone contract (crossmae.models.dense) and the encoder transfer (crossmae.models.transfer).

Expected channels and strides are written down from the architectures by hand, then compared with what the
backbones report and with the maps they return, at two input sizes each."""
from __future__ import annotations

import pytest
import torch

from crossmae.engine import CheckpointError, encoder_state, load_checkpoint, model_state
from crossmae.models.dense import DenseBackbone, is_multiscale
from crossmae.models.dense_vit import DenseViT, seg_backbone
from crossmae.models.hiera import DenseHiera, HieraEncoder
from crossmae.models.transfer import encoder_weights, hiera_arch, hiera_backbone_args, resize_pos_embed
from tiny import TINY_CROSSMAE_HIERA

# 32 px pretraining grid, 3x3/2 patch conv, mask units of 4 x 4 tokens (8 px), widths 16-32-64
HIERA = dict(img_size=32, embed_dim=16, num_heads=1, stages=(1, 2, 1), mask_unit_size=4,
             mask_unit_attn=(True, False, False), patch_kernel=3, patch_stride=2, patch_padding=1)
VIT = dict(patch_size=4, embed_dim=32, depth=4, num_heads=2, img_size=32, pretrain_img_size=32, drop_path_rate=0.0)


def backbones():
    torch.manual_seed(0)
    return {
        # (backbone, channels, strides, input divisor) by hand
        "vitdet": (DenseViT(window_size=4, global_attn_indexes=(1, 3), rel_pos="decomposed", out_indices=(-1,), **VIT),
                   [32], [4], 4),
        "seg_vit": (seg_backbone("small", out_indices=(0, 1, 2, 3), **VIT), [32] * 4, [4] * 4, 4),
        # one pool between every two stages: strides 2, 4, 8; the input a multiple of one 8 px unit
        "hiera": (DenseHiera(**HIERA), [16, 32, 64], [2, 4, 8], 8),
        # the pretraining recipe's q_pool 1: the last two stages at one stride
        "hiera_q1": (DenseHiera(q_pool=1, **HIERA), [16, 32, 64], [2, 4, 4], 8),
    }


@pytest.mark.parametrize("name", ["vitdet", "seg_vit", "hiera", "hiera_q1"])
@pytest.mark.parametrize("hw", [(32, 32), (48, 64)])
def test_reported_channels_and_strides_are_the_maps_real_shapes(name, hw):
    net, channels, strides, divisor = backbones()[name]
    assert isinstance(net, DenseBackbone)
    assert (net.out_channels, net.out_strides, net.size_divisor) == (channels, strides, divisor)
    maps = net.eval()(torch.randn(2, 3, *hw))
    assert [tuple(m.shape) for m in maps] == [(2, c, hw[0] // s, hw[1] // s) for c, s in zip(channels, strides)]
    assert is_multiscale(net) == (len(set(strides)) > 1)


def test_dense_hiera_at_its_own_size_is_the_encoder_and_elsewhere_resizes_positions():
    torch.manual_seed(0)
    dense = DenseHiera(**HIERA).eval()
    enc = HieraEncoder(q_pool=2, **HIERA).eval()  # the pretraining encoder, unmasked (timm parity in test_hiera)
    enc.load_state_dict(dense.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(dense(x), enc.forward_feature_maps(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # at 64 px: an encoder built for 64 px whose table is the 16 x 16 one resized bicubically to 32 x 32
    big = HieraEncoder(q_pool=2, **{**HIERA, "img_size": 64}).eval()
    state = dict(dense.state_dict())
    table = state["pos_embed"].reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    state["pos_embed"] = torch.nn.functional.interpolate(table, size=(32, 32), mode="bicubic",
                                                         align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, 16)
    big.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(dense(x), big.forward_feature_maps(x)):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="multiples of a mask unit"):
        dense(torch.randn(1, 3, 36, 32))


def test_hiera_checkpoint_loads_into_dense_hiera(tiny_hiera_checkpoint):
    enc = encoder_state(model_state(load_checkpoint(tiny_hiera_checkpoint)))
    arch = hiera_backbone_args({"size": "auto", "drop_path_rate": 0.1},
                               load_checkpoint(tiny_hiera_checkpoint)["config"])
    assert arch == dict(embed_dim=16, num_heads=1, stages=[1, 2, 1], img_size=32, mask_unit_size=4,
                        mask_unit_attn=[True, False, False], patch_kernel=3, patch_stride=2, patch_padding=1,
                        drop_path_rate=0.1)  # q_pool and the decoder are not the backbone's
    net = DenseHiera(**{**arch, "img_size": 64})  # another pretraining grid: 32 x 32 tokens
    missing, unexpected = net.load_pretrained(enc)
    assert missing == [] and unexpected == []
    sd = net.state_dict()
    for k in ("blocks.2.attn.qkv.weight", "patch_embed.proj.weight", "blocks.3.mlp.fc2.bias"):
        assert torch.equal(sd[k], enc[k]), k
    assert sd["pos_embed"].shape == (1, 32 * 32, 16)
    torch.testing.assert_close(sd["pos_embed"], resize_pos_embed(enc["pos_embed"], (32, 32), num_prefix_tokens=0))
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks\.3\.mlp\.fc2\.bias'\]"):
        DenseHiera(**arch).load_pretrained({k: v for k, v in enc.items() if k != "blocks.3.mlp.fc2.bias"})
    with pytest.raises(CheckpointError, match=r"shape mismatch .*blocks\.0"):
        DenseHiera(**{**arch, "embed_dim": 24}).load_pretrained(enc)


def test_encoder_weights_reports_every_problem_in_one_error():
    target = {"pos_embed": torch.zeros(1, 5, 2), "a": torch.zeros(3), "b": torch.zeros(2), "rel": torch.zeros(1)}
    source = {"pos_embed": torch.ones(1, 5, 2), "a": torch.zeros(4), "cls_token": torch.zeros(1),
              "decoder.w": torch.zeros(1)}
    with pytest.raises(CheckpointError) as e:
        encoder_weights(source, target, is_new=lambda k: k == "rel", unused=("cls_token",))
    msg = str(e.value)
    assert "1 unexpected keys ['decoder.w']" in msg and "1 missing keys ['b']" in msg
    assert "a: checkpoint (4,) vs model (3,)" in msg and "cls_token" not in msg and "'rel'" not in msg
    ok = encoder_weights({"pos_embed": torch.ones(1, 5, 2), "a": torch.ones(3), "b": torch.ones(2),
                          "cls_token": torch.zeros(1)}, target, is_new=lambda k: k == "rel", unused=("cls_token",))
    assert (ok.missing, ok.unexpected, sorted(ok.tensors)) == (["rel"], ["cls_token"], ["a", "b", "pos_embed"])


def test_hiera_arguments_from_sizes_configs_and_errors():
    assert hiera_arch({"name": "crossmae_vit_small_patch16"}) is None
    assert hiera_arch({"name": "mae_hiera_base_plus_224", "mask_ratio": 0.6, "q_pool": 2}) == \
        dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), img_size=224)
    assert hiera_backbone_args({"size": "tiny"}) == dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), img_size=224)
    saved = hiera_backbone_args({"size": "auto"}, {"model": TINY_CROSSMAE_HIERA})
    assert hiera_backbone_args({"size": "auto", **saved}) == saved  # a saved config rebuilds without the file
    with pytest.raises(ValueError, match="model.hiera.size=auto .* records no Hiera"):
        hiera_backbone_args({"size": "auto"}, {"model": {"name": "crossmae_vit_small_patch16"}})
    with pytest.raises(ValueError, match="model.backbone.size must be auto or one of tiny"):
        hiera_backbone_args({"size": "huge"}, field="model.backbone")
