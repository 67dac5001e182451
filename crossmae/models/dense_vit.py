"""Plain-ViT backbone for dense prediction, shared by ViTDet (det/) and UperNet (seg/).

One class, :class:`DenseViT`, covers both transfer recipes:

* ViTDet (Li et al. 2022, detectron2 ``ViT``): no cls token in the sequence, the
  pretrained absolute position embedding bicubically resized to the feature grid every
  forward, window attention (window 14, zero padding) in all blocks but a few global
  ones, decomposed relative position embeddings (zero-initialised, resized to the
  window / grid they are used at), drop path; output: the last block's map.
* mmseg's MAE backbone (BEiT recipe): global attention everywhere, a per-block relative
  position bias table (zero-initialised), layer scale, absolute position embeddings
  resized once to the 512 / 16 = 32 x 32 grid; output: the maps of blocks 3, 5, 7, 11 (B).

Parameter names are the pretraining encoder's (timm's): ``patch_embed.proj``,
``pos_embed`` (with its cls slot, [1, 1 + h*w, C]), ``cls_token`` (only when it is used),
``blocks.{i}.norm1 / attn.qkv / attn.proj / norm2 / mlp.fc1 / mlp.fc2``. The new parts are
``blocks.{i}.attn.rel_pos_h / rel_pos_w`` (detectron2's names),
``blocks.{i}.attn.relative_position_bias_table`` and ``blocks.{i}.gamma_1 / gamma_2``
(BEiT's names), ``out_norms.{k}``. :meth:`DenseViT.load_pretrained` loads
``crossmae.engine.checkpoint.encoder_state(...)`` and says which keys were new.

Attention runs through ``scaled_dot_product_attention`` with the relative-position term
passed as a float ``attn_mask``, so it stays on the fused (memory-efficient) kernels.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import PatchEmbed, trunc_normal_

from .blocks import Block, LayerNorm, SelfAttention, attend
from .rel_pos import (_pair, decomposed_rel_pos_bias, num_relative_distances, relative_position_index,
                      resize_abs_pos, resize_bias_table, window_padding_mask, window_partition, window_unpartition)
from .sizes import vit_encoder
from .transfer import load_encoder_weights

REL_POS_KINDS = ("none", "decomposed", "bias_table")
# parameters a pretraining encoder never has: load_pretrained reports them as missing, never as an error
NEW_PARAM_PATTERN = re.compile(r"(\.rel_pos_[hw]|\.relative_position_bias_table|\.gamma_[12])$|^out_norms\.")
# encoder keys the backbone may not use: reported as unexpected, never an error
IGNORABLE_KEYS = ("cls_token", "norm.weight", "norm.bias", "pos_embed")


class RelPosAttention(SelfAttention):
    """timm-named self-attention (``qkv``, ``proj``) with an optional relative-position term.

    rel_pos='decomposed': ``rel_pos_h`` [2h-1, head_dim], ``rel_pos_w`` [2w-1, head_dim];
    rel_pos='bias_table': ``relative_position_bias_table`` [(2h-1)(2w-1) (+3 with cls), heads].
    Both are made for ``input_size`` (h, w) tokens and resized when used at another size.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, rel_pos: str = "none",
                 input_size: tuple[int, int] | None = None, cls_token: bool = False):
        super().__init__(dim, num_heads, qkv_bias)
        if rel_pos not in REL_POS_KINDS:
            raise ValueError(f"rel_pos must be one of {REL_POS_KINDS}, got {rel_pos!r}")
        if rel_pos != "none" and input_size is None:
            raise ValueError("relative positions need input_size (the token grid they are made for)")
        if rel_pos == "decomposed" and cls_token:
            raise ValueError("decomposed relative positions are defined on the grid only; use no cls token")
        self.rel_pos = rel_pos
        self.input_size = _pair(input_size) if input_size is not None else None
        self.cls_token = cls_token
        head_dim = dim // num_heads
        if rel_pos == "decomposed":
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * self.input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * self.input_size[1] - 1, head_dim))
        elif rel_pos == "bias_table":
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(num_relative_distances(self.input_size, cls_token), num_heads))
            # derived from the grid, so not saved: checkpoints stay free of it
            self.register_buffer("relative_position_index", relative_position_index(self.input_size, cls_token),
                                 persistent=False)

    def table_bias(self, hw: tuple[int, int]) -> torch.Tensor:
        """[heads, N, N] bias from the table for an (h, w) grid (+ cls)."""
        table, index = self.relative_position_bias_table, self.relative_position_index
        if tuple(hw) != self.input_size:
            table = resize_bias_table(table, self.input_size, hw, self.cls_token)
            index = relative_position_index(hw, self.cls_token, device=table.device)
        n = index.shape[0]
        return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], key_padding: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, C] tokens of an (h, w) grid (after a cls token if there is one);
        key_padding [B, N] bool, True for keys to ignore."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = None
        if self.rel_pos == "decomposed":
            bias = decomposed_rel_pos_bias(q, hw, hw, self.rel_pos_h, self.rel_pos_w)
        elif self.rel_pos == "bias_table":
            bias = self.table_bias(hw)[None]
        if key_padding is not None:
            pad = torch.zeros(key_padding.shape, dtype=q.dtype, device=q.device)
            pad = pad.masked_fill(key_padding, float("-inf"))[:, None, None, :]
            bias = pad if bias is None else bias + pad
        if bias is None:
            out = attend(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DenseBlock(Block):
    """Pre-norm ViT block (timm names) with window or global attention, relative positions and layer scale.

    window_size > 0: attention within non-overlapping ws x ws windows of the zero-padded
    grid (ViTDet); padded keys take part unless ``mask_window_padding``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 window_size: int = 0, rel_pos: str = "none", input_size: tuple[int, int] | None = None,
                 layer_scale_init: float | None = None, cls_token: bool = False, mask_window_padding: bool = False):
        super().__init__(dim, num_heads, mlp_ratio, drop_path, norm_layer=LayerNorm)
        if window_size and cls_token:
            raise ValueError("window attention works on the grid only; it cannot take a cls token")
        self.window_size = window_size
        self.mask_window_padding = mask_window_padding
        self.attn = RelPosAttention(dim, num_heads, rel_pos=rel_pos, cls_token=cls_token,
                                    input_size=(window_size, window_size) if window_size else input_size)
        if layer_scale_init is not None:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def window_attention(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        ws = self.window_size
        windows, pad_hw = window_partition(x.reshape(b, hw[0], hw[1], c), ws)
        key_padding = None
        if self.mask_window_padding and pad_hw != tuple(hw):
            key_padding = window_padding_mask(hw, ws, device=x.device).repeat(b, 1)
        out = self.attn(windows.reshape(-1, ws * ws, c), (ws, ws), key_padding)
        return window_unpartition(out.reshape(-1, ws, ws, c), ws, pad_hw, hw).reshape(b, n, c)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        y = self.norm1(x)
        y = self.window_attention(y, hw) if self.window_size else self.attn(y, hw)
        x = x + self.drop_path(y if self.gamma_1 is None else self.gamma_1 * y)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y if self.gamma_2 is None else self.gamma_2 * y)


class DenseViT(nn.Module):
    """Plain ViT returning feature maps [B, C, H/p, W/p] at ``out_indices``.

    Args:
        img_size: input size the model is built for; global blocks' relative positions
            are made for its token grid (other sizes work: the tables are resized).
        pretrain_img_size: size whose token grid the stored ``pos_embed`` has. ViTDet keeps
            the pretraining 224 and resizes every forward; mmseg-MAE resizes once at load
            (set it equal to img_size). None: img_size.
        patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio: the ViT.
        drop_path_rate: stochastic depth, rising linearly from 0 (block 0) to this (last block).
        window_size: window attention size in tokens for blocks not in global_attn_indexes;
            0 = global attention everywhere.
        global_attn_indexes: blocks with global attention when window_size > 0.
        mask_window_padding: exclude the zero padding of window attention from the keys
            (ViTDet/detectron2 does not; False reproduces it).
        rel_pos: 'none' | 'decomposed' (ViTDet) | 'bias_table' (BEiT / mmseg-MAE); zero-initialised.
        layer_scale_init: None, or the initial value of per-channel ``gamma_1``/``gamma_2`` (mmseg-MAE: 1.0).
        use_abs_pos: add ``pos_embed`` (resized to the input grid, bicubic).
        use_cls_token: prepend the (pretrained) cls token to the sequence (mmseg-MAE); it
            needs global attention everywhere and is dropped from the outputs.
        out_indices: blocks whose outputs are returned, increasing; negative counts from the end.
        out_norm: a LayerNorm on each returned map (``out_norms.{k}``).
        use_act_checkpoint: recompute each block in the backward pass (saves memory when training).
    """

    def __init__(self, img_size: int | Sequence[int] = 1024, pretrain_img_size: int | Sequence[int] | None = 224,
                 patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 window_size: int = 0, global_attn_indexes: Sequence[int] = (), mask_window_padding: bool = False,
                 rel_pos: str = "none", layer_scale_init: float | None = None, use_abs_pos: bool = True,
                 use_cls_token: bool = False, out_indices: Sequence[int] = (-1,), out_norm: bool = False,
                 use_act_checkpoint: bool = False):
        super().__init__()
        self.img_size = _pair(img_size)
        self.pretrain_img_size = _pair(pretrain_img_size if pretrain_img_size is not None else img_size)
        for name, size in (("img_size", self.img_size), ("pretrain_img_size", self.pretrain_img_size)):
            if size[0] % patch_size or size[1] % patch_size:
                raise ValueError(f"{name} {size} is not divisible by patch_size {patch_size}")
        if rel_pos not in REL_POS_KINDS:
            raise ValueError(f"rel_pos must be one of {REL_POS_KINDS}, got {rel_pos!r}")
        if any(not -depth <= i < depth for i in global_attn_indexes):
            raise ValueError(f"global_attn_indexes {tuple(global_attn_indexes)} out of range for depth {depth}")
        self.out_indices = tuple(i % depth if -depth <= i < depth else i for i in out_indices)
        if not self.out_indices or any(not 0 <= i < depth for i in self.out_indices) or \
                list(self.out_indices) != sorted(set(self.out_indices)):
            raise ValueError(f"out_indices must be increasing block indices < depth {depth}, got {tuple(out_indices)}")
        global_blocks = {i % depth for i in global_attn_indexes}
        if use_cls_token and window_size and len(global_blocks) < depth:
            raise ValueError("use_cls_token needs global attention in every block (window_size=0)")

        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.depth = depth
        self.use_act_checkpoint = use_act_checkpoint
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.pos_grid = (self.pretrain_img_size[0] // patch_size, self.pretrain_img_size[1] // patch_size)
        self.num_prefix_tokens = int(use_cls_token)

        self.patch_embed = PatchEmbed(None, patch_size, in_chans, embed_dim, output_fmt="NHWC")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if use_cls_token else None
        # the cls slot is kept (timm / MAE layout) so pretrained position tables load as they are
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pos_grid[0] * self.pos_grid[1], embed_dim)) \
            if use_abs_pos else None
        dpr = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]  # linear, 0 at block 0
        self.blocks = nn.ModuleList([
            DenseBlock(embed_dim, num_heads, mlp_ratio, drop_path=dpr[i],
                       window_size=0 if i in global_blocks else window_size, rel_pos=rel_pos,
                       input_size=self.grid_size, layer_scale_init=layer_scale_init, cls_token=use_cls_token,
                       mask_window_padding=mask_window_padding)
            for i in range(depth)])
        self.out_norms = nn.ModuleList([LayerNorm(embed_dim) for _ in self.out_indices]) if out_norm else None
        self.init_weights()

    # the dense-backbone contract (crossmae.models.dense.DenseBackbone): one map per out index, all at the patch stride
    @property
    def out_channels(self) -> list[int]:
        return [self.embed_dim] * len(self.out_indices)

    @property
    def out_strides(self) -> list[int]:
        return [self.patch_size] * len(self.out_indices)

    @property
    def size_divisor(self) -> int:
        return self.patch_size

    def init_weights(self) -> None:
        """ViTDet's: trunc-normal(0.02) linears and position/cls tokens, zero biases, unit norms;
        relative positions stay zero. Pretrained weights then replace what they have."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.pos_embed, self.cls_token):
            if p is not None:
                trunc_normal_(p, std=0.02)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images [B, {self.in_chans}, H, W], got {list(x.shape)}")
        if x.shape[2] % self.patch_size or x.shape[3] % self.patch_size:
            raise ValueError(f"image size {tuple(x.shape[2:])} is not divisible by the patch size "
                             f"{self.patch_size}; pad the input first")

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images -> tokens [B, prefix + h*w, C] with positions, and the grid (h, w)."""
        x = self.patch_embed(x)  # [B, h, w, C]
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        if self.pos_embed is not None:
            pos = resize_abs_pos(self.pos_embed, self.pos_grid, (h, w))
            x = x + pos[:, 1:]
        if self.cls_token is not None:
            cls = self.cls_token if self.pos_embed is None else self.cls_token + self.pos_embed[:, :1]
            x = torch.cat([cls.expand(b, -1, -1), x], dim=1)
        return x, (h, w)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, in_chans, H, W] (H, W multiples of patch_size) -> one [B, C, H/p, W/p] map per out index."""
        self.check_input(x)
        x, (h, w) = self.embed(x)
        outs = []
        for i, blk in enumerate(self.blocks[:self.out_indices[-1] + 1]):
            if self.use_act_checkpoint and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, (h, w), use_reentrant=False)
            else:
                x = blk(x, (h, w))
            if i in self.out_indices:
                y = x[:, self.num_prefix_tokens:]
                if self.out_norms is not None:
                    y = self.out_norms[len(outs)](y)
                outs.append(y.transpose(1, 2).reshape(x.shape[0], self.embed_dim, h, w))
        return outs

    # ------------------------------------------------------------------ pretrained weights
    def load_pretrained(self, state: dict[str, torch.Tensor], resize_patch_embed: bool = False
                        ) -> tuple[list[str], list[str]]:
        """Load a pretraining encoder's weights (``encoder_state(model_state(load_checkpoint(p)))``) through
        :func:`crossmae.models.transfer.encoder_weights`: ``pos_embed`` resized from the checkpoint's square
        grid to ``pos_grid``; with ``resize_patch_embed`` a patch projection of another kernel size is
        resampled (ViTDet-H loads the p14 MAE-H into p16). Returns (missing, unexpected): missing are only
        the new parts (relative positions, layer scales, output norms); unexpected only encoder keys this
        backbone does not use (cls_token without use_cls_token, the encoder's final norm, pos_embed without
        use_abs_pos). Anything else raises CheckpointError naming the keys."""
        loaded = load_encoder_weights(self, state, is_new=lambda k: bool(NEW_PARAM_PATTERN.search(k)),
                                      unused=IGNORABLE_KEYS, pos_grid=self.pos_grid,
                                      resize_patch_embed=resize_patch_embed)
        return loaded.missing, loaded.unexpected


# ---------------------------------------------------------------------- per-depth recipes (sizes: .sizes)
def vitdet_global_indexes(depth: int) -> tuple[int, ...]:
    """Four evenly spaced global-attention blocks: B 2,5,8,11; L 5,11,17,23; H 7,15,23,31."""
    step = max(1, depth // 4)
    return tuple(sorted({min(depth, step * (k + 1)) - 1 for k in range(4)}))


def seg_out_indices(depth: int) -> tuple[int, ...]:
    """Blocks at 1/3, 1/2, 2/3 and all of the depth: B 3,5,7,11; L 7,11,15,23; H 10,15,20,31."""
    return tuple(sorted({max(0, round(depth * f) - 1) for f in (1 / 3, 1 / 2, 2 / 3, 1)}))


def seg_backbone(size: str = "base", **overrides) -> DenseViT:
    """mmseg-MAE's UperNet backbone for a size: 512 input, pos_embed resized to 32 x 32 at load,
    the cls token in the sequence, global attention, relative position bias table (with its 3 cls
    entries), layer scale 1.0, drop path 0.1, features of blocks 3, 5, 7, 11 (B; scaled for
    other depths). Keyword arguments override."""
    kwargs = dict(vit_encoder(size), img_size=512, window_size=0, rel_pos="bias_table", layer_scale_init=1.0,
                  use_abs_pos=True, use_cls_token=True, drop_path_rate=0.1)
    kwargs.update(overrides)
    kwargs.setdefault("pretrain_img_size", kwargs["img_size"])
    kwargs.setdefault("out_indices", seg_out_indices(kwargs["depth"]))
    return DenseViT(**kwargs)
