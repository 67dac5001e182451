"""CrossMAE on Hiera: mask-unit masking in the encoder, CrossMAE's cross-attention-only decoder.

Queries (a shared mask token + fixed sin-cos position of the prediction grid) sit at the ``pred_ratio``
subset of masked patches (one patch per last-stage token: 16 px at Hiera's 224 px recipe) and read only
the encoder's visible tokens. Inter-block attention (``inter_block``) gives decoder block j its own learned
mix sum_i W[j, i] F_i, through its own LayerNorm, of encoder features brought to one width and the last
stage's token grid:

* ``"stages"`` (default): F_i = the output of every stage, each through a per-unit convolution with
  kernel = stride (MAE-Hiera's multi-scale fusion head) to the last stage's width and grid;
* ``"middle"``: F_i = the output of every block at the last stage's grid (the ViT-like stages after the
  last q-pool, as the CrossMAE authors suggest), each stage's width brought to the last one's by a linear;
* ``"none"``: every decoder block reads the last stage's output through a final norm.

docs/hiera.md has the measurements behind the default.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..masking import Masks
from .autoencoder import CrossAttentionDecoder
from .blocks import LayerNorm
from .hiera import MaskedHieraPretrainer, apply_per_unit, fusion_conv
from .pos_embed import sincos_2d

INTER_BLOCK = ("stages", "middle", "none")


def flatten_units(x: torch.Tensor) -> torch.Tensor:
    """[N, U, t, t, C] -> [N, U * t * t, C]."""
    return x.flatten(1, 3)


class CrossMAEHiera(MaskedHieraPretrainer, CrossAttentionDecoder):
    """Keyword arguments beyond the decoder's and the masking's are :class:`~crossmae.models.hiera.HieraEncoder`'s."""

    def __init__(self, decoder_embed_dim: int = 512, decoder_depth: int = 8, decoder_num_heads: int = 16,
                 mlp_ratio: float = 4.0, mask_ratio: float = 0.6, pred_ratio: float = 0.6, norm_pix_loss: bool = True,
                 inter_block: str = "stages", decoder_self_attn: bool = False, **encoder_kwargs):
        super().__init__(mask_ratio, pred_ratio, norm_pix_loss, mlp_ratio=mlp_ratio, **encoder_kwargs)
        if inter_block not in INTER_BLOCK:
            raise ValueError(f"inter_block must be one of {', '.join(INTER_BLOCK)}, got {inter_block!r}")
        self.inter_block = inter_block
        width, side = self.embed_dim, self.units_side
        if inter_block == "none":
            self.norm = LayerNorm(width)
        else:
            last_pooled = min(self.q_pool, len(self.stages) - 1)
            self.mix_sources = (self.stage_ends if inter_block == "stages" else
                                [i for i, s in enumerate(self.block_stage) if s >= last_pooled])
            mixed_stages = sorted({self.block_stage[i] for i in self.mix_sources})
            self.fuse = nn.ModuleDict({str(s): fusion_conv(self.stage_dims[s], width, self.stage_sides[s], side)
                                       for s in mixed_stages})
            self.add_inter_block_mix(len(self.mix_sources), width, decoder_depth)
        self.add_cross_attention_decoder(width, decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio,
                                         decoder_self_attn, sincos_2d(decoder_embed_dim, *self.grid_size)[None])
        self.init_weights()

    def decoder_memory(self, imgs: torch.Tensor, masks: Masks) -> list[torch.Tensor]:
        """What each decoder block attends to: one [N, U_visible * t * t, C_last] tensor per block, built
        from the visible units only."""
        outputs = self.forward_blocks(imgs, self.visible_units(masks))
        if self.inter_block == "none":
            return [self.norm(outputs[-1])] * len(self.decoder_blocks)
        return self.mix_feature_maps([flatten_units(apply_per_unit(self.fuse[str(self.block_stage[i])],
                                                                   self.to_units(outputs[i], i)))
                                      for i in self.mix_sources])

    def describe(self) -> str:
        dec = f"dec {len(self.decoder_blocks)}x{self.decoder_norm.normalized_shape[0]}"
        extra = "" if not self.decoder_blocks[0].has_self_attn else " +self-attn"
        return f"CrossMAE {super().describe()} γ{self.pred_ratio:g} {dec} mix {self.inter_block}{extra}"
