"""The MAE baseline (He et al., 2022): self-attention decoder over all tokens.

Keys follow MAE's ``models_mae.py`` (``decoder_embed``, ``mask_token``,
``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``), so
official MAE checkpoints load as they are.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..masking import Masks, check_ratios, gather_tokens, random_masking
from .blocks import Block
from .crossmae import PretrainOutput, reconstruction_loss
from .encoder import LayerNorm, MaskedViTEncoder
from .pos_embed import sincos_2d


class MAE(MaskedViTEncoder):
    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, decoder_embed_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, mlp_ratio: float = 4.0, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = True):
        super().__init__(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, final_norm=True)
        check_ratios(mask_ratio, mask_ratio)
        self.mask_ratio = mask_ratio
        self.pred_ratio = mask_ratio  # MAE reconstructs every masked patch
        self.norm_pix_loss = norm_pix_loss
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_2d(decoder_embed_dim, *self.grid_size, cls_token=True)[None],
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, norm_layer=LayerNorm)
            for _ in range(decoder_depth)])
        self.decoder_norm = LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans)
        self.init_weights()
        nn.init.normal_(self.mask_token, std=0.02)

    def sample_masks(self, imgs: torch.Tensor, generator: torch.Generator | None = None) -> Masks:
        return random_masking(imgs.shape[0], self.num_patches, self.mask_ratio, self.mask_ratio,
                              device=imgs.device, generator=generator)

    def decoder_tokens(self, latent: torch.Tensor, masks: Masks) -> torch.Tensor:
        """Visible tokens + mask tokens, unshuffled to image order, with position: [N, 1 + L, D_dec]."""
        x = self.decoder_embed(latent)
        n, num_visible = x.shape[0], x.shape[1] - 1
        mask_tokens = self.mask_token.expand(n, self.num_patches - num_visible, -1)
        patches = gather_tokens(torch.cat([x[:, 1:], mask_tokens], dim=1), masks.ids_restore)
        return torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed

    def readout(self, x: torch.Tensor, masks: Masks) -> torch.Tensor:
        """Decoder tokens -> pixel predictions at the masked positions (picked before the norm:
        LayerNorm is per token, so normalising only the predicted ones gives the same values)."""
        return self.decoder_pred(self.decoder_norm(gather_tokens(x[:, 1:], masks.ids_pred)))

    def forward_decoder(self, latent: torch.Tensor, masks: Masks,
                        every_block: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Pixel predictions at masks.ids_pred (every masked patch), [N, P, p*p*C]."""
        x = self.decoder_tokens(latent, masks)
        readouts = []
        for blk in self.decoder_blocks:
            x = blk(x)
            if every_block:
                readouts.append(self.readout(x, masks))
        return readouts if every_block else self.readout(x, masks)

    def forward(self, imgs: torch.Tensor, masks: Masks | None = None) -> PretrainOutput:
        self.check_input(imgs)
        masks = self.sample_masks(imgs) if masks is None else masks
        pred = self.forward_decoder(self.forward_features(imgs, masks.ids_keep), masks)
        loss = reconstruction_loss(imgs, pred, masks.ids_pred, self.patch_size, self.norm_pix_loss)
        return PretrainOutput(loss, pred, masks)
