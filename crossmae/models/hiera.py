"""Hiera (Ryali et al., ICML 2023) with mask units: the hierarchical encoder of CrossMAE-Hiera and MAE-Hiera.

Masking drops whole *mask units* (``mask_unit_size`` x ``mask_unit_size`` tokens; 32 x 32 px at Hiera's
224 px recipe) and the encoder sees only the visible ones, as Hiera's own MAE does: the pixels of masked
units are zeroed before the overlapping patch convolution (so no visible token sees a masked pixel),
q-pooling never crosses a unit border, the first stages attend inside each unit, the later ones globally
over the visible tokens only.

Token layout. Between blocks the tokens are ``[N, T * U, C]``: ``U`` (visible) units, row-major over the
unit grid, is the *innermost* index; ``T`` orders each unit's tokens so that every q-pool is a max over the
leading ``q_stride**2`` block (Hiera's "unroll"): the finest 2 x 2 neighbourhood offset first, the
coarsest last, then the tokens left after the last pool, row-major. Mask-unit attention is then attention
over each innermost index, and dropping units is a gather on it. :func:`unroll` / :func:`reroll` convert
to and from ``[N, U, t, t, C]`` (a unit's t x t tokens in image order).

Parameter names are timm's (``patch_embed.proj``, ``pos_embed``, ``blocks.{i}`` built from timm's
``HieraBlock``), so an encoder state dict loads into ``timm.models.hiera.Hiera`` of the same size (plus its
head) and gives the same features (tests/test_hiera.py). Hiera's MAE recipe pretrains with ``q_pool=2``
(the last stage is not pooled, so the predictions are 16 px patches); timm's classification models use
``q_pool=3``; pooling has no parameters, so the weights are the same.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
from timm.models.hiera import HieraBlock

from ..masking import Masks, check_ratios
from .blocks import LayerNorm
from .pos_embed import sincos_2d
from .rel_pos import resize_abs_pos
from .sizes import HIERA_LETTERS, HIERA_SIZES
from .transfer import load_encoder_weights


# (embed_dim, num_heads, stages) of Hiera-T/S/B/B+/L: timm's hiera_*_224 factories = the paper's Table 2


# ----------------------------------------------------------------------------- token layout (pure functions)
def unroll(x: torch.Tensor, unit: int, stride: int, steps: int) -> torch.Tensor:
    """[N, H, W, C] -> [N, T * U, C] (module docstring): units of ``unit`` x ``unit`` tokens, ``steps``
    pooling levels of ``stride``. A unit-local row is ((r_y * s + y_steps) * s + ...) * s + y_1."""
    n, h, w, c = x.shape
    r = unit // stride ** steps
    x = x.view(n, h // unit, r, *[stride] * steps, w // unit, r, *[stride] * steps, c)
    k = steps  # dims: 0 n, 1 uy, 2 ry, 3..2+k y_k..y_1, 3+k ux, 4+k rx, 5+k..4+2k x_k..x_1, 5+2k c
    offsets = [d for i in range(1, k + 1) for d in (3 + k - i, 5 + 2 * k - i)]  # y_1, x_1, y_2, x_2, ...
    return x.permute(0, *offsets, 2, 4 + k, 1, 3 + k, 5 + 2 * k).reshape(n, -1, c)


def reroll(x: torch.Tensor, num_units: int, side: int, stride: int, steps: int) -> torch.Tensor:
    """Inverse of :func:`unroll` up to the unit grid: [N, T * U, C] -> [N, U, side, side, C], where
    ``steps`` pooling levels are still unconsumed and each unit holds side x side tokens."""
    n, _, c = x.shape
    r, k = side // stride ** steps, steps
    x = x.view(n, *[stride] * (2 * k), r, r, num_units, c)  # y_1, x_1, ..., y_k, x_k, ry, rx, U
    ys = [1 + 2 * (i - 1) for i in range(k, 0, -1)]
    xs = [2 + 2 * (i - 1) for i in range(k, 0, -1)]
    return x.permute(0, 3 + 2 * k, 1 + 2 * k, *ys, 2 + 2 * k, *xs, 4 + 2 * k).reshape(n, num_units, side, side, c)


def units_to_image(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[N, U, t, t, C] with all U = gh * gw units -> [N, gh * t, gw * t, C]."""
    n, _, t, _, c = x.shape
    gh, gw = grid
    return x.view(n, gh, gw, t, t, c).permute(0, 1, 3, 2, 4, 5).reshape(n, gh * t, gw * t, c)


def unit_patch_ids(grid: tuple[int, int], side: int) -> torch.Tensor:
    """[U, side * side]: the row-major patch indices (a patch grid of side x side patches per unit) of each
    row-major unit, the patches of a unit in row-major order."""
    gh, gw = grid
    ids = torch.arange(gh * side * gw * side).view(gh, side, gw, side)
    return ids.permute(0, 2, 1, 3).reshape(gh * gw, side * side)


# ----------------------------------------------------------------------------- mask units
def unit_mask_counts(num_units: int, patches_per_unit: int, mask_ratio: float, pred_ratio: float) -> tuple[int, int]:
    """(visible units, predicted patches). Visible units: ``int(num_units * (1 - mask_ratio))`` as Hiera's
    ``get_random_mask``; predicted: the masked patches less ``int(L * (mask_ratio - pred_ratio))`` (CrossMAE's
    rule, ``pred_ratio`` a fraction of all L patches), so pred_ratio == mask_ratio predicts every masked one."""
    check_ratios(mask_ratio, pred_ratio)
    num_visible = int(num_units * (1 - mask_ratio))
    num_patches = num_units * patches_per_unit
    num_predicted = (num_units - num_visible) * patches_per_unit - int(num_patches * (mask_ratio - pred_ratio))
    if num_visible < 1 or num_visible == num_units or num_predicted < 1:
        raise ValueError(
            f"{num_units} mask units with mask_ratio={mask_ratio}, pred_ratio={pred_ratio} leave {num_visible} "
            f"visible units and {num_predicted} predicted patches: need at least one visible unit, one masked "
            f"unit and one predicted patch")
    return num_visible, num_predicted


def random_unit_masking(batch_size: int, grid: tuple[int, int], side: int, mask_ratio: float, pred_ratio: float,
                        device=None, generator: torch.Generator | None = None) -> Masks:
    """Masks over the prediction patches (``side`` x ``side`` per unit of a ``grid`` of units) whose visible
    patches are whole random units. ``ids_keep``: the visible units' patches, ascending; ``ids_pred``: a
    random subset of the masked patches, ascending; ``ids_restore`` inverts [visible, masked-only, predicted]."""
    num_units = grid[0] * grid[1]
    num_visible, num_predicted = unit_mask_counts(num_units, side * side, mask_ratio, pred_ratio)
    units = torch.rand(batch_size, num_units, device=device, generator=generator).argsort(dim=1)
    patch_ids = unit_patch_ids(grid, side).to(device)
    keep = patch_ids[units[:, :num_visible]].flatten(1).sort(dim=1).values
    masked = patch_ids[units[:, num_visible:]].flatten(1)
    order = torch.rand(masked.shape, device=device, generator=generator).argsort(dim=1)
    masked = masked.gather(1, order)  # a random order: the last num_predicted are predicted
    pred = masked[:, masked.shape[1] - num_predicted:].sort(dim=1).values
    masked_only = masked[:, :masked.shape[1] - num_predicted].sort(dim=1).values
    ids_restore = torch.cat([keep, masked_only, pred], dim=1).argsort(dim=1)
    return Masks(keep, pred, ids_restore)


def visible_units(masks: Masks, grid: tuple[int, int], side: int) -> torch.Tensor:
    """The visible units of ``masks`` [N, U_visible] (ascending); a ValueError when its visible patches are
    not whole units or their number differs between images."""
    n = masks.ids_keep.shape[0]
    vis = masks.visible_mask.view(n, grid[0], side, grid[1], side).permute(0, 1, 3, 2, 4).reshape(n, -1, side * side)
    unit_vis = vis.all(dim=-1)
    if not torch.equal(unit_vis, vis.any(dim=-1)):
        raise ValueError(f"masks: the visible patches must cover whole mask units of {side}x{side} patches")
    counts = unit_vis.sum(dim=1)
    if (counts != counts[0]).any() or counts[0] == 0:
        raise ValueError(f"masks: every image needs the same, non-zero number of visible units, got {counts.tolist()}")
    return unit_vis.nonzero()[:, 1].view(n, -1)


# ----------------------------------------------------------------------------- encoder
class HieraPatchEmbed(nn.Module):
    """Overlapping patch convolution (Hiera's 7x7, stride 4, padding 3) to channels-last tokens."""

    def __init__(self, img_size: int, in_chans: int, embed_dim: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel, stride, padding)

    def forward(self, imgs: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[N, C, H, W] -> [N, H / stride, W / stride, D]; ``pixel_mask`` [N, 1, H, W] zeroes masked pixels first."""
        if pixel_mask is not None:
            imgs = imgs * pixel_mask.to(imgs.dtype)
        return self.proj(imgs).permute(0, 2, 3, 1)


class HieraEncoder(nn.Module):
    """Hiera that encodes only the visible mask units (module docstring).

    ``embed_dim`` / ``num_heads`` are the first stage's (timm's arguments); ``self.embed_dim`` afterwards is
    the width of the features it outputs (the last stage's), as for the ViT encoder. Sizes: ``HIERA_SIZES``.
    """

    def __init__(self, img_size: int = 224, in_chans: int = 3, embed_dim: int = 96, num_heads: int = 1,
                 stages: Sequence[int] = (2, 3, 16, 3), q_pool: int = 2, q_stride: int = 2, mask_unit_size: int = 8,
                 mask_unit_attn: Sequence[bool] = (True, True, False, False), dim_mul: float = 2.0,
                 head_mul: float = 2.0, patch_kernel: int = 7, patch_stride: int = 4, patch_padding: int = 3,
                 mlp_ratio: float = 4.0, drop_path_rate: float = 0.0, norm_eps: float = 1e-6,
                 pos_embed_init: str = "trunc_normal"):
        super().__init__()
        stages, mask_unit_attn = tuple(int(s) for s in stages), tuple(bool(a) for a in mask_unit_attn)
        check_hiera_args(img_size, stages, q_pool, q_stride, mask_unit_size, mask_unit_attn, patch_stride)
        self.in_chans, self.q_pool, self.q_stride, self.stages = in_chans, q_pool, q_stride, stages
        self.mask_unit_size = mask_unit_size
        self.token_grid = img_size // patch_stride
        self.unit_grid = (self.token_grid // mask_unit_size,) * 2
        self.num_units = self.unit_grid[0] * self.unit_grid[1]
        self.patch_embed = HieraPatchEmbed(img_size, in_chans, embed_dim, patch_kernel, patch_stride, patch_padding)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.token_grid ** 2, embed_dim))
        init_pos_embed(self.pos_embed, pos_embed_init, self.token_grid)
        self.stage_ends = [sum(stages[:i + 1]) - 1 for i in range(len(stages))]
        self.blocks = nn.ModuleList()
        self.block_stage, self.block_side = [], []  # per block: its stage, its unit's tokens per side after it
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)
        dim, heads, side, stage = embed_dim, num_heads, mask_unit_size, 0
        dpr = [drop_path_rate * i / max(1, sum(stages) - 1) for i in range(sum(stages))]  # stochastic depth rule
        for i in range(sum(stages)):
            dim_out, pool = dim, 1
            use_unit_attn = mask_unit_attn[stage]  # Hiera lags the switch to global attention by one block
            if i - 1 in self.stage_ends:  # the first block of a stage widens (and pools while q_pool lasts)
                dim_out, heads, stage = int(dim * dim_mul), int(heads * head_mul), stage + 1
                if stage <= q_pool:
                    pool, side = q_stride ** 2, side // q_stride
            self.blocks.append(HieraBlock(dim, dim_out, heads, mlp_ratio, dpr[i], norm_layer=norm_layer,
                                          q_stride=pool, window_size=side * side, use_mask_unit_attn=use_unit_attn))
            self.block_stage.append(stage)
            self.block_side.append(side)
            dim = dim_out
        self.stage_dims = [self.blocks[e].dim_out for e in self.stage_ends]
        self.stage_sides = [self.block_side[e] for e in self.stage_ends]  # a unit's tokens per side
        self.embed_dim = self.stage_dims[-1]
        # per stage: channels and stride in pixels of its (unmasked) feature map, like timm's feature_info
        self.feature_info = [dict(num_chs=d, reduction=patch_stride * q_stride ** min(s, q_pool), module=f"blocks.{e}")
                             for s, (d, e) in enumerate(zip(self.stage_dims, self.stage_ends))]

    def pixel_mask(self, unit_keep: torch.Tensor) -> torch.Tensor:
        """[N, U_visible] unit ids -> [N, 1, H, W] float, 1 on the visible units' pixels."""
        n, (gh, gw) = unit_keep.shape[0], self.unit_grid
        units = torch.zeros(n, gh * gw, device=unit_keep.device).scatter_(1, unit_keep, 1.0).view(n, 1, gh, gw)
        size = self.patch_embed.img_size
        return units.repeat_interleave(size[0] // gh, dim=2).repeat_interleave(size[1] // gw, dim=3)

    def forward_blocks(self, imgs: torch.Tensor, unit_keep: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every block's output [N, T_i * U, C_i] in the unrolled layout, for the visible units ``unit_keep``
        [N, U_visible] (every unit when None)."""
        pixel_mask = None if unit_keep is None else self.pixel_mask(unit_keep)
        x = self.patch_embed(imgs, pixel_mask)
        x = x + self.pos_embed.view(1, *x.shape[1:3], -1)
        x = unroll(x, self.mask_unit_size, self.q_stride, self.q_pool)
        if unit_keep is not None:  # drop the masked units: a gather on the innermost (unit) index
            n, c = x.shape[0], x.shape[-1]
            x = x.view(n, -1, self.num_units, c)
            x = x.gather(2, unit_keep[:, None, :, None].expand(-1, x.shape[1], -1, c)).flatten(1, 2)
        outputs = []
        for blk in self.blocks:
            x = blk(x)
            outputs.append(x)
        return outputs

    def to_units(self, x: torch.Tensor, block: int) -> torch.Tensor:
        """Block ``block``'s output -> [N, U, t, t, C] (t: the unit's tokens per side at that block)."""
        side = self.block_side[block]
        steps = self.q_pool - min(self.block_stage[block], self.q_pool)
        return reroll(x, x.shape[1] // side ** 2, side, self.q_stride, steps)

    def forward_stages(self, imgs: torch.Tensor, unit_keep: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each stage's output in unit layout [N, U, t_s, t_s, C_s]."""
        outputs = self.forward_blocks(imgs, unit_keep)
        return [self.to_units(outputs[e], e) for e in self.stage_ends]

    def forward_feature_maps(self, imgs: torch.Tensor) -> list[torch.Tensor]:
        """Unmasked: each stage's feature map [N, C_s, H_s, W_s] (timm's ``forward_intermediates``; the
        channels and strides are ``feature_info``): what a detection or segmentation neck reads."""
        return [units_to_image(x, self.unit_grid).permute(0, 3, 1, 2) for x in self.forward_stages(imgs)]

    def pooled_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Unmasked: the mean of the last stage's tokens [N, C] (the kNN / linear-probe feature)."""
        return self.forward_blocks(imgs)[-1].mean(dim=1)

    def check_input(self, imgs: torch.Tensor) -> None:
        size = self.patch_embed.img_size
        if imgs.ndim != 4 or tuple(imgs.shape[1:]) != (self.in_chans, *size):
            raise ValueError(f"expected images of shape [N, {self.in_chans}, {size[0]}, {size[1]}], "
                             f"got {list(imgs.shape)}")


class DenseHiera(HieraEncoder):
    """Hiera as a det / seg backbone (the contract of :mod:`crossmae.models.dense`): every stage's map
    [N, C_s, H / s, W / s] of an unmasked image of any size that is a multiple of one mask unit.

    ``pos_embed`` stays on the grid of ``img_size`` (the pretraining one, so a checkpoint's table loads as
    it is) and is bicubically resized to the input's token grid every forward, as ViTDet does. ``q_pool``
    defaults to one pool between every two stages (strides 4, 8, 16, 32 at Hiera's patch stride 4: a
    pyramid); the MAE recipe's q_pool 2 leaves the last two stages at one stride. Pooling has no
    parameters, so the pretrained weights are the same either way."""

    def __init__(self, q_pool: int | None = None, **encoder_kwargs):
        stages = encoder_kwargs.get("stages", (2, 3, 16, 3))
        super().__init__(q_pool=len(stages) - 1 if q_pool is None else q_pool, **encoder_kwargs)
        self.out_channels = list(self.stage_dims)
        self.out_strides = [info["reduction"] for info in self.feature_info]
        self.size_divisor = self.patch_embed.proj.stride[0] * self.mask_unit_size
        self.depth = len(self.blocks)

    def forward(self, imgs: torch.Tensor) -> list[torch.Tensor]:
        d = self.size_divisor
        if imgs.ndim != 4 or imgs.shape[1] != self.in_chans or imgs.shape[2] % d or imgs.shape[3] % d:
            raise ValueError(f"expected images [N, {self.in_chans}, H, W] with H and W multiples of a mask unit "
                             f"({d} px), got {list(imgs.shape)}")
        x = self.patch_embed(imgs)
        n, h, w, c = x.shape
        x = x + resize_abs_pos(self.pos_embed, (self.token_grid,) * 2, (h, w), num_prefix=0).view(1, h, w, c)
        x = unroll(x, self.mask_unit_size, self.q_stride, self.q_pool)
        unit_grid = (h // self.mask_unit_size, w // self.mask_unit_size)
        maps = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.stage_ends:
                maps.append(units_to_image(self.to_units(x, i), unit_grid).permute(0, 3, 1, 2))
        return maps

    def describe(self) -> str:
        """'Hiera-B (50.8M)': the architecture and its parameters (the pretraining resolution when not 224)."""
        size = self.patch_embed.img_size[0]
        name = hiera_arch_name(self.blocks[0].dim, self.blocks[0].attn.heads, self.stages)
        return f"{name}{'' if size == 224 else f' {size}px'} ({sum(p.numel() for p in self.parameters()) / 1e6:.1f}M)"

    def load_pretrained(self, state: dict[str, torch.Tensor], resize_patch_embed: bool = False
                        ) -> tuple[list[str], list[str]]:
        """Load a pretraining encoder (``encoder_state(model_state(ckpt))`` of a CrossMAE-Hiera / MAE-Hiera:
        ``patch_embed``, ``pos_embed``, ``blocks``) through :func:`crossmae.models.transfer.encoder_weights`:
        ``pos_embed`` resized to this model's grid; the encoder's final ``norm`` (CrossMAE-Hiera without
        inter-block attention) unused. Returns (missing, unexpected); anything else raises naming the keys."""
        loaded = load_encoder_weights(self, state, unused=("norm.weight", "norm.bias"),
                                      pos_grid=(self.token_grid, self.token_grid), num_prefix_tokens=0,
                                      resize_patch_embed=resize_patch_embed)
        return loaded.missing, loaded.unexpected


def hiera_arch_name(embed_dim: int, num_heads: int, stages: Sequence[int]) -> str:
    """'Hiera-B' for a size of HIERA_SIZES (first width, first heads, blocks per stage), else 'Hiera 32w/1-3-1'."""
    size = next((k for k, v in HIERA_SIZES.items() if v["embed_dim"] == embed_dim and v["num_heads"] == num_heads
                 and tuple(v["stages"]) == tuple(stages)), None)
    return f"Hiera-{HIERA_LETTERS[size]}" if size else f"Hiera {embed_dim}w/{'-'.join(map(str, stages))}"


def init_pos_embed(pos_embed: nn.Parameter, how: str, grid: int) -> None:
    """The learned position table's start: "trunc_normal" (std 0.02, Hiera's) or "sincos" (MAE's fixed 2-D
    sin-cos values, still learned): docs/hiera.md measures the toy size stalling without positions."""
    if how == "trunc_normal":
        nn.init.trunc_normal_(pos_embed, std=0.02)
    elif how == "sincos":
        with torch.no_grad():
            pos_embed.copy_(sincos_2d(pos_embed.shape[-1], grid, grid)[None])
    else:
        raise ValueError(f"pos_embed_init must be trunc_normal or sincos, got {how!r}")


def check_hiera_args(img_size: int, stages: tuple, q_pool: int, q_stride: int, mask_unit_size: int,
                     mask_unit_attn: tuple, patch_stride: int) -> None:
    """One ValueError naming the field for a Hiera geometry that does not fit together."""
    if not stages or min(stages) < 1:
        raise ValueError(f"stages must be block counts >= 1, got {list(stages)}")
    if len(mask_unit_attn) != len(stages):
        raise ValueError(f"mask_unit_attn needs one flag per stage ({len(stages)}), got {len(mask_unit_attn)}")
    if not 0 <= q_pool < len(stages):
        raise ValueError(f"q_pool must be in [0, {len(stages) - 1}] (pools between stages), got {q_pool}")
    if img_size % patch_stride or (img_size // patch_stride) % mask_unit_size:
        raise ValueError(f"img_size {img_size} must be a multiple of patch_stride x mask_unit_size "
                         f"= {patch_stride} x {mask_unit_size}")
    if q_stride < 1 or mask_unit_size % q_stride ** q_pool:
        raise ValueError(f"mask_unit_size {mask_unit_size} must be divisible by q_stride ** q_pool "
                         f"= {q_stride} ** {q_pool}: pooling stays inside a mask unit")


# ----------------------------------------------------------------------------- pretraining base
class MaskedHieraPretrainer(HieraEncoder):
    """What CrossMAE-Hiera and MAE-Hiera share: the prediction grid (one patch per last-stage token:
    ``patch_size`` = patch_stride * q_stride ** q_pool px), unit masking, the loss's settings.

    ``Masks`` are over the prediction patches (``num_patches``, ``grid_size``, ``patch_size`` as for the ViT
    models, so the training loop, the reconstruction figure and PSNR work unchanged); their visible
    patches are whole mask units."""

    def __init__(self, mask_ratio: float, pred_ratio: float, norm_pix_loss: bool, **encoder_kwargs):
        super().__init__(**encoder_kwargs)
        self.units_side = self.block_side[-1]  # prediction patches per unit side
        unit_mask_counts(self.num_units, self.units_side ** 2, mask_ratio, pred_ratio)  # raises on bad ratios
        self.mask_ratio, self.pred_ratio, self.norm_pix_loss = mask_ratio, pred_ratio, norm_pix_loss
        self.patch_size = self.patch_embed.img_size[0] // (self.unit_grid[0] * self.units_side)
        self.grid_size = (self.unit_grid[0] * self.units_side, self.unit_grid[1] * self.units_side)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.register_buffer("unit_patches", unit_patch_ids(self.unit_grid, self.units_side), persistent=False)

    def sample_masks(self, imgs: torch.Tensor, generator: torch.Generator | None = None) -> Masks:
        return random_unit_masking(imgs.shape[0], self.unit_grid, self.units_side, self.mask_ratio,
                                   self.pred_ratio, device=imgs.device, generator=generator)

    def visible_units(self, masks: Masks) -> torch.Tensor:
        if masks.ids_keep.is_meta:  # shapes only (FLOP counting): the visible patches are whole units
            n, k = masks.ids_keep.shape
            return masks.ids_keep.new_empty(n, k // self.units_side ** 2)
        return visible_units(masks, self.unit_grid, self.units_side)

    def encoder_tokens_to_patches(self, unit_keep: torch.Tensor) -> torch.Tensor:
        """[N, U_visible * t * t]: the prediction patch under each last-stage token, in unit layout order."""
        return self.unit_patches[unit_keep].flatten(1)

    def describe(self) -> str:
        """'Hiera 32w/1-3-1/p8 32px (0.4M)': first width, blocks per stage, prediction patch, resolution."""
        n = sum(p.numel() for p in self.parameters())
        name = hiera_arch_name(self.blocks[0].dim, self.blocks[0].attn.heads, self.stages)
        arch = f"{name}/p{self.patch_size}"
        if self.patch_embed.img_size[0] != 224:
            arch += f" {self.patch_embed.img_size[0]}px"
        return f"{arch} ({n / 1e6:.1f}M) mask {self.mask_ratio:g}"


def fusion_conv(dim_in: int, dim_out: int, side_in: int, side_out: int) -> nn.Module:
    """Brings a unit's side_in x side_in tokens of width dim_in to side_out x side_out of width dim_out: a
    convolution with kernel = stride = side_in / side_out (MAE-Hiera's multi-scale fusion head); identity
    when nothing changes."""
    k = side_in // side_out
    if k == 1 and dim_in == dim_out:
        return nn.Identity()
    return nn.Conv2d(dim_in, dim_out, kernel_size=k, stride=k)


def apply_per_unit(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[N, U, t, t, C] -> module on every unit's [C, t, t] map -> [N, U, t', t', C']."""
    if isinstance(module, nn.Identity):
        return x
    n, u, t, _, c = x.shape
    y = module(x.reshape(n * u, t, t, c).permute(0, 3, 1, 2))
    return y.permute(0, 2, 3, 1).reshape(n, u, *y.shape[2:], y.shape[1])

