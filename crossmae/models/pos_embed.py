"""Fixed 2-D sin-cos position embeddings (MAE convention) and patchify helpers."""
from __future__ import annotations

import torch


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """positions [M] -> [M, embed_dim]: half sines, half cosines."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000 ** omega
    angles = positions.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(embed_dim: int, grid_h: int, grid_w: int, cls_token: bool = False) -> torch.Tensor:
    """[grid_h * grid_w (+1), embed_dim] float32, row-major over the grid.

    Same values and layout as MAE's ``get_2d_sincos_pos_embed``: the first half of
    the channels encodes the column index, the second half the row index; the cls
    slot (when asked for) is zeros.
    """
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {embed_dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    emb = torch.cat([sincos_1d(embed_dim // 2, cols.flatten()), sincos_1d(embed_dim // 2, rows.flatten())], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, (H/p)*(W/p), p*p*C], pixels ordered (p, p, C) as in MAE."""
    n, c, h, w = imgs.shape
    p = patch_size
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid_h: int, grid_w: int, channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    n = patches.shape[0]
    p = patch_size
    x = patches.reshape(n, grid_h, grid_w, p, p, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(n, channels, grid_h * p, grid_w * p)
