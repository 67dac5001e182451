"""UperNet: backbone -> neck -> UPerHead (+ FCN auxiliary head).

The backbone is any :class:`crossmae.models.dense.DenseBackbone` (``model.family``): the plain ViT
(:class:`crossmae.models.dense_vit.DenseViT`, several maps at one stride) gets
:class:`~seg.neck.Feature2Pyramid` to rescale them into a pyramid; Hiera
(:class:`crossmae.models.hiera.DenseHiera`) already gives one (its stages), so there is no neck.
Module names (``backbone``, ``neck``, ``decode_head``, ``auxiliary_head``) are mmseg's
``EncoderDecoder`` names; the backbone keeps the encoder's (timm) key names, renamed only on export.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossmae.engine.checkpoint import load_backbone_encoder, load_checkpoint
from crossmae.models.dense import FAMILIES, DenseBackbone, is_multiscale
from crossmae.models.dense_vit import seg_backbone
from crossmae.models.hiera import DenseHiera
from crossmae.models.transfer import hiera_backbone_args

from .heads import FCNHead, UPerHead
from .neck import Feature2Pyramid
from .transforms import IGNORE_INDEX

logger = logging.getLogger("crossmae")


class UperNet(nn.Module):
    def __init__(self, backbone: DenseBackbone, neck: Feature2Pyramid | None, decode_head: UPerHead,
                 auxiliary_head: FCNHead | None = None, aux_weight: float = 0.4, ignore_index: int = IGNORE_INDEX,
                 avg_non_ignore: bool = False):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore
        self.num_classes = decode_head.conv_seg.out_channels

    @property
    def feature_strides(self) -> list[float]:
        """Stride of each map the heads read (after the neck)."""
        if self.neck is None:
            return list(self.backbone.out_strides)
        return self.neck.strides(self.backbone.out_strides[-1])

    @property
    def size_divisor(self) -> int:
        """Inputs must be multiples of this: of the backbone's divisor and of the coarsest map's stride."""
        return math.lcm(self.backbone.size_divisor, int(round(max(self.feature_strides))))

    def forward(self, img: torch.Tensor, with_aux: bool = False):
        """img [B, 3, H, W] -> logits [B, num_classes, H, W] (bilinear from the head's finest-map output);
        with_aux: (logits, aux_logits), both at the heads' own resolution (for the loss)."""
        feats = self.backbone(img)
        if self.neck is not None:
            feats = self.neck(feats)
        logits = self.decode_head(feats)
        if with_aux:
            aux = self.auxiliary_head(feats) if self.auxiliary_head is not None else None
            return logits, aux
        return F.interpolate(logits, size=img.shape[2:], mode="bilinear", align_corners=False)

    def loss(self, img: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Cross-entropy of both heads, logits upsampled to the label size (mmseg's order)."""
        return seg_loss(self, img, label)


def seg_ce(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = IGNORE_INDEX,
           avg_non_ignore: bool = False) -> torch.Tensor:
    """Pixel cross-entropy, logits resized to the label map. mmseg (avg_non_ignore=False) divides by
    all pixels, ignored ones included; avg_non_ignore divides by the labelled pixels only."""
    logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits.float(), label, ignore_index=ignore_index, reduction="none")
    denom = (label != ignore_index).sum().clamp(min=1) if avg_non_ignore else label.numel()
    return loss.sum() / denom


def seg_loss(model: nn.Module, img: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Works on the bare model and on its DDP wrapper (the forward goes through ``model(...)``)."""
    core = model.module if hasattr(model, "module") else model
    logits, aux = model(img, with_aux=True)
    loss_main = seg_ce(logits, label, core.ignore_index, core.avg_non_ignore)
    metrics = {"loss_decode": loss_main.detach()}
    loss = loss_main
    if aux is not None:
        loss_aux = seg_ce(aux, label, core.ignore_index, core.avg_non_ignore)
        loss = loss + core.aux_weight * loss_aux
        metrics["loss_aux"] = loss_aux.detach()
    with torch.no_grad():
        up = F.interpolate(logits.detach(), size=label.shape[-2:], mode="bilinear", align_corners=False)
        valid = label != core.ignore_index
        metrics["pixel_acc"] = (up.argmax(1)[valid] == label[valid]).float().mean() * 100 if valid.any() \
            else torch.tensor(float("nan"))
    return loss, metrics


def backbone_args(family: str, spec: dict[str, Any], pretrained: str = "") -> dict[str, Any]:
    """``model.backbone`` resolved for ``model.family``: the ViT's as it is; a Hiera's with ``size: auto``
    read from the ``pretrained`` checkpoint (crossmae.models.transfer.hiera_backbone_args)."""
    if family not in FAMILIES:
        raise ValueError(f"model.family must be one of {FAMILIES}, got {family!r}")
    if family == "vit":
        return dict(spec)
    ckpt_config = load_checkpoint(pretrained).get("config") if spec.get("size") == "auto" and pretrained else None
    return hiera_backbone_args(spec, ckpt_config, field="model.backbone")


def build_upernet(backbone: dict[str, Any], num_classes: int = 150, channels: int = 768, aux_channels: int = 256,
                  aux_weight: float = 0.4, aux_in_index: int = 2, dropout: float = 0.1, pool_scales=(1, 2, 3, 6),
                  neck_rescales=(4, 2, 1, 0.5), avg_non_ignore: bool = False, family: str = "vit") -> UperNet:
    """``backbone``: keyword arguments of :func:`crossmae.models.dense_vit.seg_backbone` (``size`` plus
    overrides) for family 'vit'; of :class:`crossmae.models.hiera.DenseHiera` for 'hiera' (resolved:
    :func:`backbone_args`). A single-stride backbone gets the rescaling neck, a multi-stride one none."""
    kwargs = dict(backbone)
    try:
        if family == "hiera":
            net = DenseHiera(**kwargs)
        else:
            net = seg_backbone(kwargs.pop("size", "base"), **kwargs)
    except TypeError as e:
        raise ValueError(f"model.backbone: {e}") from e
    neck = None
    if not is_multiscale(net):
        if len(net.out_channels) != len(neck_rescales):
            raise ValueError(f"model.backbone.out_indices {net.out_indices} must give one map per neck rescale "
                             f"{list(neck_rescales)}")
        neck = Feature2Pyramid(net.out_channels[-1], neck_rescales)
    in_ch = net.out_channels
    if not 0 <= aux_in_index < len(in_ch):
        raise ValueError(f"model.aux_in_index {aux_in_index} is not one of the backbone's {len(in_ch)} maps")
    head = UPerHead(in_ch, channels, num_classes, tuple(pool_scales), dropout)
    aux = FCNHead(in_ch[aux_in_index], aux_channels, num_classes, aux_in_index, 1, dropout) if aux_weight > 0 else None
    return UperNet(net, neck, head, aux, aux_weight, avg_non_ignore=avg_non_ignore)


def load_pretrained_encoder(model: UperNet, path: str) -> tuple[list[str], list[str]]:
    """Pretraining checkpoint -> the backbone (crossmae.engine.checkpoint.load_backbone_encoder): only the new
    parts (relative position tables, layer scales) may be missing."""
    fields = "stages" if isinstance(model.backbone, DenseHiera) else "depth"
    return load_backbone_encoder(model.backbone, path,
                                 f"the backbone of model.backbone (size, embed_dim, {fields}, ...)")


def convert_sync_bn(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """BatchNorm -> SyncBatchNorm in the neck and heads when training on several GPUs (mmseg's SyncBN)."""
    if world_size > 1 and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if world_size > 1:
        logger.warning("SyncBatchNorm needs CUDA: keeping per-process BatchNorm on %s", device.type)
    return model
