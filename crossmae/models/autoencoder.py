"""What the four pretraining models (CrossMAE and MAE, on ViT and on Hiera) share: one step mask -> encode
-> decode -> loss, the decoder's tokens and prediction head, the loss, MAE's initialisation, and the two
decoders: CrossMAE's cross-attention-only one and MAE's self-attention one.

A model is an encoder family (the ViT of crossmae/models/encoder.py, the Hiera of crossmae/models/hiera.py)
plus one decoder; the family supplies what is its own:

* ``check_input(imgs)``, ``sample_masks(imgs, generator)``; the prediction grid (``patch_size``,
  ``in_chans``, ``num_patches``, ``grid_size``) and ``mask_ratio``, ``pred_ratio``, ``norm_pix_loss``;
* ``decoder_memory(imgs, masks)``: what the decoder reads (CrossMAE: one tensor per decoder block);
* MAE only: ``decoder_tokens(memory, masks)``, the decoder's input sequence in image order.

Tensors keep the releases' names and registration order (``add_decoder``): their checkpoints, resumed
optimizer states (which address parameters by position) and seeded initialisations depend on it
(tests/test_model_state_format.py).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..masking import Masks, gather_tokens, random_masking
from .blocks import Block, CrossAttentionBlock, LayerNorm
from .pos_embed import patchify


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


def init_as_linear(proj: nn.Conv2d) -> None:
    """A patch projection xavier-uniform as the linear over a patch's pixels it is (MAE's)."""
    w = proj.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))


class MaskedAutoencoder(nn.Module):
    """The pretraining step and the decoder's head; a family and a decoder below fill in the rest (module
    docstring). Per-patch random masking (the official rule) unless the family masks otherwise."""

    def add_decoder(self, blocks: list[nn.Module], pos_embed: torch.Tensor, learn_pos: bool = False) -> None:
        """The mask token, the decoder's position table [1, (1 +) L, D_dec] (fixed unless ``learn_pos``), its
        blocks and the prediction head (a LayerNorm, then a linear to a patch's p * p * C pixels)."""
        dim = pos_embed.shape[-1]
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Parameter(pos_embed, requires_grad=learn_pos)
        self.decoder_blocks = nn.ModuleList(blocks)
        self.decoder_norm = LayerNorm(dim)
        self.decoder_pred = nn.Linear(dim, self.patch_size ** 2 * self.in_chans)

    def init_weights(self) -> None:
        """MAE's initialisation: the patch projection xavier-uniform (``init_as_linear``), the ViT's cls
        token N(0, 0.02), every linear xavier-uniform with zero bias, every LayerNorm 1 / 0, then the
        decoder's tokens; convolutions (Hiera's fusion heads) keep PyTorch's default, as in MAE-Hiera. The
        random draws keep each family's order (the ViT's reference draws the projection and the cls token
        before the linears, MAE-Hiera's the projection after), so a seeded model is bit for bit the one the
        per-model code before this base built."""
        cls_token = getattr(self, "cls_token", None)
        if cls_token is not None:
            init_as_linear(self.patch_embed.proj)
            nn.init.normal_(cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if cls_token is None:
            init_as_linear(self.patch_embed.proj)
        self.init_decoder_tokens()

    def init_decoder_tokens(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)

    def sample_masks(self, imgs: torch.Tensor, generator: torch.Generator | None = None) -> Masks:
        return random_masking(imgs.shape[0], self.num_patches, self.mask_ratio, self.pred_ratio,
                              device=imgs.device, generator=generator)

    def predict_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder tokens [N, P, D_dec] -> pixel predictions [N, P, p*p*C]."""
        return self.decoder_pred(self.decoder_norm(x))

    def forward(self, imgs: torch.Tensor, masks: Masks | None = None) -> PretrainOutput:
        self.check_input(imgs)
        masks = self.sample_masks(imgs) if masks is None else masks
        pred = self.forward_decoder(self.decoder_memory(imgs, masks), masks)
        loss = reconstruction_loss(imgs, pred, masks.ids_pred, self.patch_size, self.norm_pix_loss)
        return PretrainOutput(loss, pred, masks)


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


class CrossAttentionDecoder(MaskedAutoencoder):
    """CrossMAE's decoder: queries (the mask token + the position of a predicted patch) read the family's
    ``decoder_memory`` (one [N, K, D_enc] tensor per block) through cross-attention only, so just the
    predicted patches are decoded. Inter-block attention gives block j its own mix sum_i W[j, i] F_i of
    encoder feature maps, through its own LayerNorm."""

    def add_inter_block_mix(self, num_feature_maps: int, width: int, decoder_depth: int) -> None:
        self.wfm = WeightedFeatureMaps(num_feature_maps, decoder_depth)
        self.dec_norms = nn.ModuleList([LayerNorm(width) for _ in range(decoder_depth)])

    def mix_feature_maps(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Feature maps F_i (each [N, K, width]) -> each decoder block's normed mix."""
        mixed = self.wfm(torch.stack(feats))
        return [norm(m) for m, norm in zip(mixed.unbind(0), self.dec_norms)]

    def add_cross_attention_decoder(self, memory_dim: int, decoder_embed_dim: int, depth: int, num_heads: int,
                                    mlp_ratio: float, self_attn: bool, pos_embed: torch.Tensor) -> None:
        self.add_decoder([CrossAttentionBlock(memory_dim, decoder_embed_dim, num_heads, mlp_ratio, self_attn=self_attn,
                                              norm_layer=LayerNorm) for _ in range(depth)], pos_embed)

    def decoder_queries(self, masks: Masks) -> torch.Tensor:
        pos = self.decoder_pos_embed[:, -self.num_patches:]  # past the ViT's cls slot
        return gather_tokens(pos.expand(masks.ids_pred.shape[0], -1, -1), masks.ids_pred) + self.mask_token

    def forward_decoder(self, memory: list[torch.Tensor], masks: Masks,
                        every_block: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Pixel predictions [N, P, p*p*C] at masks.ids_pred; every_block=True reads each block's output
        through the head (a list, the last one the prediction)."""
        x = self.decoder_queries(masks)
        readouts = []
        for blk, mem in zip(self.decoder_blocks, memory):
            x = blk(x, mem)
            if every_block:
                readouts.append(self.predict_pixels(x))
        return readouts if every_block else self.predict_pixels(x)


class SelfAttentionDecoder(MaskedAutoencoder):
    """MAE's decoder: self-attention over the family's ``decoder_tokens`` (the visible tokens and the mask
    token at every masked patch, in image order), predicting every masked patch."""

    def add_self_attention_decoder(self, decoder_embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
                                   pos_embed: torch.Tensor, learn_pos: bool = False) -> None:
        self.add_decoder([Block(decoder_embed_dim, num_heads, mlp_ratio, norm_layer=LayerNorm) for _ in range(depth)],
                         pos_embed, learn_pos)

    def readout(self, x: torch.Tensor, masks: Masks) -> torch.Tensor:
        """Decoder tokens -> pixel predictions at the masked positions (picked before the norm: LayerNorm is
        per token, so normalising only the predicted ones gives the same values)."""
        return self.predict_pixels(gather_tokens(x[:, -self.num_patches:], masks.ids_pred))  # past a cls token

    def forward_decoder(self, memory: torch.Tensor, masks: Masks,
                        every_block: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Pixel predictions at masks.ids_pred (every masked patch), [N, P, p*p*C]; every_block as CrossMAE's."""
        x = self.decoder_tokens(memory, masks)
        readouts = []
        for blk in self.decoder_blocks:
            x = blk(x)
            if every_block:
                readouts.append(self.readout(x, masks))
        return readouts if every_block else self.readout(x, masks)
