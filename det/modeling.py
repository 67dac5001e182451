"""ViTDet Mask R-CNN assembled from torchvision's detection components.

    backbone.net   a dense backbone (crossmae.models.dense): the plain ViT (crossmae.models.dense_vit), its
                   last stride-16 map; or Hiera (crossmae.models.hiera.DenseHiera), its four stages
    backbone.fpn   read from the backbone's strides (det.fpn.build_pyramid): ViT -> SimpleFeaturePyramid,
                   p2..p6; Hiera -> torchvision's FPN on strides 4..32 + max pool, p2..p6; 256 channels
    rpn            2-conv head, anchors 32..512 (one size per level) x ratios 0.5/1/2, exact (not rounded)
    roi_heads      RoIAlign (aligned, adaptive sampling) 7x7 -> 4 conv + 1 fc box head with LayerNorm;
                   14x14 -> 4 conv mask head with LayerNorm -> 28x28 masks; detectron2's head init
    transform      normalise; training: images already jittered, padded to a square; testing:
                   longest side resized to ``image_size``, padded, predictions mapped back

The names under ``backbone.net`` are the encoder's own (timm's), as in detectron2's ViTDet.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
from timm.layers import LayerNorm2d
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import LevelMapper

from crossmae.data import IMAGENET_MEAN, IMAGENET_STD

from .fpn import build_pyramid


class AlignedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """MultiScaleRoIAlign with ``aligned=True`` (detectron2's ROIAlignV2: half-pixel offset) and
    known level strides. torchvision's pooler always calls roi_align with aligned=False and infers
    the scales from the first batch it sees; this one is told the strides up front."""

    def __init__(self, featmap_names: list[str], strides: list[int], output_size: int, sampling_ratio: int = 0,
                 canonical_scale: int = 224, canonical_level: int = 4):
        super().__init__(featmap_names, output_size, sampling_ratio, canonical_scale=canonical_scale,
                         canonical_level=canonical_level)
        if len(strides) != len(featmap_names):
            raise ValueError(f"{len(featmap_names)} feature maps but {len(strides)} strides")
        self.strides = list(strides)
        k = [int(torch.tensor(float(s)).log2().round()) for s in strides]
        self.mapper = LevelMapper(k[0], k[-1], canonical_scale, canonical_level)

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        feats = [x[n] for n in self.featmap_names]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        if len(feats) == 1:
            return roi_align(feats[0], rois, self.output_size, 1.0 / self.strides[0], self.sampling_ratio,
                             aligned=True)
        levels = self.mapper(boxes)
        out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1], *self.output_size))
        for level, (feat, stride) in enumerate(zip(feats, self.strides)):
            idx = torch.where(levels == level)[0]
            if idx.numel():
                out[idx] = roi_align(feat, rois[idx], self.output_size, 1.0 / stride, self.sampling_ratio,
                                     aligned=True).to(out.dtype)
        return out


class SquarePadTransform(GeneralizedRCNNTransform):
    """Normalise, (at test time) resize the longest side to ``image_size``, pad to image_size^2.

    Training images must already fit (large-scale jitter crops them to ``image_size``)."""

    def __init__(self, image_size: int, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD):
        super().__init__(min_size=image_size, max_size=image_size, image_mean=list(image_mean),
                         image_std=list(image_std), size_divisible=1)
        self.image_size = image_size

    def resize(self, image: torch.Tensor, target=None):
        h, w = image.shape[-2:]
        if self.training:
            if max(h, w) > self.image_size:
                raise ValueError(f"training image of {h}x{w} is larger than image_size {self.image_size}: "
                                 f"crop it first (LargeScaleJitter)")
            return image, target
        scale = self.image_size / max(h, w)
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        image = nn.functional.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False,
                                          antialias=scale < 1)[0]
        if target is not None and "boxes" in target:
            target = {**target, "boxes": target["boxes"] * torch.tensor([nw / w, nh / h, nw / w, nh / h],
                                                                         device=image.device)}
        return image, target

    def batch_images(self, images: list[torch.Tensor], size_divisible: int = 32) -> torch.Tensor:
        s = self.image_size
        batch = images[0].new_zeros((len(images), images[0].shape[0], s, s))
        for img, pad in zip(images, batch):
            pad[:, :img.shape[1], :img.shape[2]].copy_(img)
        return batch


class PyramidBackbone(nn.Module):
    """Dense backbone -> its feature maps -> pyramid. ``out_channels`` (one width) as torchvision expects."""

    def __init__(self, net: nn.Module, fpn: nn.Module):
        super().__init__()
        self.net = net
        self.fpn = fpn
        self.out_channels = fpn.out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(self.net(x))


class ExactAnchorGenerator(AnchorGenerator):
    """detectron2's ``DefaultAnchorGenerator`` cell anchors: w = size / sqrt(ratio), h = size * sqrt(ratio),
    centred on 0 and kept exact (torchvision rounds them to integers: 45.25 x 22.63 becomes 46 x 22)."""

    def generate_anchors(self, scales, aspect_ratios, dtype: torch.dtype = torch.float32,
                         device: torch.device = torch.device("cpu")) -> torch.Tensor:
        cells = [[-w / 2, -h / 2, w / 2, h / 2]
                 for r in aspect_ratios for size in scales
                 for w, h in [(size / float(r) ** 0.5, size * float(r) ** 0.5)]]
        return torch.tensor(cells, dtype=dtype, device=device)


HEAD_INITS = ("detectron2", "torchvision")


def c2_xavier_fill(layer: nn.Module) -> None:
    """detectron2's (Caffe2's) 'XavierFill': kaiming-uniform with a=1, zero bias."""
    nn.init.kaiming_uniform_(layer.weight, a=1)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def init_heads_like_detectron2(model: MaskRCNN) -> None:
    """The ROI-head initialisation of detectron2's ViTDet: box-head fc layers c2_xavier_fill, class
    logits normal(std 0.01), box deltas normal(std 0.001), mask logits normal(std 0.001), zero biases.
    The RPN and the head convs already match (normal 0.01 / kaiming-normal fan_out, as c2_msra_fill)."""
    heads = model.roi_heads
    for layer in heads.box_head.modules():
        if isinstance(layer, nn.Linear):
            c2_xavier_fill(layer)
    for layer, std in ((heads.box_predictor.cls_score, 0.01), (heads.box_predictor.bbox_pred, 0.001),
                       (heads.mask_predictor.mask_fcn_logits, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)


def build_mask_rcnn(net: nn.Module, *, num_classes: int, image_size: int = 1024,
                    fpn_channels: int = 256, anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512),
                    box_head_convs: int = 4, box_head_fc: int = 1024, mask_head_convs: int = 4,
                    rpn_pre_nms_top_n_train: int = 2000, rpn_pre_nms_top_n_test: int = 1000,
                    rpn_post_nms_top_n_train: int = 1000, rpn_post_nms_top_n_test: int = 1000,
                    box_batch_size_per_image: int = 512, box_score_thresh: float = 0.05,
                    detections_per_img: int = 100, canonical_scale: int = 224, head_init: str = "detectron2",
                    image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD) -> MaskRCNN:
    """ViTDet's Mask R-CNN (detectron2's ``mask_rcnn_vitdet.py``) on the dense backbone ``net``
    (``out_channels`` / ``out_strides`` / ``size_divisor``: crossmae.models.dense).

    ``num_classes`` excludes the background. Defaults are the paper's; tiny runs shrink widths,
    anchors and sample counts. ``head_init``: 'detectron2' (ViTDet's ROI-head init) or 'torchvision'
    (its defaults: larger predictor weights, which a few-hundred-step toy run learns from faster)."""
    if head_init not in HEAD_INITS:
        raise ValueError(f"model.head_init must be one of {HEAD_INITS}, got {head_init!r}")
    if image_size % net.size_divisor:
        raise ValueError(f"image_size {image_size} is not a multiple of the backbone's input divisor "
                         f"{net.size_divisor}")
    fpn = build_pyramid(net.out_channels, net.out_strides, fpn_channels)
    if len(anchor_sizes) != len(fpn.names):
        raise ValueError(f"anchor_sizes needs one size per pyramid level {fpn.names}, got {list(anchor_sizes)}")
    backbone = PyramidBackbone(net, fpn)
    anchors = ExactAnchorGenerator(tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    rpn_head = RPNHead(fpn_channels, anchors.num_anchors_per_location()[0], conv_depth=2)
    n_roi = len(fpn.names) - int(fpn.top_block)  # p2-p5; the max-pool level is for the RPN only
    roi_levels, roi_strides = fpn.names[:n_roi], fpn.strides[:n_roi]
    box_pool = AlignedMultiScaleRoIAlign(roi_levels, roi_strides, 7, 0, canonical_scale)
    mask_pool = AlignedMultiScaleRoIAlign(roi_levels, roi_strides, 14, 0, canonical_scale)
    box_head = FastRCNNConvFCHead((fpn_channels, 7, 7), [fpn_channels] * box_head_convs, [box_head_fc],
                                  norm_layer=LayerNorm2d)
    mask_head = MaskRCNNHeads(fpn_channels, [fpn_channels] * mask_head_convs, 1, norm_layer=LayerNorm2d)
    model = MaskRCNN(
        backbone, num_classes=None, rpn_anchor_generator=anchors, rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train, rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        box_roi_pool=box_pool, box_head=box_head, box_predictor=FastRCNNPredictor(box_head_fc, num_classes + 1),
        box_batch_size_per_image=box_batch_size_per_image, box_score_thresh=box_score_thresh,
        box_detections_per_img=detections_per_img, mask_roi_pool=mask_pool, mask_head=mask_head,
        mask_predictor=MaskRCNNPredictor(fpn_channels, fpn_channels, num_classes + 1))
    if head_init == "detectron2":
        init_heads_like_detectron2(model)
    model.transform = SquarePadTransform(image_size, image_mean, image_std)
    return model
