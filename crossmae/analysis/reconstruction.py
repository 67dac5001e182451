"""Reconstructions in pixel space, every decoder block's readout, and PSNR on the predicted patches.

PSNR (the paper's Table 13 measures it on masked patches): predictions are brought back to pixels
(``norm_pix_loss`` undone with each target patch's own mean and variance, as MAE's visualisation
does; then the ImageNet normalisation undone and values clamped to [0, 1]); per image,
PSNR = 10 log10(1 / MSE) over the predicted patches' pixels and channels; reported as the mean over
images of the per-image PSNR.
"""
from __future__ import annotations

import torch

from ..data.folder import IMAGENET_MEAN, IMAGENET_STD
from ..masking import Masks, gather_tokens
from ..models.pos_embed import patchify, unpatchify


def predicted_pixels(imgs: torch.Tensor, pred: torch.Tensor, masks: Masks, patch_size: int,
                     norm_pix_loss: bool) -> torch.Tensor:
    """Predictions [N, P, p*p*C] in the normalised-image space (undoing norm_pix_loss with each
    target patch's own mean and variance, as MAE's visualisation does)."""
    if not norm_pix_loss:
        return pred
    target = gather_tokens(patchify(imgs, patch_size), masks.ids_pred)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    return pred * (var + 1e-6) ** 0.5 + mean


def denormalize(img: torch.Tensor) -> torch.Tensor:
    """One ImageNet-normalised image [C, H, W] -> [0, 1] on the cpu."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (img.cpu() * std + mean).clamp(0, 1)


def masked_psnr(target: torch.Tensor, recon: torch.Tensor, patch_mask: torch.Tensor, patch_size: int,
                max_val: float = 1.0) -> torch.Tensor:
    """Per-image PSNR [N] over the patches where ``patch_mask`` [N, L] is set; images [N, C, H, W]
    in [0, max_val]. A perfect reconstruction gives +inf."""
    if target.shape != recon.shape:
        raise ValueError(f"target {list(target.shape)} and reconstruction {list(recon.shape)} differ in shape")
    err = (patchify(target.double(), patch_size) - patchify(recon.double(), patch_size)) ** 2  # [N, L, p*p*C]
    weight = patch_mask.double()
    if (weight.sum(1) == 0).any():
        raise ValueError("an image has no patch to measure")
    mse = (err.mean(-1) * weight).sum(1) / weight.sum(1)
    return (10 * torch.log10(max_val ** 2 / mse)).float()


def paste(patches: torch.Tensor, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """patches [N, L, D] with rows ``ids`` [N, P] replaced by ``pixels`` [N, P, D]."""
    return patches.scatter(1, ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]), pixels)


@torch.no_grad()
def block_readouts(model, imgs: torch.Tensor, masks: Masks) -> list[torch.Tensor]:
    """Every decoder block's output through the prediction head: a list (one per block, the last one
    is the model's prediction) of [N, P, p*p*C] in the loss's space."""
    return model.forward_decoder(model.decoder_memory(imgs, masks), masks, every_block=True)


@torch.no_grad()
def reconstruct(model, imgs: torch.Tensor, masks: Masks) -> dict:
    """Images in [0, 1] (cpu) and PSNR for one batch.

    Returns {"original", "masked", "reconstruction", "pasted", "blocks": [pasted image per block],
    "psnr": [N] of the final prediction, "psnr_blocks": [num_blocks, N]}. "masked" greys out hidden
    patches; "reconstruction" shows predictions only (unpredicted masked patches grey); "pasted" puts
    the visible patches back."""
    p = model.patch_size
    gh, gw = model.grid_size
    c = imgs.shape[1]
    original = torch.stack([denormalize(x) for x in imgs])  # [N, C, H, W] in [0, 1], cpu
    target = patchify(original, p)
    visible = masks.visible_mask.cpu().unsqueeze(-1).float()
    grey = torch.full_like(target, 0.5)
    ids_pred = masks.ids_pred.cpu()
    to_img = lambda x: unpatchify(x, p, gh, gw, c)  # noqa: E731

    def to_pixels(pred: torch.Tensor) -> torch.Tensor:
        normed = predicted_pixels(imgs, pred.float(), masks, p, model.norm_pix_loss)  # normalised-image space
        rows = torch.zeros(imgs.shape[0], gh * gw, normed.shape[-1], device=normed.device)
        img = denormalize_batch(to_img(paste(rows, normed, masks.ids_pred)))
        return patchify(img, p).gather(1, ids_pred.unsqueeze(-1).expand(-1, -1, target.shape[-1]))

    readouts = [to_pixels(r) for r in block_readouts(model, imgs, masks)]
    masked_only = grey * (1 - visible) + target * visible
    pasted = [to_img(paste(masked_only, r, ids_pred)) for r in readouts]
    psnr_blocks = torch.stack([masked_psnr(original, img, masks.pred_mask.cpu(), p) for img in pasted])
    return {"original": original, "masked": to_img(masked_only),
            "reconstruction": to_img(paste(grey, readouts[-1], ids_pred)), "pasted": pasted[-1], "blocks": pasted, "psnr": psnr_blocks[-1], "psnr_blocks": psnr_blocks}


def denormalize_batch(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([denormalize(img) for img in x])



@torch.no_grad()
def dataset_psnr(model, batches, seed: int = 0, progress: bool = True) -> dict:
    """Mean per-image PSNR on predicted patches over ``batches``, for the final prediction and every
    decoder block's readout; random masks from a generator seeded by ``seed``."""
    from tqdm import tqdm

    from .loading import move_masks
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    per_block, count = None, 0
    for imgs, *_ in tqdm(batches, desc="reconstructions", disable=not progress, leave=False):
        imgs = imgs.to(device)
        masks = move_masks(model.sample_masks(imgs.cpu(), generator=g), device)
        rec = reconstruct(model, imgs, masks)
        sums = rec["psnr_blocks"].double().sum(1)
        per_block = sums if per_block is None else per_block + sums
        count += imgs.shape[0]
    if not count:
        raise ValueError("no images were analysed")
    blocks = (per_block / count).tolist()
    return {"num_images": count, "psnr": blocks[-1], "psnr_blocks": blocks}
