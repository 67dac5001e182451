"""The ViT encoder shared by CrossMAE and MAE, with masking.

Parameter names are timm's (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.{i}``, ``norm``), so the encoder of any checkpoint loads into
``timm.models.vision_transformer.VisionTransformer`` without renaming.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import PatchEmbed

from ..masking import gather_tokens
from .blocks import Block, LayerNorm
from .hub_mixin import HubMixin
from .pos_embed import sincos_2d


class MaskedViTEncoder(nn.Module, HubMixin):
    """Plain ViT that encodes only the visible patches.

    ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` (Hugging Face Hub, safetensors) come from
    :class:`crossmae.models.hub_mixin.HubMixin`, for CrossMAE, MAE and the encoder alone.

    Position embeddings are fixed 2-D sin-cos, added before masking; the cls token
    (with its zero position embedding) is prepended after masking.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, final_norm: bool = True):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.grid_size = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_2d(embed_dim, *self.grid_size, cls_token=True)[None],
                                      requires_grad=False)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, norm_layer=LayerNorm)
            for _ in range(depth)])
        self.norm = LayerNorm(embed_dim) if final_norm else None

    def embed_visible(self, imgs: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Patch-embed, add position, keep the visible patches, prepend cls: [N, 1 + K, D]."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        x = gather_tokens(x, ids_keep)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def forward_features(self, imgs: torch.Tensor, ids_keep: torch.Tensor,
                         collect: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Encode the visible patches.

        collect=False: the last block's output, through the final norm if there is one.
        collect=True: [encoder input, block 1 output, ..., block depth output] (no norm),
        the feature maps that inter-block attention mixes.
        """
        x = self.embed_visible(imgs, ids_keep)
        feats = [x]
        for blk in self.blocks:
            x = blk(x)
            feats.append(x)
        if collect:
            return feats
        return self.norm(x) if self.norm is not None else x

    def check_input(self, imgs: torch.Tensor) -> None:
        expected = (self.in_chans, self.grid_size[0] * self.patch_size, self.grid_size[1] * self.patch_size)
        if imgs.ndim != 4 or tuple(imgs.shape[1:]) != expected:
            raise ValueError(f"expected images of shape [N, {expected[0]}, {expected[1]}, {expected[2]}], "
                             f"got {list(imgs.shape)}")
