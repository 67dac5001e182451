"""Position helpers for dense-prediction ViTs: window partition, relative positions, abs-pos resizing.

Pure functions with tensors in and out, used by :mod:`crossmae.models.dense_vit`:

* ViTDet's non-overlapping window attention: :func:`window_partition` pads the
  [B, H, W, C] map to a multiple of the window and cuts it; :func:`window_unpartition`
  undoes both.
* ViTDet's decomposed relative position embeddings (one table per axis, the bias depends
  on the query): :func:`get_rel_pos`, :func:`decomposed_rel_pos_bias`.
* BEiT / mmseg-MAE's relative position bias table (one learned scalar per head and
  offset): :func:`relative_position_index`, :func:`resize_bias_table`.
* :func:`resize_abs_pos`: a (cls slot +) grid position embedding bicubically resized to
  another grid, as ViTDet's ``get_abs_pos`` does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _pair(x) -> tuple[int, int]:
    return (int(x), int(x)) if isinstance(x, (int, float)) else (int(x[0]), int(x[1]))


# --------------------------------------------------------------------------- windows
def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, H, W, C] -> ([B * nH * nW, ws, ws, C], (Hp, Wp)); zero-pads bottom/right to a multiple of ws."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window_size, (-w) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int],
                       hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: [B * nH * nW, ws, ws, C] -> [B, H, W, C], padding removed."""
    (hp, wp), (h, w) = pad_hw, hw
    b = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w].contiguous() if (hp, wp) != (h, w) else x


def window_padding_mask(hw: tuple[int, int], window_size: int, device=None) -> torch.Tensor:
    """[nH * nW, ws * ws] bool, True at the zero-padded positions of each window (one image)."""
    h, w = hw
    pad = F.pad(torch.zeros(1, h, w, 1, device=device), (0, 0, 0, (-w) % window_size, 0, (-h) % window_size), value=1.0)
    pad, _ = window_partition(pad, window_size)
    return pad.reshape(pad.shape[0], -1) > 0.5


# --------------------------------------------------------------------------- decomposed (ViTDet)
def resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """[L, C] table of offsets -> [length, C], linear interpolation; the same tensor when L == length."""
    if rel_pos.shape[0] == length:
        return rel_pos
    return F.interpolate(rel_pos.t()[None], size=length, mode="linear").squeeze(0).t()


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Embeddings of the offsets between q_size query and k_size key positions: [q_size, k_size, C].

    The table covers 2 * max(q_size, k_size) - 1 offsets (resized if it was made for
    another size); when the sizes differ the shorter axis is stretched onto the longer
    one's coordinates."""
    table = resize_rel_pos(rel_pos, 2 * max(q_size, k_size) - 1)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    offsets = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return table[offsets.long()]


def decomposed_rel_pos_bias(q: torch.Tensor, q_hw: tuple[int, int], k_hw: tuple[int, int],
                            rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor) -> torch.Tensor:
    """Additive attention bias [B, heads, qh*qw, kh*kw] from queries q [B, heads, qh*qw, d] (unscaled):
    bias[(i, j), (k, l)] = q_ij . Rh[i - k] + q_ij . Rw[j - l]."""
    (qh, qw), (kh, kw) = q_hw, k_hw
    rh = get_rel_pos(qh, kh, rel_pos_h).to(q.dtype)
    rw = get_rel_pos(qw, kw, rel_pos_w).to(q.dtype)
    b, nh, _, d = q.shape
    r_q = q.reshape(b, nh, qh, qw, d)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, nh, qh * qw, kh * kw)


# --------------------------------------------------------------------------- bias table (BEiT / mmseg-MAE)
def num_relative_distances(hw: tuple[int, int], cls_token: bool = False) -> int:
    """Rows of a bias table for a grid: one per 2-D offset, plus 3 (cls->token, token->cls, cls->cls)."""
    return (2 * hw[0] - 1) * (2 * hw[1] - 1) + (3 if cls_token else 0)


def relative_position_index(hw: tuple[int, int], cls_token: bool = False, device=None) -> torch.Tensor:
    """[N, N] (N = h*w, +1 with a cls token first) long: the table row for each query/key pair."""
    h, w = hw
    coords = torch.stack(torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                        indexing="ij")).flatten(1)  # [2, N]
    rel = coords[:, :, None] - coords[:, None, :]
    index = (rel[0] + h - 1) * (2 * w - 1) + (rel[1] + w - 1)
    if not cls_token:
        return index
    n = h * w
    num = num_relative_distances(hw)
    full = torch.empty(n + 1, n + 1, dtype=torch.long, device=device)
    full[1:, 1:] = index
    full[0, 1:] = num
    full[1:, 0] = num + 1
    full[0, 0] = num + 2
    return full


def resize_bias_table(table: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int],
                      cls_token: bool = False) -> torch.Tensor:
    """[num_rel(src), heads] -> [num_rel(dst), heads]: the 2-D offset part bicubically resized
    (as an image of (2h-1) x (2w-1) offsets), the 3 cls entries kept as they are."""
    if tuple(src_hw) == tuple(dst_hw):
        return table
    n_src = num_relative_distances(src_hw)
    grid = table[:n_src].t().reshape(1, -1, 2 * src_hw[0] - 1, 2 * src_hw[1] - 1)
    grid = F.interpolate(grid.float(), size=(2 * dst_hw[0] - 1, 2 * dst_hw[1] - 1), mode="bicubic",
                         align_corners=False).to(table.dtype)
    out = grid.reshape(table.shape[1], -1).t()
    return torch.cat([out, table[n_src:]], dim=0) if cls_token else out


# --------------------------------------------------------------------------- absolute positions
def grid_from_length(n: int, what: str = "pos_embed") -> tuple[int, int]:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{what}: {n} positions do not form a square grid; pass its grid size explicitly")
    return side, side


def resize_abs_pos(pos_embed: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int],
                   num_prefix: int = 1) -> torch.Tensor:
    """[1, num_prefix + src_h*src_w, C] -> [1, num_prefix + dst_h*dst_w, C]: the grid part bicubically
    resized (align_corners=False, no antialias, like ViTDet), the prefix (cls) slots kept."""
    if tuple(src_hw) == tuple(dst_hw):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    if grid.shape[1] != src_hw[0] * src_hw[1]:
        raise ValueError(f"pos_embed has {grid.shape[1]} grid positions, not {src_hw[0]}x{src_hw[1]}")
    grid = grid.reshape(1, src_hw[0], src_hw[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(dst_hw), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, dst_hw[0] * dst_hw[1], -1).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
