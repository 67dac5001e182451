"""Which patches the encoder sees and which the decoder predicts.

Pure functions on index tensors. For each sample a random permutation of the
``L`` patch positions is drawn; its first ``num_visible`` entries are visible to
the encoder, the remaining ones are masked, and the last ``num_predicted`` of the
permutation (a uniformly random subset of the masked patches) are reconstructed.
This is the official CrossMAE rule: ``mask_ratio`` hides patches,
``pred_ratio`` (the release's ``kept_mask_ratio``) is a fraction of ALL patches.
"""
from __future__ import annotations

import torch


class Masks:
    """The index tensors training uses, plus two dense [N, L] masks for analysis and figures.

    Training only reads the indices, so the dense masks are built on first access (a scatter each)
    instead of on every step; they may also be passed in ready-made."""

    def __init__(self, ids_keep: torch.Tensor, ids_pred: torch.Tensor, ids_restore: torch.Tensor,
                 pred_mask: torch.Tensor | None = None, visible_mask: torch.Tensor | None = None):
        self.ids_keep = ids_keep  # [N, num_visible] positions fed to the encoder (random order)
        self.ids_pred = ids_pred  # [N, num_predicted] positions to reconstruct (ascending)
        self.ids_restore = ids_restore  # [N, L] inverse of the permutation (MAE's unshuffle)
        self._pred_mask = pred_mask
        self._visible_mask = visible_mask

    def __iter__(self):
        """Unpacks like the former NamedTuple (this builds the dense masks)."""
        return iter((self.ids_keep, self.ids_pred, self.ids_restore, self.pred_mask, self.visible_mask))

    @property
    def pred_mask(self) -> torch.Tensor:
        """[N, L] float, 1 where a patch is reconstructed."""
        if self._pred_mask is None:
            self._pred_mask = torch.zeros(self.ids_restore.shape, device=self.ids_pred.device).scatter_(
                1, self.ids_pred, 1.0)
        return self._pred_mask

    @property
    def visible_mask(self) -> torch.Tensor:
        """[N, L] bool, True where a patch is visible."""
        if self._visible_mask is None:
            self._visible_mask = torch.zeros(self.ids_restore.shape, dtype=torch.bool,
                                             device=self.ids_keep.device).scatter_(1, self.ids_keep, True)
        return self._visible_mask


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
    """(num_visible, num_predicted) for ``num_patches`` patches, rounded exactly as the official
    ``random_masking`` does: plain ``int()`` (truncation) of the two float products, the predicted
    patches being the rest. Float error is kept on purpose, e.g. 196 patches, mask 0.70, gamma 0.20:
    int(58.8000...04) = 58 visible, int(97.9999...) = 97 masked-only, so 41 predicted."""
    check_ratios(mask_ratio, pred_ratio)
    num_visible = int(num_patches * (1 - mask_ratio))
    num_masked_only = int(num_patches * (mask_ratio - pred_ratio))
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
    return Masks(ids_keep, ids_pred, ids_restore)


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """tokens [N, L, D], ids [N, K] -> [N, K, D]."""
    return tokens.gather(1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
