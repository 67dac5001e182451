"""The detector: feature pyramid shapes, pretrained encoder loading, aligned RoIAlign, the square-pad
transform, and the optimizer's layer-decay groups."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from crossmae.config import load_config
from crossmae.engine import param_groups
from det.backbone import load_encoder
from det.fpn import SimpleFeaturePyramid
from det.modeling import AlignedMultiScaleRoIAlign, SquarePadTransform
from det.train import DetConfig, build_detector

# the tiny_checkpoint fixture's encoder: width 64, depth 4, 4 heads, 4 px patches on a 32 px (8 x 8) grid
TINY_ENCODER = ["model.embed_dim=64", "model.depth=4", "model.num_heads=4", "model.patch_size=4",
                "model.pretrain_img_size=32", "model.window_size=4", "model.global_attn_indexes=[1,3]",
                "model.fpn_channels=32", "model.box_head_fc=64", "image_size=64"]


def tiny_detector(extra=()):
    torch.manual_seed(0)
    return build_detector(load_config(DetConfig, None, TINY_ENCODER + list(extra)), num_classes=3)


@pytest.mark.parametrize("hw", [(64, 96), (96, 48)])
def test_pyramid_shapes_for_non_square_inputs(hw):
    model = tiny_detector()
    model.eval()
    feats = model.backbone(torch.randn(2, 3, *hw))
    h, w = hw[0] // 4, hw[1] // 4  # the ViT's grid at patch 4
    expected = {"p0": (h * 4, w * 4), "p1": (h * 2, w * 2), "p2": (h, w), "p3": (h // 2, w // 2),
                "p4": (h // 4, w // 4)}
    assert list(feats) == list(expected)  # named by log2(stride): strides 1, 2, 4, 8, 16 at patch 4
    for name, size in expected.items():
        assert tuple(feats[name].shape) == (2, 32, *size), name


def test_pyramid_at_patch_16_gives_p2_to_p6():
    fpn = SimpleFeaturePyramid(in_dim=48, in_stride=16, out_channels=16)
    feats = fpn(torch.randn(1, 48, 6, 10))
    assert fpn.strides == [4, 8, 16, 32, 64]
    assert {k: tuple(v.shape[2:]) for k, v in feats.items()} == {"p2": (24, 40), "p3": (12, 20), "p4": (6, 10),
                                                                  "p5": (3, 5), "p6": (2, 3)}
    with pytest.raises(ValueError, match="unsupported pyramid scale 3"):
        SimpleFeaturePyramid(48, 16, 16, scale_factors=(3.0,))


def test_pretrained_encoder_loads_with_only_new_parts_missing(tiny_checkpoint):
    from crossmae.engine import encoder_state, load_checkpoint, model_state
    model = tiny_detector()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    missing, unexpected = load_encoder(model.backbone.net, tiny_checkpoint)
    assert missing and all(k.endswith((".attn.rel_pos_h", ".attn.rel_pos_w")) for k in missing)
    assert set(unexpected) <= {"cls_token", "norm.weight", "norm.bias"}
    enc = encoder_state(model_state(load_checkpoint(tiny_checkpoint)))
    after = model.state_dict()
    for k, v in enc.items():
        if k in ("cls_token", "norm.weight", "norm.bias"):
            continue
        torch.testing.assert_close(after["backbone.net." + k], v, msg=k)  # same grid: pos_embed as it is
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    # only the encoder's tensors changed (zero biases / unit norms may coincide with the fresh init);
    # the pyramid, RPN and RoI heads are new and untouched
    assert changed and changed <= {"backbone.net." + k for k in enc if k not in unexpected}
    assert "backbone.net.pos_embed" in changed and "backbone.net.blocks.3.mlp.fc2.weight" in changed


def test_pretrained_encoder_into_another_patch_size(tiny_checkpoint):
    # 4 px checkpoint -> 8 px detector (as ViTDet-H loads p14 into p16): projection resampled, grid kept
    model = tiny_detector(["model.patch_size=8", "model.pretrain_img_size=64"])
    missing, _ = load_encoder(model.backbone.net, tiny_checkpoint)
    assert model.backbone.net.patch_embed.proj.weight.shape[-2:] == (8, 8)
    assert all("rel_pos" in k for k in missing)


def test_aligned_roi_align_matches_torchvision_per_level():
    torch.manual_seed(0)
    feats = {"p2": torch.randn(1, 4, 32, 32), "p3": torch.randn(1, 4, 16, 16)}
    pool = AlignedMultiScaleRoIAlign(["p2", "p3"], [4, 8], output_size=7, sampling_ratio=0, canonical_scale=32,
                                     canonical_level=3)
    boxes = [torch.tensor([[3.0, 5.0, 20.0, 22.0],     # ~17 px: level floor(3 + log2(17/32)) = 2 -> p2
                           [10.0, 8.0, 90.0, 100.0]])]  # ~85 px: level 4, clamped to 3 -> p3
    out = pool(feats, boxes, [(128, 128)])
    rois = torch.cat([torch.zeros(2, 1), boxes[0]], dim=1)
    ref0 = roi_align(feats["p2"], rois[:1], 7, 1 / 4, 0, aligned=True)
    ref1 = roi_align(feats["p3"], rois[1:], 7, 1 / 8, 0, aligned=True)
    torch.testing.assert_close(out[:1], ref0)
    torch.testing.assert_close(out[1:], ref1)
    assert not torch.allclose(out[:1], roi_align(feats["p2"], rois[:1], 7, 1 / 4, 0, aligned=False))


def test_square_pad_transform_resizes_longest_side_and_maps_back():
    t = SquarePadTransform(64)
    t.eval()
    images, _ = t([torch.rand(3, 20, 40), torch.rand(3, 50, 25)])
    assert images.tensors.shape == (2, 3, 64, 64)
    assert images.image_sizes == [(32, 64), (64, 32)]
    assert images.tensors[0, :, 32:].abs().sum() == 0  # zero padding (after normalisation) below the image
    det = [{"boxes": torch.tensor([[0.0, 0.0, 64.0, 32.0]]), "labels": torch.tensor([1]),
            "scores": torch.tensor([0.9]), "masks": torch.ones(1, 1, 28, 28)}]
    back = t.postprocess(det, [(32, 64)], [(20, 40)])
    assert back[0]["boxes"].tolist() == [[0.0, 0.0, 40.0, 20.0]]
    assert back[0]["masks"].shape == (1, 1, 20, 40)
    t.train()
    with pytest.raises(ValueError, match="larger than image_size 64"):
        t([torch.rand(3, 70, 40)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])


def test_layer_decay_groups():
    model = tiny_detector()
    groups = param_groups(model, 0.1, layer_decay=0.7, num_layers=4)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    decay = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert scale["backbone.net.patch_embed.proj.weight"] == pytest.approx(0.7 ** 5)
    assert scale["backbone.net.pos_embed"] == pytest.approx(0.7 ** 5)
    assert scale["backbone.net.blocks.0.attn.qkv.weight"] == pytest.approx(0.7 ** 4)
    assert scale["backbone.net.blocks.3.mlp.fc1.weight"] == pytest.approx(0.7)
    assert scale["roi_heads.box_predictor.cls_score.weight"] == 1.0
    assert scale[next(n for n in scale if n.startswith("backbone.fpn."))] == 1.0
    assert decay["backbone.net.pos_embed"] == 0.0 and decay["backbone.net.blocks.0.norm1.weight"] == 0.0
    assert decay["backbone.net.blocks.0.attn.rel_pos_h"] == 0.0
    assert decay["backbone.net.blocks.0.attn.qkv.weight"] == 0.1 and decay["rpn.head.cls_logits.weight"] == 0.1
