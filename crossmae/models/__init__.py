"""Model factories. ``build_model(name, **kwargs)`` is the one entry point; every
factory is a plain function whose keyword arguments override the size defaults."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .crossmae import CrossMAE, PretrainOutput
from .hiera_crossmae import CrossMAEHiera
from .hiera_mae import MAEHiera
from .mae import MAE
from .sizes import HIERA_SIZES, VIT_SIZES, vit_model_name

SIZES = VIT_SIZES  # the name older callers use

MODELS: dict[str, Callable[..., nn.Module]] = {}


def _register(cls, size: str, name: str) -> None:
    def factory(**kwargs):
        return cls(**{**SIZES[size], **kwargs})
    factory.__name__ = name
    factory.__doc__ = f"{cls.__name__} with the ViT-{size} encoder; keyword arguments override."
    MODELS[name] = factory
    globals()[name] = factory


for _size in VIT_SIZES:
    _register(CrossMAE, _size, vit_model_name("crossmae", _size))
    _register(MAE, _size, vit_model_name("mae", _size))


def _register_hiera(cls, size: str, name: str) -> None:
    def factory(**kwargs):
        return cls(**{**HIERA_SIZES[size], **kwargs})
    factory.__name__ = name
    factory.__doc__ = f"{cls.__name__} with the Hiera-{size} encoder (MAE recipe: q_pool 2); keyword arguments override."
    MODELS[name] = factory
    globals()[name] = factory


for _size in HIERA_SIZES:
    _register_hiera(CrossMAEHiera, _size, f"crossmae_hiera_{_size}_224")
    _register_hiera(MAEHiera, _size, f"mae_hiera_{_size}_224")


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as e:  # an argument the model does not take: name it
        raise ValueError(f"model {name!r}: {e}") from e


__all__ = ["CrossMAE", "MAE", "CrossMAEHiera", "MAEHiera", "PretrainOutput", "MODELS", "SIZES", "HIERA_SIZES",
           "build_model"]
