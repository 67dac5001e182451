"""UperNet on a plain ViT: backbone -> :class:`~seg.neck.Feature2Pyramid` -> UPerHead (+ FCN auxiliary head).

Module names (``backbone``, ``neck``, ``decode_head``, ``auxiliary_head``) are mmseg's
``EncoderDecoder`` names; the backbone is the shared :class:`crossmae.models.dense_vit.DenseViT`
(timm key names, renamed only on export).
"""
from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossmae.engine.checkpoint import CheckpointError, encoder_state, load_checkpoint, model_state
from crossmae.models.dense_vit import DenseViT, seg_backbone

from .heads import FCNHead, UPerHead
from .neck import Feature2Pyramid
from .transforms import IGNORE_INDEX

logger = logging.getLogger("crossmae")


class UperNet(nn.Module):
    def __init__(self, backbone: DenseViT, neck: Feature2Pyramid, decode_head: UPerHead,
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
    def size_divisor(self) -> int:
        """Inputs must be multiples of this (patch size x the coarsest neck downsampling)."""
        return int(round(self.backbone.patch_size / min(self.neck.rescales)))

    def forward(self, img: torch.Tensor, with_aux: bool = False):
        """img [B, 3, H, W] -> logits [B, num_classes, H, W] (bilinear from the head's stride-p/4 output);
        with_aux: (logits, aux_logits), both at the heads' own resolution (for the loss)."""
        feats = self.neck(self.backbone(img))
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


def build_upernet(backbone: dict[str, Any], num_classes: int = 150, channels: int = 768, aux_channels: int = 256,
                  aux_weight: float = 0.4, aux_in_index: int = 2, dropout: float = 0.1, pool_scales=(1, 2, 3, 6),
                  neck_rescales=(4, 2, 1, 0.5), avg_non_ignore: bool = False) -> UperNet:
    """``backbone``: keyword arguments of :func:`crossmae.models.dense_vit.seg_backbone` (``size`` plus overrides)."""
    kwargs = dict(backbone)
    size = kwargs.pop("size", "base")
    try:
        vit = seg_backbone(size, **kwargs)
    except TypeError as e:
        raise ValueError(f"model.backbone: {e}") from e
    if len(vit.out_indices) != len(neck_rescales):
        raise ValueError(f"model.backbone.out_indices {vit.out_indices} must give one map per neck rescale "
                         f"{list(neck_rescales)}")
    neck = Feature2Pyramid(vit.embed_dim, neck_rescales)
    in_ch = vit.out_channels
    head = UPerHead(in_ch, channels, num_classes, tuple(pool_scales), dropout)
    aux = FCNHead(in_ch[aux_in_index], aux_channels, num_classes, aux_in_index, 1, dropout) if aux_weight > 0 else None
    return UperNet(vit, neck, head, aux, aux_weight, avg_non_ignore=avg_non_ignore)


def load_pretrained_encoder(model: UperNet, path: str) -> tuple[list[str], list[str]]:
    """Pretraining checkpoint (ours, the official CrossMAE/MAE release, or a bare state dict) ->
    the backbone. Returns (missing, unexpected) as :meth:`DenseViT.load_pretrained` does: only the
    new parts (relative position tables, layer scales) may be missing."""
    state = encoder_state(model_state(load_checkpoint(path), path))
    try:
        missing, unexpected = model.backbone.load_pretrained(state)
    except CheckpointError as e:  # name the file and the config fields that decide the backbone's shapes
        raise CheckpointError(f"pretrained={path} does not fit the backbone of model.backbone (size, embed_dim, "
                              f"depth, ...): {e}") from e
    logger.info("loaded the encoder of %s: %d tensors; new (initialised here): %d %s; unused: %s", path,
                len(state) - len(unexpected), len(missing), _summarize_keys(missing), unexpected)
    return missing, unexpected


def _summarize_keys(keys: list[str]) -> str:
    kinds = sorted({k.split(".")[-1] if "blocks." in k else k for k in keys})
    return f"({', '.join(kinds)})" if keys else ""


def convert_sync_bn(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """BatchNorm -> SyncBatchNorm in the neck and heads when training on several GPUs (mmseg's SyncBN)."""
    if world_size > 1 and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if world_size > 1:
        logger.warning("SyncBatchNorm needs CUDA: keeping per-process BatchNorm on %s", device.type)
    return model
