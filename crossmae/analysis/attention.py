"""Decoder attention analysis: where MAE's mask tokens look, and what CrossMAE's queries read.

Attention mass (the paper's motivation, Figure 1 / Appendix A): in block b of MAE's decoder, with
softmax attention ``A[n, h, q, k]`` over the 1 + L tokens (index 0 = cls, then the L patches in image
order), the queries are the masked patches of image n, and the keys split into three classes:
visible patches, masked patches (the query itself included: the paper selects with m m^T, whose
diagonal is set) and the cls token. Per block we report, averaged over images:

``mass[c]`` = mean over mask queries q and heads h of sum_{k in class c} A[n, h, q, k].
    The share of a mask token's attention that goes to class c; visible + masked + cls = 1.

``paper[c]`` = sum over heads h of the mean over (q, k) pairs with q masked, k in class c of A[n, h, q, k]
    (= num_heads * mass[c] / |c|: the mean entry of the head-summed map).
    This is the normalisation that reproduces the paper's per-block numbers: for MAE-B (16 heads,
    49 visible and 147 masked keys) its table satisfies 49 * visible + 147 * masked = 15.78-15.88 in all
    eight blocks, i.e. num_heads * (1 - cls mass) with ~1% on cls; "mass" would need ~77% on cls in
    every block to give values of that size. The cls query and the visible queries are not used.

``per_key[c]`` = mass[c] / |c|, the mean weight on one key of the class (paper / num_heads).

The paper's headline "1.42 vs 0.39" is the sum over the 8 blocks of ``paper["visible"]`` and
``paper["masked"]``; we report the sum and the mean over blocks of every quantity.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..masking import Masks
from ..models import CrossMAE, MAE

CLASSES = ("visible", "masked", "cls")


def self_attention_map(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Explicit softmax weights [B, heads, N, N] of a SelfAttention (``qkv``, ``num_heads``) on
    its (already normalised) input x [B, N, C]: the same numbers SDPA uses, made visible."""
    b, n, c = x.shape
    q, k, _ = attn.qkv(x).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)


def attention_mass(attn: torch.Tensor, visible_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image attention statistics of mask-token queries for one block (see module docstring).

    attn [B, H, 1 + L, 1 + L] (token 0 = cls), visible_mask [B, L] bool.
    Returns {"mass": {class: [B]}, "paper": {class: [B]}, "per_key": {class: [B]}} as a flat dict
    with keys like "mass/visible"."""
    b, h, n, n_k = attn.shape
    if n != n_k or visible_mask.shape != (b, n - 1):
        raise ValueError(f"attention {list(attn.shape)} does not fit visible_mask {list(visible_mask.shape)}: "
                         f"expected [B, H, 1 + L, 1 + L] and [B, L]")
    attn = attn.float()
    vis = visible_mask.float()
    msk = 1.0 - vis
    # keys of each class, with the cls column: [B, 1 + L]
    key_sets = {"visible": torch.cat([vis.new_zeros(b, 1), vis], 1),
                "masked": torch.cat([vis.new_zeros(b, 1), msk], 1),
                "cls": torch.cat([vis.new_ones(b, 1), torch.zeros_like(vis)], 1)}
    n_queries = msk.sum(1)  # [B]
    if (n_queries == 0).any():
        raise ValueError("an image has no masked patch: attention mass of mask tokens is undefined")
    patch_attn = attn[:, :, 1:, :]  # queries = patches
    out = {}
    for name, keys in key_sets.items():
        to_class = (patch_attn * keys[:, None, None, :]).sum(-1)  # [B, H, L]: each query's mass on the class
        mass = (to_class.mean(1) * msk).sum(1) / n_queries  # mean over heads, then over mask queries
        n_keys = keys.sum(1)
        per_key = mass / n_keys
        out[f"mass/{name}"] = mass
        out[f"per_key/{name}"] = per_key
        out[f"paper/{name}"] = per_key * h
    return out


@torch.no_grad()
def mae_decoder_attention(model: MAE, imgs: torch.Tensor, masks: Masks) -> list[torch.Tensor]:
    """Each decoder block's self-attention weights [B, heads, 1 + L, 1 + L], in image order, computed
    from the block's own qkv on its norm1 input while the ordinary forward runs."""
    if not isinstance(model, MAE):
        raise TypeError(f"attention mass needs an MAE (self-attention decoder), got {type(model).__name__}")
    latent = model.forward_features(imgs, masks.ids_keep)
    x = model.decoder_tokens(latent, masks)
    maps = []
    for blk in model.decoder_blocks:
        maps.append(self_attention_map(blk.attn, blk.norm1(x)))
        x = blk(x)
    return maps


@dataclass
class MassAccumulator:
    """Sums per-image statistics over a dataset; ``result()`` gives per-block means, sum and mean."""
    totals: list[dict[str, float]] = field(default_factory=list)
    count: int = 0

    def update(self, per_block: list[dict[str, torch.Tensor]]) -> None:
        if not self.totals:
            self.totals = [dict.fromkeys(d, 0.0) for d in per_block]
        for tot, d in zip(self.totals, per_block):
            for k, v in d.items():
                tot[k] += float(v.double().sum())
        self.count += int(next(iter(per_block[0].values())).shape[0])

    def result(self) -> dict:
        if not self.count:
            raise ValueError("no images were analysed")
        blocks = [{k: v / self.count for k, v in tot.items()} for tot in self.totals]
        keys = list(blocks[0])
        return {"num_images": self.count, "blocks": blocks,
                "sum_over_blocks": {k: sum(b[k] for b in blocks) for k in keys},
                "mean_over_blocks": {k: sum(b[k] for b in blocks) / len(blocks) for k in keys}}


@torch.no_grad()
def crossmae_query_maps(model: CrossMAE, imgs: torch.Tensor, masks: Masks, query: int) -> torch.Tensor:
    """Cross-attention of the mask token at patch ``query`` (it must be predicted in every image),
    averaged over heads, per decoder block, scattered onto the patch grid:
    [decoder_depth, B, grid_h, grid_w]; masked positions are NaN (they are not keys), the cls weight is dropped."""
    if not isinstance(model, CrossMAE):
        raise TypeError(f"query maps need a CrossMAE (cross-attention decoder), got {type(model).__name__}")
    hit = masks.ids_pred == query
    if not bool(hit.any(1).all()):
        raise ValueError(f"patch {query} is not predicted in every image: build the masks with "
                         f"masks_with_query(...)")
    q_pos = hit.float().argmax(1)  # position of the query among the predicted patches
    memory = model.decoder_memory(imgs, masks)
    x = model.decoder_queries(masks)
    b, gh, gw = imgs.shape[0], *model.grid_size
    rows = torch.arange(b, device=imgs.device)
    maps = []
    for blk, mem in zip(model.decoder_blocks, memory):
        if blk.has_self_attn:
            x = x + blk.self_attn(blk.norm0(x))
        a = blk.cross_attn.attention_map(blk.norm1(x), mem).mean(1)  # [B, Nq, 1 + K]
        weights = a[rows, q_pos, 1:]  # [B, K] over the visible tokens, in ids_keep order
        grid = torch.full((b, gh * gw), float("nan"), device=imgs.device)
        grid.scatter_(1, masks.ids_keep, weights.float())
        maps.append(grid.view(b, gh, gw))
        x = blk(x, mem)
    return torch.stack(maps)


def masks_with_query(batch_size: int, num_patches: int, mask_ratio: float, pred_ratio: float, query: int,
                     generator: torch.Generator | None = None, device=None) -> Masks:
    """Random masks (the official rule, as crossmae.masking.random_masking) in which patch ``query`` is
    always predicted: its noise is set above every other, so it lands in the predicted tail."""
    from ..masking import mask_counts
    if not 0 <= query < num_patches:
        raise ValueError(f"query patch {query} is outside the {num_patches} patches")
    num_visible, num_predicted = mask_counts(num_patches, mask_ratio, pred_ratio)
    noise = torch.rand(batch_size, num_patches, generator=generator).to(device)
    noise[:, query] = 2.0
    ids_shuffle = noise.argsort(dim=1)
    ids_keep = ids_shuffle[:, :num_visible]
    ids_pred = ids_shuffle[:, num_patches - num_predicted:].sort(dim=1).values
    pred_mask = torch.zeros(batch_size, num_patches, device=noise.device).scatter_(1, ids_pred, 1.0)
    visible_mask = torch.zeros(batch_size, num_patches, dtype=torch.bool, device=noise.device)
    visible_mask.scatter_(1, ids_keep, True)
    return Masks(ids_keep, ids_pred, ids_shuffle.argsort(dim=1), pred_mask, visible_mask)


def query_distance_stats(maps: torch.Tensor, query: int, grid_w: int) -> dict[str, list[float]]:
    """Per block: the attention-weighted mean distance (in patches) from the query to the visible keys it
    reads, and the total weight on patches (the rest is on cls); maps [D, B, gh, gw] as crossmae_query_maps."""
    d, b, gh, gw = maps.shape
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    qy, qx = divmod(query, grid_w)
    dist = ((ys - qy) ** 2 + (xs - qx) ** 2).float().sqrt().to(maps.device)
    w = torch.nan_to_num(maps.float(), nan=0.0)
    total = w.sum((-2, -1))  # [D, B]
    mean_dist = (w * dist).sum((-2, -1)) / total.clamp_min(1e-12)
    return {"mean_distance": mean_dist.mean(1).tolist(), "patch_weight": total.mean(1).tolist()}


@torch.no_grad()
def dataset_attention_mass(model: MAE, batches, mask_ratio: float | None = None, seed: int = 0,
                           progress: bool = True) -> dict:
    """Attention mass over every image of ``batches`` (an iterable of (images, labels)), with random masks
    drawn from a generator seeded by ``seed`` (same masks for the same data and seed)."""
    from tqdm import tqdm

    from ..masking import random_masking
    from .loading import move_masks
    device = next(model.parameters()).device
    ratio = model.mask_ratio if mask_ratio is None else mask_ratio
    g = torch.Generator().manual_seed(seed)
    acc = MassAccumulator()
    for imgs, *_ in tqdm(batches, desc="attention mass", disable=not progress, leave=False):
        imgs = imgs.to(device)
        masks = move_masks(random_masking(imgs.shape[0], model.num_patches, ratio, ratio, generator=g), device)
        acc.update([attention_mass(a, masks.visible_mask) for a in mae_decoder_attention(model, imgs, masks)])
    out = acc.result()
    out["mask_ratio"] = ratio
    return out


@torch.no_grad()
def dataset_query_maps(model: CrossMAE, batches, query: int, seed: int = 0, progress: bool = True) -> dict:
    """crossmae_query_maps over a dataset: per-block attention-weighted distance from the query and the
    weight on patches (vs cls), averaged over images."""
    from tqdm import tqdm

    from .loading import move_masks
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    sums, count = None, 0
    for imgs, *_ in tqdm(batches, desc="query maps", disable=not progress, leave=False):
        imgs = imgs.to(device)
        masks = move_masks(masks_with_query(imgs.shape[0], model.num_patches, model.mask_ratio, model.pred_ratio,
                                            query, generator=g), device)
        stats = query_distance_stats(crossmae_query_maps(model, imgs, masks, query), query, model.grid_size[1])
        n = imgs.shape[0]
        sums = {k: [s * n for s in v] for k, v in stats.items()} if sums is None else \
            {k: [a + s * n for a, s in zip(sums[k], v)] for k, v in stats.items()}
        count += n
    if not count:
        raise ValueError("no images were analysed")
    return {"num_images": count, "query": query, **{k: [s / count for s in v] for k, v in sums.items()}}
