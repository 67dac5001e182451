"""Tiny models shared by the tests (a module, not conftest, so any test can import it unambiguously:
tests/det has a conftest.py of its own)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# a tiny CrossMAE: 32 px images, 4 px patches (8 x 8 grid), 4 encoder blocks of width 64
TINY_CROSSMAE = dict(name="crossmae_vit_small_patch16", img_size=32, patch_size=4, embed_dim=64, depth=4,
                     num_heads=4, decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4)


def tiny_model(**overrides):
    from crossmae.models import build_model
    kwargs = {**TINY_CROSSMAE, **overrides}
    return build_model(kwargs.pop("name"), **kwargs)
