"""Helpers shared by the tests of crossmae/analysis and tools/ (a plain module: no second conftest.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]

# 32 px images, 4 px patches: an 8 x 8 grid
TINY = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=32, decoder_num_heads=4)


def tiny_crossmae(**overrides):
    from crossmae.models import build_model
    return build_model("crossmae_vit_small_patch16", **{**TINY, "decoder_depth": 2, **overrides})


def tiny_mae(**overrides):
    from crossmae.models import build_model
    return build_model("mae_vit_small_patch16", **{**TINY, "decoder_depth": 3, **overrides})


def check_png(path: Path, min_bytes: int = 5000) -> np.ndarray:
    """The file is a readable PNG of some size that is not one flat colour; returns its pixels."""
    from PIL import Image
    path = Path(path)
    assert path.is_file(), f"{path} was not written"
    assert path.stat().st_size > min_bytes, f"{path} is only {path.stat().st_size} bytes"
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 5, f"{path} is (nearly) one flat colour"
    return pixels
