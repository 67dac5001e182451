"""MAE-Hiera, the baseline (Ryali et al., 2023, the reference's ``MaskedAutoencoderHiera``).

Encoder features of the stages before the last q-pool go through per-unit convolutions (kernel = stride)
to the last stage's width and grid and are summed with the last stage's output (the "multi-scale fusion";
the stages after the last pool are skipped, their grid being the last one's), then a norm. The decoder
puts the visible tokens and a mask token at every masked position back in image order, adds a learned
position embedding, runs self-attention blocks over all of them and predicts every masked patch.

Parameter names are the reference's (``multi_scale_fusion_heads``, ``encoder_norm``, ``decoder_embed``,
``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``). One
difference: a predicted patch's pixels are ordered (p, p, C) as everywhere in this toolkit, the
reference's (C, p, p); the loss is the same, a reference ``decoder_pred`` needs its rows permuted.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..masking import Masks
from .autoencoder import SelfAttentionDecoder
from .blocks import LayerNorm
from .hiera import MaskedHieraPretrainer, apply_per_unit, fusion_conv


class MAEHiera(MaskedHieraPretrainer, SelfAttentionDecoder):
    """Keyword arguments beyond the decoder's and the masking's are :class:`~crossmae.models.hiera.HieraEncoder`'s."""

    def __init__(self, decoder_embed_dim: int = 512, decoder_depth: int = 8, decoder_num_heads: int = 16,
                 mlp_ratio: float = 4.0, mask_ratio: float = 0.6, norm_pix_loss: bool = True, **encoder_kwargs):
        super().__init__(mask_ratio, mask_ratio, norm_pix_loss, mlp_ratio=mlp_ratio, **encoder_kwargs)
        width, side = self.embed_dim, self.units_side
        self.fused_stages = list(range(self.q_pool)) + [len(self.stages) - 1]
        self.multi_scale_fusion_heads = nn.ModuleList([
            fusion_conv(self.stage_dims[s], width, self.stage_sides[s], side) for s in self.fused_stages])
        self.encoder_norm = LayerNorm(width)
        self.decoder_embed = nn.Linear(width, decoder_embed_dim)
        self.add_self_attention_decoder(decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio,
                                        torch.zeros(1, self.num_patches, decoder_embed_dim), learn_pos=True)
        self.init_weights()

    def init_decoder_tokens(self) -> None:
        """The reference's: a learned position table, both truncated N(0, 0.02)."""
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)

    def decoder_memory(self, imgs: torch.Tensor, masks: Masks) -> torch.Tensor:
        """The fused, normed encoder output of the visible units: [N, U_visible * t * t, C_last]."""
        outputs = self.forward_blocks(imgs, self.visible_units(masks))
        fused = sum(apply_per_unit(head, self.to_units(outputs[self.stage_ends[s]], self.stage_ends[s]))
                    for head, s in zip(self.multi_scale_fusion_heads, self.fused_stages))
        return self.encoder_norm(fused.flatten(1, 3))

    def decoder_tokens(self, latent: torch.Tensor, masks: Masks) -> torch.Tensor:
        """Visible tokens at their patches, the mask token elsewhere, with position: [N, L, D_dec]."""
        x = self.decoder_embed(latent)
        where = self.encoder_tokens_to_patches(self.visible_units(masks))
        full = self.mask_token.to(x.dtype).expand(x.shape[0], self.num_patches, -1)
        full = full.scatter(1, where.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x)
        return full + self.decoder_pos_embed

    def describe(self) -> str:
        return f"MAE {super().describe()} dec {len(self.decoder_blocks)}x{self.decoder_norm.normalized_shape[0]}"
