"""CrossMAE: a masked autoencoder whose decoder only cross-attends.

Mask-token queries (a shared learned token + fixed sin-cos decoder position
embedding) at the *predicted* positions read the encoder's visible tokens through
cross-attention; they never see each other (unless ``decoder_self_attn``), so only
the ``pred_ratio`` subset of masked patches is decoded. With inter-block attention
(``inter_block=True``, the paper's "weighted feature maps") decoder block j reads its
own learned mix sum_i W[j, i] F_i of the encoder input and block outputs, through its
own LayerNorm, and the encoder has no final norm.

State-dict keys equal the official release's (``wfm.linear.weight``, ``dec_norms``,
``decoder_blocks``, ``decoder_norm``, ``decoder_pred``, ``mask_token``,
``decoder_pos_embed``), so its checkpoints load without any renaming.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..masking import Masks, check_ratios, gather_tokens, random_masking
from .blocks import CrossAttentionBlock
from .encoder import LayerNorm, MaskedViTEncoder
from .pos_embed import patchify, sincos_2d


class PretrainOutput(NamedTuple):
    loss: torch.Tensor
    pred: torch.Tensor  # [N, num_predicted, p*p*C] pixel predictions at masks.ids_pred
    masks: Masks


def reconstruction_loss(imgs: torch.Tensor, pred: torch.Tensor, ids_pred: torch.Tensor, patch_size: int,
                        norm_pix_loss: bool) -> torch.Tensor:
    """Mean squared error on the predicted patches only."""
    target = gather_tokens(patchify(imgs, patch_size), ids_pred)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    return ((pred.float() - target.float()) ** 2).mean()


class WeightedFeatureMaps(nn.Module):
    """Inter-block attention weights: W [decoder_depth, num_feature_maps]."""

    def __init__(self, num_feature_maps: int, decoder_depth: int):
        super().__init__()
        self.linear = nn.Linear(num_feature_maps, decoder_depth, bias=False)  # name kept from the release

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """stacked [k, N, T, D] -> [decoder_depth, N, T, D], entry j = sum_i W[j, i] * stacked[i].

        One matmul for every decoder block (a per-block tensordot costs ~35% more fwd+bwd)."""
        w = self.linear.weight.to(stacked.dtype)
        return (w @ stacked.flatten(1)).view(w.shape[0], *stacked.shape[1:])

    def mix(self, stacked: torch.Tensor, block: int) -> torch.Tensor:
        """One block's mix, [N, T, D] (for analysis; training uses ``forward``)."""
        return torch.tensordot(self.linear.weight[block].to(stacked.dtype), stacked, dims=1)


class CrossMAE(MaskedViTEncoder):
    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, decoder_embed_dim: int = 512, decoder_depth: int = 12,
                 decoder_num_heads: int = 16, mlp_ratio: float = 4.0, mask_ratio: float = 0.75,
                 pred_ratio: float = 0.75, norm_pix_loss: bool = True, inter_block: bool = True,
                 use_input: bool = True, decoder_self_attn: bool = False):
        super().__init__(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio,
                         final_norm=not inter_block)
        check_ratios(mask_ratio, pred_ratio)
        self.mask_ratio = mask_ratio
        self.pred_ratio = pred_ratio
        self.norm_pix_loss = norm_pix_loss
        self.inter_block = inter_block
        self.use_input = use_input
        if inter_block:
            self.wfm = WeightedFeatureMaps(depth + int(use_input), decoder_depth)
            self.dec_norms = nn.ModuleList([LayerNorm(embed_dim) for _ in range(decoder_depth)])
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_2d(decoder_embed_dim, *self.grid_size, cls_token=True)[None],
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            CrossAttentionBlock(embed_dim, decoder_embed_dim, decoder_num_heads, mlp_ratio,
                                self_attn=decoder_self_attn, norm_layer=LayerNorm)
            for _ in range(decoder_depth)])
        self.decoder_norm = LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans)
        self.init_weights()
        nn.init.normal_(self.mask_token, std=0.02)

    def sample_masks(self, imgs: torch.Tensor, generator: torch.Generator | None = None) -> Masks:
        return random_masking(imgs.shape[0], self.num_patches, self.mask_ratio, self.pred_ratio,
                              device=imgs.device, generator=generator)

    def decoder_memory(self, imgs: torch.Tensor, masks: Masks) -> list[torch.Tensor]:
        """What each decoder block attends to: one [N, 1 + K, D_enc] tensor per block."""
        if not self.inter_block:
            return [self.forward_features(imgs, masks.ids_keep)] * len(self.decoder_blocks)
        feats = self.forward_features(imgs, masks.ids_keep, collect=True)
        if not self.use_input:
            feats = feats[1:]
        mixed = self.wfm(torch.stack(feats))
        return [norm(m) for m, norm in zip(mixed.unbind(0), self.dec_norms)]

    def decoder_queries(self, masks: Masks) -> torch.Tensor:
        pos = self.decoder_pos_embed[:, 1:].expand(masks.ids_pred.shape[0], -1, -1)
        return gather_tokens(pos, masks.ids_pred) + self.mask_token

    def forward_decoder(self, memory: list[torch.Tensor], masks: Masks,
                        every_block: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Pixel predictions [N, P, p*p*C]; every_block=True reads each block's output through the head."""
        x = self.decoder_queries(masks)
        readouts = []
        for blk, mem in zip(self.decoder_blocks, memory):
            x = blk(x, mem)
            if every_block:
                readouts.append(self.decoder_pred(self.decoder_norm(x)))
        return readouts if every_block else self.decoder_pred(self.decoder_norm(x))

    def forward(self, imgs: torch.Tensor, masks: Masks | None = None) -> PretrainOutput:
        self.check_input(imgs)
        masks = self.sample_masks(imgs) if masks is None else masks
        pred = self.forward_decoder(self.decoder_memory(imgs, masks), masks)
        loss = reconstruction_loss(imgs, pred, masks.ids_pred, self.patch_size, self.norm_pix_loss)
        return PretrainOutput(loss, pred, masks)
