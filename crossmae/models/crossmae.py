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

import torch

from ..masking import Masks, check_ratios
from .autoencoder import CrossAttentionDecoder, PretrainOutput, reconstruction_loss  # noqa: F401 (re-exported)
from .encoder import MaskedViTEncoder
from .pos_embed import sincos_2d


class CrossMAE(MaskedViTEncoder, CrossAttentionDecoder):
    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, decoder_embed_dim: int = 512, decoder_depth: int = 12,
                 decoder_num_heads: int = 16, mlp_ratio: float = 4.0, mask_ratio: float = 0.75,
                 pred_ratio: float = 0.75, norm_pix_loss: bool = True, inter_block: bool = True,
                 use_input: bool = True, decoder_self_attn: bool = False):
        super().__init__(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio,
                         final_norm=not inter_block)
        check_ratios(mask_ratio, pred_ratio)
        self.mask_ratio, self.pred_ratio, self.norm_pix_loss = mask_ratio, pred_ratio, norm_pix_loss
        self.inter_block = inter_block
        self.use_input = use_input
        if inter_block:
            self.add_inter_block_mix(depth + int(use_input), embed_dim, decoder_depth)
        pos_embed = sincos_2d(decoder_embed_dim, *self.grid_size, cls_token=True)[None]
        self.add_cross_attention_decoder(embed_dim, decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio,
                                         decoder_self_attn, pos_embed)
        self.init_weights()

    def decoder_memory(self, imgs: torch.Tensor, masks: Masks) -> list[torch.Tensor]:
        """What each decoder block attends to: one [N, 1 + K, D_enc] tensor per block."""
        if not self.inter_block:
            return [self.forward_features(imgs, masks.ids_keep)] * len(self.decoder_blocks)
        feats = self.forward_features(imgs, masks.ids_keep, collect=True)
        return self.mix_feature_maps(feats if self.use_input else feats[1:])
