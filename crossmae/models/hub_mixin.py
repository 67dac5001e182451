"""``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for the models: huggingface_hub's
``PyTorchModelHubMixin`` with our formats (``config.json`` = the factory and every constructor argument,
``model.safetensors`` = the state dict).

At the models' level: it imports huggingface_hub, the standard library and :mod:`crossmae.files` only.
Loading (Hub downloads, the release-format mapping) and model cards are the I/O layer's,
:mod:`crossmae.hub`, imported when ``from_pretrained`` or ``save_pretrained`` is called.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, PyTorchModelHubMixin

from ..files import atomic_write, write_text
from .sizes import ENCODER_FIELDS, VIT_SIZES, vit_model_name

FORMAT = "crossmae-hub/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TAGS = ["crossmae", "masked-autoencoder", "self-supervised-learning", "vision-transformer",
        "image-feature-extraction"]


class HubError(ValueError):
    """A Hub operation that cannot be done (offline, nothing to load, ambiguous repo): a user error."""


def constructor_kwargs(model) -> dict[str, Any]:
    """Every constructor argument the model was built with (recorded by the mixin at construction)."""
    kwargs = dict(getattr(model, "_hub_mixin_config", None) or {})
    params = [p for p in inspect.signature(type(model).__init__).parameters if p != "self"]
    missing = [p for p in params if p not in kwargs]
    if missing:
        raise HubError(f"{type(model).__name__} does not record its constructor arguments {missing}")
    return {p: kwargs[p] for p in params}


def factory_name(model) -> str | None:
    """The registered factory of the model's class and encoder size; every constructor argument is stored
    beside it, so for a custom architecture it names only the defaults that ``kwargs`` override."""
    from . import MODELS, CrossMAE  # the package imports this module
    from .naming import arch_of
    if not hasattr(model, "decoder_blocks"):
        return None  # an encoder: rebuilt from its class
    prefix = "crossmae" if isinstance(model, CrossMAE) else "mae"
    arch = arch_of(model)
    for size, d in VIT_SIZES.items():
        name = vit_model_name(prefix, size)
        if all(arch[k] == d[k] for k in (*ENCODER_FIELDS, "patch_size")) and name in MODELS:
            return name
    return vit_model_name(prefix, "base")


def hub_config(model) -> dict[str, Any]:
    from .naming import describe_model
    return {"format": FORMAT, "class": type(model).__name__, "name": factory_name(model),
            "kwargs": constructor_kwargs(model), "description": describe_model(model)}


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """A .safetensors file written through :func:`~crossmae.files.atomic_write`: a kill mid-write leaves the
    previous file, and the file gets the mode every other file gets (0666 less the umask; safetensors' own
    ``save_file`` writes 0600, through a private temporary file)."""
    from safetensors.torch import save
    data = save(tensors, metadata=metadata)
    atomic_write(path, lambda f: f.write(data))


class HubMixin(PyTorchModelHubMixin, library_name="crossmae", tags=TAGS):
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` in our formats (see the module doc)."""

    def _save_pretrained(self, save_directory: Path) -> None:
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_safetensors(state, Path(save_directory) / WEIGHTS_NAME, metadata={"format": "pt", "crossmae": FORMAT})
        write_text(Path(save_directory) / CONFIG_NAME, json.dumps(hub_config(self), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, force_download: bool = False,
                        token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                        local_files_only: bool = False, revision: str | None = None, map_location: str = "cpu",
                        filename: str | None = None, **ignored):
        """A Hub repo id or a local directory -> this class's model, in eval mode (see :func:`crossmae.hub.load`).

        Replaces the mixin's version, which needs a config.json: offline it fails on release repos,
        which have none."""
        from ..hub import load
        return load(pretrained_model_name_or_path, want=cls, filename=filename, map_location=map_location,
                    revision=revision, cache_dir=cache_dir, force_download=force_download,
                    local_files_only=local_files_only, token=token)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision=None, cache_dir=None, force_download=False,
                         local_files_only=False, token=None, map_location: str = "cpu", filename: str | None = None,
                         **ignored):
        # ``ignored``: what older mixins pass on (proxies, resume_download, strict)
        return cls.from_pretrained(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                                   local_files_only=local_files_only, token=token, map_location=map_location,
                                   filename=filename)

    def generate_model_card(self, *args, results: dict | None = None, source: str | None = None,
                            **kwargs) -> ModelCard:
        from ..hub import model_card
        return model_card(self, results, source)
