"""Reconstruction figures: original / masked / reconstruction / reconstruction + visible."""
from __future__ import annotations

from pathlib import Path

import torch

from .data.folder import IMAGENET_MEAN, IMAGENET_STD
from .masking import Masks, gather_tokens
from .models.pos_embed import patchify, unpatchify


def predicted_pixels(imgs: torch.Tensor, pred: torch.Tensor, masks: Masks, patch_size: int,
                     norm_pix_loss: bool) -> torch.Tensor:
    """Predictions [N, P, p*p*C] in the normalised-image space (undoing norm_pix_loss with each
    target patch's own mean and variance, as MAE's visualisation does)."""
    if not norm_pix_loss:
        return pred
    target = gather_tokens(patchify(imgs, patch_size), masks.ids_pred)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    return pred * (var + 1e-6) ** 0.5 + mean


@torch.no_grad()
def reconstruction_panels(model, imgs: torch.Tensor, masks: Masks) -> dict[str, torch.Tensor]:
    """Images [N, C, H, W] (normalised space) for each panel; unpredicted masked patches are 0."""
    p = model.patch_size
    out = model(imgs, masks)
    patches = patchify(imgs, p)
    pixels = predicted_pixels(imgs, out.pred.float(), masks, p, model.norm_pix_loss)
    idx = masks.ids_pred.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
    visible = masks.visible_mask.unsqueeze(-1).float()
    recon = torch.zeros_like(patches).scatter(1, idx, pixels)
    gh, gw = model.grid_size
    to_img = lambda x: unpatchify(x, p, gh, gw, imgs.shape[1])  # noqa: E731
    return {"original": imgs, "masked": to_img(patches * visible), "reconstruction": to_img(recon),
            "reconstruction + visible": to_img(recon * (1 - visible) + patches * visible)}


def denormalize(img: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (img.cpu() * std + mean).clamp(0, 1)


def save_reconstruction_figure(model, imgs: torch.Tensor, masks: Masks, path: str | Path, title: str = "") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    was_training = model.training
    model.eval()
    panels = reconstruction_panels(model, imgs, masks)
    model.train(was_training)
    n, cols = imgs.shape[0], len(panels)
    fig, axes = plt.subplots(n, cols, figsize=(2 * cols, 2 * n), squeeze=False)
    for j, (name, batch) in enumerate(panels.items()):
        for i in range(n):
            ax = axes[i][j]
            ax.imshow(denormalize(batch[i]).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
