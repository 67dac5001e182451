"""Classification details that follow MAE's fine-tuning code exactly (issue 12)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from crossmae.classification.model import resize_pos_embed
from crossmae.classification.transforms import eval_crop_pct, eval_transform
from crossmae.models.pos_embed import sincos_2d


def mae_interpolate_pos_embed(pos_embed: torch.Tensor, new_size: int, prefix: int = 1) -> torch.Tensor:
    """What MAE's util/pos_embed.py interpolate_pos_embed computes: plain bicubic, align_corners=False."""
    extra, tokens = pos_embed[:, :prefix], pos_embed[:, prefix:]
    side, dim = int(tokens.shape[1] ** 0.5), tokens.shape[2]
    grid = tokens.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_size, new_size), mode="bicubic", align_corners=False)
    return torch.cat([extra, grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


@pytest.mark.parametrize("table", ["sincos", "random"])
def test_pos_embed_resize_is_maes_plain_bicubic(table):
    dim, side = 32, 14
    if table == "sincos":
        pos = sincos_2d(dim, side, side, cls_token=True).float().reshape(1, 1 + side * side, dim)
    else:
        pos = torch.randn(1, 1 + side * side, dim, generator=torch.Generator().manual_seed(0))
    ours = resize_pos_embed(pos, (28, 28))
    ref = mae_interpolate_pos_embed(pos, 28)
    assert ours.shape == ref.shape == (1, 1 + 28 * 28, dim)
    # antialiased bicubic (timm's default) differs by ~1e-2 here; the same kernel agrees to float rounding
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert torch.equal(ours[:, 0], pos[:, 0])


@pytest.mark.parametrize("img_size,resize", [(224, 256), (192, 219), (448, 448), (384, 384)])
def test_eval_crop_follows_maes_rule(img_size, resize):
    # MAE's build_transform: crop_pct 224/256 when input_size <= 224, else 1.0; size = int(input_size / crop_pct)
    assert eval_crop_pct(img_size) == (0.875 if img_size <= 224 else 1.0)
    tf = eval_transform(img_size)
    assert tf.transforms[0].size == resize
    img = Image.fromarray(np.zeros((300, 500, 3), dtype=np.uint8))
    assert tf(img).shape == (3, img_size, img_size)


def test_eval_crop_explicit_value_still_wins():
    assert eval_transform(448, crop_pct=0.875).transforms[0].size == 512
