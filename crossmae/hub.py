"""Hugging Face Hub and safetensors for the pretraining models (CrossMAE, MAE) and their encoders.

The models inherit :class:`crossmae.models.hub_mixin.HubMixin`, huggingface_hub's ``PyTorchModelHubMixin`` with
our formats; this module is its I/O (downloads, release files, model cards)::

    model.save_pretrained("dir")                # config.json + model.safetensors + README.md (model card)
    model.push_to_hub("org/name")
    CrossMAE.from_pretrained("org/name")        # a Hub repo id or a local directory
    MaskedViTEncoder.from_pretrained("org/name")  # the encoder alone, from a full or an encoder-only save
    crossmae.hub.load("org/name")               # whatever it holds

``config.json`` is ``{"format", "class", "name", "kwargs", "description"}``: the registered factory and every
constructor argument, so the model is rebuilt exactly (and loaded strictly). A repo or directory without our
``config.json`` but with one release checkpoint (``checkpoint-*.pth`` in the official CrossMAE/MAE format
``{"model", "optimizer", "epoch", "scaler", "args"}``, or one of ours) loads through the release-format mapping
of :mod:`crossmae.analysis.loading`; with several, ``filename=`` picks one.
"""
from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .engine.checkpoint import CheckpointError, check_floating, encoder_state
from .models import build_model
from .models.encoder import MaskedViTEncoder
from .models.hub_mixin import CONFIG_NAME, FORMAT, TAGS, WEIGHTS_NAME, HubError, hub_config
from .models.naming import arch_of, describe_model

CHECKPOINT_SUFFIXES = (".pth", ".pt")
PAPER = "https://openreview.net/forum?id=JT2KMuo2BV"
CITATION = """@article{fu2025rethinking,
  title   = {Rethinking Patch Dependence for Masked Autoencoders},
  author  = {Fu, Letian and Lian, Long and Wang, Renhao and Shi, Baifeng and Wang, Xudong and Yala, Adam and
             Darrell, Trevor and Efros, Alexei A. and Goldberg, Ken},
  journal = {Transactions on Machine Learning Research},
  year    = {2025}
}"""


def offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def build_from_config(config: dict, source: str = "<config>"):
    """config.json -> a freshly initialised model of exactly that architecture."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not a crossmae-toolkit config (expected format {FORMAT!r})")
    kwargs = dict(config.get("kwargs") or {})
    if config.get("class") == "MaskedViTEncoder":
        return MaskedViTEncoder(**kwargs)
    if not config.get("name"):
        raise CheckpointError(f"{source} names no model factory")
    return build_model(config["name"], **kwargs)


# ------------------------------------------------------------------ encoders
def encoder_of(model):
    """The encoder of a CrossMAE / MAE as a stand-alone :class:`MaskedViTEncoder` (same weights, timm names)."""
    if type(model) is MaskedViTEncoder:
        return model
    a = arch_of(model)
    enc = MaskedViTEncoder(img_size=a["img_size"], patch_size=a["patch_size"], in_chans=model.in_chans,
                           embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"],
                           mlp_ratio=a["mlp_ratio"], final_norm=model.norm is not None)
    enc.load_state_dict(encoder_state(model.state_dict()), strict=True)
    return enc.to(next(model.parameters()).device).eval()


# ------------------------------------------------------------------ files of a repo or a directory
def _fetch(model_id: str, filename: str, hub: dict) -> str | None:
    """Local path of ``filename`` in a directory or a Hub repo (downloaded or from the cache); None if absent."""
    if os.path.isdir(model_id):
        path = Path(model_id) / filename
        return str(path) if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError
    try:
        return hf_hub_download(repo_id=model_id, filename=filename, **hub)
    except EntryNotFoundError:  # also LocalEntryNotFoundError: not in the offline cache
        return None


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _list_files(model_id: str, hub: dict) -> list[str]:
    if os.path.isdir(model_id):
        return _files_under(Path(model_id))
    from huggingface_hub.utils import LocalEntryNotFoundError, RepositoryNotFoundError
    if hub.get("local_files_only"):
        from huggingface_hub import constants, snapshot_download
        try:
            folder = Path(snapshot_download(repo_id=model_id, revision=hub.get("revision"),
                                            cache_dir=hub.get("cache_dir"), local_files_only=True))
        except LocalEntryNotFoundError as e:
            cache = hub.get("cache_dir") or constants.HF_HUB_CACHE
            raise HubError(f"{model_id} is not in the local Hub cache ({cache}) and downloads are off "
                           f"(HF_HUB_OFFLINE=1 or local_files_only)") from e
        return _files_under(folder)
    from huggingface_hub import HfApi
    try:
        return sorted(HfApi(token=hub.get("token")).list_repo_files(model_id, revision=hub.get("revision")))
    except RepositoryNotFoundError as e:
        raise HubError(f"{model_id}: no such Hub repo (or it is private: log in with `hf auth login`)") from e


def _release_file(model_id: str, hub: dict) -> str:
    files = _list_files(model_id, hub)
    ckpts = [f for f in files if f.endswith(CHECKPOINT_SUFFIXES)]
    if not ckpts:
        raise HubError(f"{model_id} holds neither {CONFIG_NAME} + {WEIGHTS_NAME} (save_pretrained / crossmae export) "
                       f"nor a checkpoint file (*.pth); it has: {', '.join(files[:10]) or 'no files'}")
    if len(ckpts) > 1:
        raise HubError(f"{model_id} holds {len(ckpts)} checkpoints ({', '.join(ckpts[:6])}): "
                       f"pick one with filename=...")
    return ckpts[0]


# ------------------------------------------------------------------ loading
def load(model_id: str | os.PathLike, *, want: type | None = None, filename: str | None = None,
         map_location: str = "cpu", revision: str | None = None, cache_dir: str | os.PathLike | None = None,
         force_download: bool = False, local_files_only: bool = False, token: str | bool | None = None):
    """A model from a Hub repo id or a local directory, in eval mode.

    ``want``: CrossMAE / MAE (must be what the repo holds), MaskedViTEncoder (the encoder of whatever it
    holds) or None (whatever it holds). ``filename``: one checkpoint file of the repo, loaded through the
    release-format mapping (default: our config.json + model.safetensors, else the repo's only .pth)."""
    from huggingface_hub import constants
    model_id = str(model_id)
    # the cache and offline mode made explicit: some huggingface_hub versions read them once, at import
    hub = dict(revision=revision, cache_dir=str(cache_dir or constants.HF_HUB_CACHE), force_download=force_download,
               local_files_only=local_files_only or offline(), token=token)
    if not os.path.isdir(model_id) and (os.path.exists(model_id) or model_id.startswith((".", "/", "~"))
                                        or model_id.count("/") > 1):
        raise FileNotFoundError(f"{model_id} is neither a directory nor a Hub repo id (org/name); a single "
                                f"checkpoint file loads with crossmae.analysis.loading.load_pretrained")
    config_path = None if filename else _fetch(model_id, CONFIG_NAME, hub)
    config = _read_config(config_path, model_id) if config_path else None
    if isinstance(config, dict) and config.get("format") == FORMAT:
        model = _load_ours(model_id, config, hub)
    else:
        from .analysis.loading import load_pretrained
        name = filename or _release_file(model_id, hub)
        path = _fetch(model_id, name, hub)
        if path is None:
            raise HubError(f"{name} not found in {model_id}")
        model, _ = load_pretrained(path)
    model = _as_wanted(model, want, model_id)
    return model.to(map_location).eval()


def _read_config(path: str, model_id: str):
    from .userfiles import parse_json
    try:
        return parse_json(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: JSONDecodeError, NestingError
        raise CheckpointError(f"{model_id}/{CONFIG_NAME} is not readable JSON: {e}") from e


def _load_ours(model_id: str, config: dict, hub: dict):
    from safetensors.torch import load_file
    src = f"{model_id}/{CONFIG_NAME}"
    model = build_from_config(config, src)
    weights = _fetch(model_id, WEIGHTS_NAME, hub)
    if weights is None:
        raise HubError(f"{model_id} has a {CONFIG_NAME} but no {WEIGHTS_NAME}")
    state = load_file(weights)
    check_floating(state, weights, expected=model.state_dict())
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{model_id}/{WEIGHTS_NAME} does not match its {CONFIG_NAME} "
                              f"({config.get('description')}): missing {missing[:6]}, unexpected {unexpected[:6]}")
    return model


def _as_wanted(model, want: type | None, model_id: str):
    if want is None or type(model) is want:
        return model
    if want is MaskedViTEncoder:
        return encoder_of(model)
    raise HubError(f"{model_id} holds a {type(model).__name__} ({describe_model(model)}), not a {want.__name__}: "
                   f"load it with {type(model).__name__}.from_pretrained or crossmae.hub.load")


# ------------------------------------------------------------------ model card
def model_card(model, results: dict | None = None, source: str | None = None, usage: str | None = None) -> ModelCard:
    """README.md of a saved model: what it is, its full architecture, the pretraining recipe and metrics of
    ``results`` (a pretraining results.json) when given, how to load it (``usage``: Python code; default
    ``from_pretrained``), and the paper to cite."""
    config = hub_config(model)
    data = ModelCardData(library_name="crossmae", tags=sorted(set(TAGS)), pipeline_tag="image-feature-extraction")
    kind = {"CrossMAE": "A CrossMAE (cross-attention decoder) pretrained with masked-patch reconstruction",
            "MAE": "An MAE (self-attention decoder) pretrained with masked-patch reconstruction",
            }.get(config["class"], "The ViT encoder of a CrossMAE / MAE pretraining run (decoder removed)")
    lines = [f"# {describe_model(model)}", "", f"{kind}; see the paper [Rethinking Patch Dependence for Masked "
             f"Autoencoders]({PAPER}) (Fu, Lian et al., TMLR 2025).", ""]
    if source:
        lines += [f"Converted from `{source}`.", ""]
    lines += ["## Architecture", "", f"`config.json`: class `{config['class']}`"
              + (f", factory `{config['name']}`" if config["name"] else "")
              + ", with every constructor argument:", "", "| argument | value |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in config["kwargs"].items()]
    if results:
        lines += ["", "## Pretraining", "", "| field | value |", "|---|---|"]
        for key in ("model_description", "epochs", "mask_ratio", "pred_ratio", "decoder_depth"):
            if key in results:
                lines.append(f"| {key} | {results[key]} |")
        recipe = (results.get("config") or {}) if isinstance(results.get("config"), dict) else {}
        for key in ("batch_size", "global_batch_size", "optim"):
            if key in recipe:
                lines.append(f"| {key} | {recipe[key]} |")
        metrics = results.get("metrics") if isinstance(results.get("metrics"), dict) else {}
        if metrics:
            lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                      for k, v in metrics.items()]
    cls = config["class"]
    if usage is None:
        module = "crossmae.models" if cls != "MaskedViTEncoder" else "crossmae.models.encoder"
        usage = f'from {module} import {cls}\nmodel = {cls}.from_pretrained("<this repo or directory>")'
        usage_note = ("With this toolkit's `crossmae` package installed. `crossmae export --timm` writes the "
                      "encoder in a form that `timm` loads directly.")
    else:
        usage_note = "The encoder in timm's `VisionTransformer` layout (`timm.json` holds these arguments)."
    lines += ["", "## Use", "", "```python", usage, "```", "", usage_note, "", "## Citation", "", "```bibtex",
              CITATION, "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
