"""Transformer blocks: the encoder/MAE-decoder block and CrossMAE's cross-attention block.

Every attention in the toolkit goes through :func:`attend`, which calls
``torch.nn.functional.scaled_dot_product_attention`` (FlashAttention / memory-
efficient kernels on GPU) or, when selected with :func:`set_backend` and installed,
the ``flash-attn`` package. Parameter names follow the official CrossMAE release
(``q``, ``kv``, ``proj``; ``norm1``, ``cross_attn``, ``norm2``, ``mlp``; ``norm0``,
``self_attn`` for the optional self-attention), so its checkpoints load as they are.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp

# every norm of the pretraining models and the dense backbones: MAE's, CrossMAE's, Hiera's and timm's Hiera
# all use eps 1e-6
LayerNorm = partial(nn.LayerNorm, eps=1e-6)

_BACKEND = "sdpa"


def set_backend(name: str) -> None:
    """'sdpa' (default) or 'flash' (the flash-attn package; CUDA, fp16/bf16 only)."""
    global _BACKEND
    if name not in ("sdpa", "flash"):
        raise ValueError(f"attention backend must be 'sdpa' or 'flash', got {name!r}")
    if name == "flash":
        try:
            import flash_attn  # noqa: F401
        except ImportError as e:
            raise ImportError("attention backend 'flash' needs the flash-attn package: pip install flash-attn") from e
    _BACKEND = name


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """q [B, H, Nq, d], k/v [B, H, Nk, d] -> [B, H, Nq, d]."""
    if _BACKEND == "flash" and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
        from flash_attn import flash_attn_func
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout_p)
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


class SelfAttention(nn.Module):
    """Multi-head self-attention with timm's parameter names (``qkv``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(attend(q, k, v).transpose(1, 2).reshape(b, n, c))


class CrossAttention(nn.Module):
    """Decoder queries [B, Nq, dec_dim] read encoder tokens [B, Nk, enc_dim]."""

    def __init__(self, encoder_dim: int, decoder_dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if decoder_dim % num_heads:
            raise ValueError(f"decoder_dim {decoder_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(decoder_dim, decoder_dim, bias=qkv_bias)
        self.kv = nn.Linear(encoder_dim, decoder_dim * 2, bias=qkv_bias)  # encoder width -> decoder width
        self.proj = nn.Linear(decoder_dim, decoder_dim)

    def split_heads(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, nq, c = x.shape
        h = self.num_heads
        q = self.q(x).reshape(b, nq, h, c // h).transpose(1, 2)
        k, v = self.kv(y).reshape(b, y.shape[1], 2, h, c // h).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(x, y)
        out = attend(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(x.shape))

    def attention_map(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Explicit softmax attention [B, heads, Nq, Nk], for analysis tools."""
        q, k, _ = self.split_heads(x, y)
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)


class Block(nn.Module):
    """Pre-norm ViT block with timm's parameter names (``norm1``, ``attn``, ``norm2``, ``mlp``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: [optional self-attention] -> cross-attention -> MLP."""

    def __init__(self, encoder_dim: int, decoder_dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 self_attn: bool = False, drop_path: float = 0.0, norm_layer=nn.LayerNorm):
        super().__init__()
        self.has_self_attn = self_attn
        if self_attn:
            self.norm0 = norm_layer(decoder_dim)
            self.self_attn = SelfAttention(decoder_dim, num_heads)
        self.norm1 = norm_layer(decoder_dim)
        self.cross_attn = CrossAttention(encoder_dim, decoder_dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(decoder_dim)
        self.mlp = Mlp(decoder_dim, int(decoder_dim * mlp_ratio))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        if self.has_self_attn:
            x = x + self.drop_path(self.self_attn(self.norm0(x)))
        x = x + self.drop_path(self.cross_attn(self.norm1(x), memory))
        return x + self.drop_path(self.mlp(self.norm2(x)))
