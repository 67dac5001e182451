import pytest
import torch
import torch.nn.functional as F

from crossmae.engine import load_checkpoint, model_state, param_groups, save_checkpoint
from seg.export import export, to_mmseg_backbone_key
from seg.model import build_upernet, load_pretrained_encoder, seg_ce, seg_loss
from seg.neck import Feature2Pyramid

from tiny import TINY_CROSSMAE

# the seg backbone matching the tiny_checkpoint encoder (patch 4, width 64, depth 4), at 64 px crops
TINY_BACKBONE = dict(size="small", img_size=64, patch_size=4, embed_dim=64, depth=4, num_heads=4, use_cls_token=True)


def tiny(**kw):
    torch.manual_seed(0)
    return build_upernet(dict(TINY_BACKBONE), num_classes=6, channels=16, aux_channels=8, **kw)


def test_neck_levels_have_strides_4_8_16_32_for_patch_16():
    neck = Feature2Pyramid(32)
    x = [torch.randn(2, 32, 6, 8) for _ in range(4)]  # a 96 x 128 image at patch 16
    outs = neck(x)
    assert [o.shape[-2:] for o in outs] == [(24, 32), (12, 16), (6, 8), (3, 4)]
    assert neck.strides(16) == [4, 8, 16, 32]
    assert [128 // o.shape[-1] for o in outs] == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="expects 4"):
        neck(x[:3])


def test_upernet_gives_logits_at_input_size_and_heads_at_stride_p_over_4():
    model = tiny().eval()
    img = torch.randn(2, 3, 64, 48)
    assert model(img).shape == (2, 6, 64, 48)
    main, aux = model(img, with_aux=True)
    assert main.shape == (2, 6, 64, 48)  # patch 4 -> finest level at stride 1
    assert aux.shape == (2, 6, 16, 12)  # the third level (identity, stride p)
    assert model.size_divisor == 8


def test_encoder_of_a_pretraining_checkpoint_loads_and_only_new_parts_are_missing(tiny_checkpoint):
    model = tiny()
    missing, unexpected = load_pretrained_encoder(model, str(tiny_checkpoint))
    assert missing and all(k.endswith(("relative_position_bias_table", "gamma_1", "gamma_2")) for k in missing)
    assert len(missing) == 3 * TINY_CROSSMAE["depth"]
    assert set(unexpected) <= {"norm.weight", "norm.bias"}
    src = model_state(load_checkpoint(tiny_checkpoint))
    for key in ("patch_embed.proj.weight", "cls_token", "blocks.3.attn.qkv.weight", "blocks.0.mlp.fc2.bias"):
        torch.testing.assert_close(model.backbone.state_dict()[key], src[key])
    # pos_embed: the 8 x 8 pretraining grid resized to 16 x 16; the cls slot kept
    assert model.backbone.pos_embed.shape == (1, 1 + 16 * 16, 64)
    torch.testing.assert_close(model.backbone.pos_embed[:, 0], src["pos_embed"][:, 0])


def test_layer_decay_puts_the_heads_at_full_lr_and_embeddings_lowest():
    model = tiny()
    scale = {n: g["lr_scale"] for g in param_groups(model, 0.05, 0.65, num_layers=4) for n in g["param_names"]}
    assert scale["decode_head.conv_seg.weight"] == 1.0 and scale["neck.upsample_4x.0.weight"] == 1.0
    assert scale["backbone.blocks.3.attn.qkv.weight"] == pytest.approx(0.65)
    assert scale["backbone.blocks.0.attn.qkv.weight"] == pytest.approx(0.65 ** 4)
    assert scale["backbone.patch_embed.proj.weight"] == pytest.approx(0.65 ** 5)
    decay = {n: g["weight_decay"] for g in param_groups(model, 0.05) for n in g["param_names"]}
    assert decay["backbone.blocks.0.attn.relative_position_bias_table"] == 0.0
    assert decay["backbone.blocks.0.gamma_1"] == 0.0 and decay["decode_head.bottleneck.conv.weight"] == 0.05


def test_loss_ignores_255_and_mmseg_averages_over_all_pixels():
    logits = torch.randn(1, 3, 4, 4)
    label = torch.randint(0, 3, (1, 4, 4))
    label[0, 0] = 255
    per_pixel = F.cross_entropy(logits, label, ignore_index=255, reduction="none")
    assert seg_ce(logits, label) == pytest.approx(float(per_pixel.sum() / 16))
    assert seg_ce(logits, label, avg_non_ignore=True) == pytest.approx(float(per_pixel.sum() / 12))
    model = tiny()
    loss, metrics = seg_loss(model, torch.randn(2, 3, 64, 64), torch.randint(0, 6, (2, 64, 64)))
    assert float(loss.detach()) == pytest.approx(float(metrics["loss_decode"] + 0.4 * metrics["loss_aux"]), rel=1e-5)
    loss.backward()
    assert model.backbone.blocks[0].attn.relative_position_bias_table.grad is not None


def test_export_of_an_encoder_uses_mmseg_mae_key_names(tiny_checkpoint, tmp_path):
    assert to_mmseg_backbone_key("blocks.3.norm1.weight") == "layers.3.ln1.weight"
    assert to_mmseg_backbone_key("blocks.3.mlp.fc1.bias") == "layers.3.ffn.layers.0.0.bias"
    assert to_mmseg_backbone_key("blocks.3.mlp.fc2.weight") == "layers.3.ffn.layers.1.weight"
    assert to_mmseg_backbone_key("blocks.3.attn.qkv.weight") == "layers.3.attn.qkv.weight"
    assert to_mmseg_backbone_key("patch_embed.proj.weight") == "patch_embed.projection.weight"
    out = tmp_path / "mmseg_encoder.pth"
    assert "encoder" in export(str(tiny_checkpoint), str(out))
    state = torch.load(out, weights_only=True)
    src = model_state(load_checkpoint(tiny_checkpoint))
    assert not any(k.startswith(("blocks.", "decoder", "mask_token")) for k in state)
    assert {"cls_token", "pos_embed", "patch_embed.projection.weight", "layers.0.ln2.bias",
            "layers.3.ffn.layers.1.bias", "layers.2.attn.proj.weight"} <= set(state)
    assert len(state) == sum(1 for k in src if k.startswith(("blocks.", "patch_embed.", "norm.")) or
                             k in ("cls_token", "pos_embed"))
    torch.testing.assert_close(state["layers.1.ffn.layers.0.0.weight"], src["blocks.1.mlp.fc1.weight"])


def test_export_of_a_trained_upernet_matches_mmseg_encoder_decoder_names(tmp_path):
    model = tiny()
    ckpt = tmp_path / "seg.pth"
    save_checkpoint({"model": model.state_dict(), "epoch": 1}, ckpt)
    out = tmp_path / "mmseg_upernet.pth"
    assert "UperNet" in export(str(ckpt), str(out))
    sd = torch.load(out, weights_only=True)["state_dict"]
    # names as in mmseg's EncoderDecoder(MAE, Feature2Pyramid, UPerHead, FCNHead)
    expected = ["backbone.layers.0.attn.relative_position_bias_table", "backbone.layers.0.gamma_1",
                "backbone.layers.0.ln1.weight", "backbone.patch_embed.projection.weight", "backbone.cls_token",
                "neck.upsample_4x.0.weight", "neck.upsample_4x.1.running_var", "neck.upsample_4x.3.bias",
                "neck.upsample_2x.0.weight", "decode_head.psp_modules.3.1.conv.weight",
                "decode_head.psp_modules.0.1.bn.running_mean", "decode_head.bottleneck.conv.weight",
                "decode_head.lateral_convs.2.bn.weight", "decode_head.fpn_convs.0.conv.weight",
                "decode_head.fpn_bottleneck.bn.bias", "decode_head.conv_seg.weight",
                "auxiliary_head.convs.0.conv.weight", "auxiliary_head.convs.0.bn.weight",
                "auxiliary_head.conv_seg.bias"]
    missing = [k for k in expected if k not in sd]
    assert not missing, missing
    assert not any(".blocks." in k or ".norm1." in k or ".mlp." in k for k in sd)
    # mmseg's MAE bias table: (2h-1)(2w-1) offsets + 3 cls rows, per head
    assert sd["backbone.layers.0.attn.relative_position_bias_table"].shape == (31 * 31 + 3, 4)
    assert len(sd) == len(model.state_dict())


def test_loaded_backbone_reproduces_the_pretraining_encoder_features(tiny_checkpoint):
    from tiny import tiny_model
    pre = tiny_model().eval()
    pre.load_state_dict(model_state(load_checkpoint(tiny_checkpoint)))
    # at the pretraining size (no pos_embed resize), zero rel-pos tables and unit layer scales are the identity
    model = build_upernet(dict(TINY_BACKBONE, img_size=32, drop_path_rate=0.0), num_classes=6, channels=16,
                          aux_channels=8).eval()
    load_pretrained_encoder(model, str(tiny_checkpoint))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = pre.forward_features(x, torch.arange(64)[None].expand(2, -1), collect=True)  # all patches visible
        outs = model.backbone(x)
    for out, i in zip(outs, model.backbone.out_indices):
        torch.testing.assert_close(out, ref[i + 1][:, 1:].transpose(1, 2).reshape(2, 64, 8, 8), atol=1e-5, rtol=1e-5)
