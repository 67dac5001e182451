"""The MAE baseline (He et al., 2022): self-attention decoder over all tokens.

Keys follow MAE's ``models_mae.py`` (``decoder_embed``, ``mask_token``,
``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``), so
official MAE checkpoints load as they are.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..masking import Masks, check_ratios, gather_tokens
from .autoencoder import SelfAttentionDecoder
from .encoder import MaskedViTEncoder
from .pos_embed import sincos_2d


class MAE(MaskedViTEncoder, SelfAttentionDecoder):
    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, decoder_embed_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, mlp_ratio: float = 4.0, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = True):
        super().__init__(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, final_norm=True)
        check_ratios(mask_ratio, mask_ratio)
        # pred_ratio = mask_ratio: MAE reconstructs every masked patch
        self.mask_ratio, self.pred_ratio, self.norm_pix_loss = mask_ratio, mask_ratio, norm_pix_loss
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.add_self_attention_decoder(decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio,
                                        sincos_2d(decoder_embed_dim, *self.grid_size, cls_token=True)[None])
        self.init_weights()

    def decoder_memory(self, imgs: torch.Tensor, masks: Masks) -> torch.Tensor:
        """The encoded visible patches after the final norm, [N, 1 + K, D_enc]."""
        return self.forward_features(imgs, masks.ids_keep)

    def decoder_tokens(self, latent: torch.Tensor, masks: Masks) -> torch.Tensor:
        """Visible tokens + mask tokens, unshuffled to image order, with position: [N, 1 + L, D_dec]."""
        x = self.decoder_embed(latent)
        n, num_visible = x.shape[0], x.shape[1] - 1
        mask_tokens = self.mask_token.expand(n, self.num_patches - num_visible, -1)
        patches = gather_tokens(torch.cat([x[:, 1:], mask_tokens], dim=1), masks.ids_restore)
        return torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
