"""``crossmae export``: a pretraining checkpoint (ours or the official release's) -> a directory for the
Hugging Face Hub, optionally pushed.

    crossmae export --checkpoint output/run/checkpoint.pth --out hub/run              # CrossMAE / MAE
    crossmae export --checkpoint ... --out hub/run-encoder --encoder-only            # the encoder alone
    crossmae export --checkpoint ... --out hub/run-timm --timm                       # what timm loads
    crossmae export --checkpoint ... --out hub/run --push org/name                   # and upload it

``--out`` must be a new or empty directory; ``--overwrite`` lets an export into a non-empty one replace the
files an export writes (named in the message) and keeps every other file.

The first two write ``config.json`` + ``model.safetensors`` + ``README.md`` (a model card with the recipe and
metrics of the run's results.json) that ``CrossMAE.from_pretrained`` / ``MaskedViTEncoder.from_pretrained``
read. ``--timm`` writes the encoder in timm's VisionTransformer layout plus ``timm.json``, the arguments of::

    timm.create_model(model_name, pretrained=True, **kwargs,  # model_name: e.g. ViT-B/16's at 224 px
                      pretrained_cfg_overlay=dict(file="hub/run-timm/model.safetensors", num_classes=0, ...))
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("crossmae")

OUR_FILES = ("config.json", "model.safetensors", "README.md", "timm.json")
TIMM_SPEC_KEYS = {"model_name", "kwargs", "pretrained_cfg_overlay"}  # what makes a timm.json one of ours


# ------------------------------------------------------------------ timm
def timm_state(encoder, global_pool: str) -> dict:
    """The encoder's tensors in the layout of timm's ``VisionTransformer(global_pool=..., num_classes=0)``.

    'avg' is MAE's fine-tuning layout: mean of the patch tokens through a fresh ``fc_norm``, no final
    ``norm`` (dropped if the encoder has one). 'token': the cls token through the final ``norm``; an encoder
    without one (CrossMAE with inter-block attention) gets a fresh one. "Fresh" is LayerNorm's own
    initialisation (weight 1, bias 0), written out so that timm can load the file strictly."""
    import torch

    from .engine.checkpoint import encoder_state
    if global_pool not in ("avg", "token"):
        raise ValueError(f"global_pool must be 'avg' or 'token', got {global_pool!r}")
    state = {k: v.detach().contiguous().cpu() for k, v in encoder_state(encoder.state_dict()).items()}
    dim = state["cls_token"].shape[-1]
    fresh = {"weight": torch.ones(dim), "bias": torch.zeros(dim)}
    if global_pool == "avg":
        state = {k: v for k, v in state.items() if not k.startswith("norm.")}
        state.update({f"fc_norm.{k}": v for k, v in fresh.items()})
    elif "norm.weight" not in state:
        state.update({f"norm.{k}": v for k, v in fresh.items()})
    return state


def timm_spec(encoder, global_pool: str, file: str) -> dict[str, Any]:
    """The ``timm.create_model`` call that rebuilds the encoder: a registered ViT name (the encoder's size,
    or ViT-B's as a template whose architecture the kwargs replace) + kwargs + the overlay that
    points at the file, drops the classifier (num_classes=0: the load is strict) and sets our
    preprocessing (ImageNet mean/std, the pretraining resolution)."""
    from .data import IMAGENET_MEAN, IMAGENET_STD
    from .models.naming import arch_of
    from .models.sizes import VIT_SIZES, timm_vit_name, vit_size_of
    a = arch_of(encoder)
    size = vit_size_of(a["embed_dim"], a["depth"], a["num_heads"])
    if size is not None and VIT_SIZES[size]["patch_size"] != a["patch_size"]:
        size = None  # timm's registered names fix the patch too
    kwargs: dict[str, Any] = {"global_pool": global_pool}
    if size is None or a["mlp_ratio"] != 4.0:
        kwargs.update(embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"],
                      patch_size=a["patch_size"], mlp_ratio=a["mlp_ratio"])
    if a["img_size"] != 224:
        kwargs["img_size"] = a["img_size"]
    overlay = {"file": file, "num_classes": 0, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
               "input_size": [encoder.in_chans, a["img_size"], a["img_size"]], "crop_pct": 0.875,
               "interpolation": "bicubic"}
    return {"model_name": timm_vit_name(size or "base"), "kwargs": kwargs,
            "pretrained_cfg_overlay": overlay}


def timm_usage(spec: dict) -> str:
    kw = "".join(f", {k}={v!r}" for k, v in spec["kwargs"].items())
    overlay = ", ".join(f"{k}={v!r}" for k, v in spec["pretrained_cfg_overlay"].items())
    return (f"import timm\nmodel = timm.create_model({spec['model_name']!r}, pretrained=True{kw},\n"
            f"                          pretrained_cfg_overlay=dict({overlay}))")


def save_timm(encoder, out: Path, global_pool: str | None = None, results: dict | None = None,
              source: str | None = None) -> dict:
    """Write ``model.safetensors`` (timm layout), ``timm.json`` and ``README.md`` into ``out``."""
    from .files import write_text
    from .hub import model_card
    from .models.hub_mixin import save_safetensors
    pool = global_pool or ("token" if encoder.norm is not None else "avg")
    weights = out / "model.safetensors"
    save_safetensors(timm_state(encoder, pool), weights, metadata={"format": "pt"})
    spec = timm_spec(encoder, pool, str(weights.resolve()))
    write_text(out / "timm.json", json.dumps(spec, indent=2) + "\n")
    portable = {**spec, "pretrained_cfg_overlay": {**spec["pretrained_cfg_overlay"], "file": "model.safetensors"}}
    write_text(out / "README.md", str(model_card(encoder, results, source, usage=timm_usage(portable))))
    return spec


def save_hub(model, out: Path, results: dict | None = None, source: str | None = None) -> None:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` (what ``from_pretrained`` reads) into
    ``out``; unlike huggingface_hub's ``save_pretrained``, an existing model card is replaced too."""
    from .files import write_text
    from .hub import model_card
    model._save_pretrained(out)
    write_text(out / "README.md", str(model_card(model, results, source)))


def written_files(mode: str) -> tuple[str, ...]:
    return ("model.safetensors", "timm.json", "README.md") if mode == "timm" else \
        ("config.json", "model.safetensors", "README.md")


def _is_ours(path: Path) -> bool:
    """Whether ``path`` is a config.json / timm.json an export wrote (a user's file of that name is kept)."""
    from .models.hub_mixin import FORMAT
    from .userfiles import parse_json
    try:
        data = parse_json(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    return data.get("format") == FORMAT if path.name == "config.json" else TIMM_SPEC_KEYS <= set(data)


def replaced_files(out: Path, mode: str) -> list[str]:
    """The files already in ``out`` that an export of ``mode`` replaces: those it writes, and an earlier
    export's config.json / timm.json that would contradict it (a CrossMAE config beside timm weights)."""
    if not out.is_dir():
        return []
    stale = [n for n in ("config.json", "timm.json") if n not in written_files(mode) and _is_ours(out / n)]
    return sorted(n for n in written_files(mode) if (out / n).exists()) + stale


# ------------------------------------------------------------------ export
def read_results(path: Path | None, checkpoint: Path) -> dict | None:
    """The run's results.json: ``path``, else a pretraining results.json beside the checkpoint."""
    candidate = path or checkpoint.parent / "results.json"
    if not candidate.is_file():
        if path is not None:
            raise FileNotFoundError(f"--results {path} does not exist")
        return None
    from .userfiles import parse_json
    try:
        data = parse_json(candidate.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: JSONDecodeError, NestingError
        raise ValueError(f"{candidate} is not readable JSON: {e}") from e
    if not isinstance(data, dict) or (path is None and data.get("task") != "pretrain"):
        return None
    return data


def export(checkpoint: str | Path, out: str | Path, mode: str = "full", results: str | Path | None = None,
           model_name: str | None = None, model_kwargs: dict | None = None, global_pool: str | None = None,
           overwrite: bool = False) -> Path:
    """Write the export of ``checkpoint`` into ``out``; mode 'full' (CrossMAE / MAE), 'encoder' or 'timm'.
    ``out`` must be new or empty unless ``overwrite`` (see :func:`replaced_files`: nothing else is touched)."""
    from .analysis.loading import load_pretrained
    from .hub import encoder_of
    from .userfiles import check_output_dir
    if mode not in ("full", "encoder", "timm"):
        raise ValueError(f"mode must be full, encoder or timm, got {mode!r}")
    checkpoint, out = Path(checkpoint), Path(out)
    check_output_dir(out, OUR_FILES, overwrite)  # before the slow part
    model, _ = load_pretrained(checkpoint, model_name, model_kwargs)  # ours or the release's format
    data = read_results(Path(results) if results else None, checkpoint)
    stale = [n for n in replaced_files(out, mode) if n not in written_files(mode)]
    out.mkdir(parents=True, exist_ok=True)
    source = checkpoint.name
    if mode == "timm":
        spec = save_timm(encoder_of(model), out, global_pool, data, source)
        logger.info("timm: %s", timm_usage(spec))
    else:
        save_hub(model if mode == "full" else encoder_of(model), out, data, source)
    for name in stale:  # removed only once the new export is complete
        (out / name).unlink(missing_ok=True)
    return out


def push(out: str | Path, repo: str, token: str | None = None, private: bool | None = None) -> str:
    """Upload an export directory to the Hub repo ``repo`` (created if needed)."""
    from .hub import HubError, offline
    later = f"the export is in {out}; upload it later with: hf upload {repo} {out} ."
    if offline():
        raise HubError(f"cannot push to {repo}: HF_HUB_OFFLINE is set ({later})")
    from huggingface_hub import HfApi
    try:
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id=repo, private=private, exist_ok=True).repo_id
        info = api.upload_folder(repo_id=repo_id, folder_path=str(out), commit_message="crossmae export")
    except Exception as e:  # no network, no login, no permission: one line, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise HubError(f"cannot push to {repo}: {type(e).__name__}: {first} ({later})") from e
    return str(getattr(info, "commit_url", info))


# ------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="pretraining checkpoint (ours, or the official release's)")
    p.add_argument("--out", required=True, help="output directory (new or empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="export into a non-empty --out: replace the files an export writes there (config.json, "
                        "model.safetensors, README.md, timm.json), keep every other file")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--encoder-only", action="store_true", help="the encoder alone (MaskedViTEncoder)")
    mode.add_argument("--timm", action="store_true", help="the encoder in timm's VisionTransformer layout")
    p.add_argument("--global-pool", choices=("avg", "token"), default=None,
                   help="--timm: 'avg' (MAE fine-tuning: fresh fc_norm, no final norm) or 'token' (cls token "
                        "through the final norm); default: token if the encoder has a final norm, else avg")
    p.add_argument("--results", default=None, help="results.json for the model card (default: the pretraining "
                                                   "results.json beside the checkpoint, if any)")
    p.add_argument("--model", default=None, help="model factory name, for files that do not record it")
    p.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments of --model")
    p.add_argument("--push", default=None, metavar="REPO", help="upload to this Hub repo (org/name)")
    p.add_argument("--private", action="store_true", help="--push: create the repo private")


def main(args: argparse.Namespace) -> Path:
    from .analysis.loading import parse_model_kwargs
    kwargs = parse_model_kwargs(args.model_kwargs)
    if args.global_pool and not args.timm:
        raise ValueError("--global-pool applies to --timm exports only")
    mode = "timm" if args.timm else "encoder" if args.encoder_only else "full"
    replaced = replaced_files(Path(args.out), mode) if args.overwrite else []
    out = export(args.checkpoint, args.out, mode, args.results, args.model, kwargs, args.global_pool,
                 overwrite=args.overwrite)
    print(f"wrote {out}: {', '.join(n for n in written_files(mode))}")
    if replaced:
        kept = sorted(p.name for p in out.iterdir() if p.name not in OUR_FILES)
        print(f"replaced {', '.join(replaced)}" + (f"; kept {', '.join(kept)}" if kept else ""))
    if args.push:
        print(f"pushed: {push(out, args.push, private=args.private or None)}")
    return out
