"""Which patches the encoder sees and which the decoder predicts.

Pure functions on index tensors. For each sample a random permutation of the
``L`` patch positions is drawn; its first ``num_visible`` entries are visible to
the encoder, the remaining ones are masked, and the last ``num_predicted`` of the
permutation (a uniformly random subset of the masked patches) are reconstructed.
This is the official CrossMAE rule: ``mask_ratio`` hides patches,
``pred_ratio`` (the release's ``kept_mask_ratio``) is a fraction of ALL patches.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class Masks(NamedTuple):
    ids_keep: torch.Tensor  # [N, num_visible] positions fed to the encoder (random order)
    ids_pred: torch.Tensor  # [N, num_predicted] positions to reconstruct (ascending)
    ids_restore: torch.Tensor  # [N, L] inverse of the permutation (MAE's unshuffle)
    pred_mask: torch.Tensor  # [N, L] float, 1 where a patch is reconstructed
    visible_mask: torch.Tensor  # [N, L] bool, True where a patch is visible


def check_ratios(mask_ratio: float, pred_ratio: float) -> None:
    """Raise a ValueError naming the field when the ratios make no sense."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    if not 0.0 < pred_ratio < 1.0:
        raise ValueError(f"pred_ratio (kept_mask_ratio) must be in (0, 1), got {pred_ratio}")
    if pred_ratio > mask_ratio + 1e-9:
        raise ValueError(
            f"pred_ratio ({pred_ratio}) > mask_ratio ({mask_ratio}): only masked patches can be predicted")


def mask_counts(num_patches: int, mask_ratio: float, pred_ratio: float) -> tuple[int, int]:
    """(num_visible, num_predicted) for ``num_patches`` patches, rounded as the official code does."""
    check_ratios(mask_ratio, pred_ratio)
    # the small epsilon keeps e.g. 196 * 0.25 = 48.999... from flooring to 48
    num_visible = int(num_patches * (1 - mask_ratio) + 1e-6)
    num_masked_only = int(num_patches * (mask_ratio - pred_ratio) + 1e-6)
    num_predicted = num_patches - num_visible - num_masked_only
    if num_visible < 1 or num_predicted < 1:
        raise ValueError(
            f"{num_patches} patches with mask_ratio={mask_ratio}, pred_ratio={pred_ratio} leave "
            f"{num_visible} visible and {num_predicted} predicted patches; both must be >= 1")
    return num_visible, num_predicted


def random_masking(batch_size: int, num_patches: int, mask_ratio: float, pred_ratio: float,
                   device=None, generator: torch.Generator | None = None) -> Masks:
    """Draw per-sample visible / predicted patch sets (see module docstring)."""
    num_visible, num_predicted = mask_counts(num_patches, mask_ratio, pred_ratio)
    noise = torch.rand(batch_size, num_patches, device=device, generator=generator)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :num_visible]
    ids_pred = ids_shuffle[:, num_patches - num_predicted:].sort(dim=1).values
    pred_mask = torch.zeros(batch_size, num_patches, device=ids_shuffle.device)
    pred_mask.scatter_(1, ids_pred, 1.0)
    visible_mask = torch.zeros(batch_size, num_patches, dtype=torch.bool, device=ids_shuffle.device)
    visible_mask.scatter_(1, ids_keep, True)
    return Masks(ids_keep, ids_pred, ids_restore, pred_mask, visible_mask)


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """tokens [N, L, D], ids [N, K] -> [N, K, D]."""
    return tokens.gather(1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
