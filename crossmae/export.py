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

A CrossMAE-Hiera / MAE-Hiera checkpoint exports with ``--timm`` only: its encoder in the layout of timm's
``Hiera`` (model_name ``hiera_<size>_224``; kwargs: the geometry where it differs from that factory's, e.g.
the pretraining ``q_pool=2`` or a toy size's widths and mask units).
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


# ------------------------------------------------------------------ timm: Hiera
def hiera_timm_state(model) -> dict:
    """A CrossMAE-Hiera / MAE-Hiera encoder in the layout of timm's ``Hiera(num_classes=0)``: the encoder's
    tensors (timm's names already) and ``head.norm``, the LayerNorm timm's head applies to the pooled
    features. It is the encoder's final norm where there is one: CrossMAE-Hiera without inter-block
    attention's ``norm``, MAE-Hiera's ``encoder_norm`` (what timm's own filter makes of the reference MAE-Hiera
    checkpoints); else fresh (weight 1, bias 0), written out so that timm loads the file strictly."""
    import torch

    from .engine.checkpoint import encoder_state
    state = {k: v.detach().contiguous().cpu() for k, v in encoder_state(model.state_dict()).items()}
    if hasattr(model, "encoder_norm"):  # MAE-Hiera
        norm = model.encoder_norm.state_dict()
    elif "norm.weight" in state:  # CrossMAE-Hiera, inter_block="none"
        norm = {k: state.pop(f"norm.{k}") for k in ("weight", "bias")}
    else:
        norm = {"weight": torch.ones(model.embed_dim), "bias": torch.zeros(model.embed_dim)}
    state.update({f"head.norm.{k}": v.detach().contiguous().cpu() for k, v in norm.items()})
    return state


def hiera_timm_spec(model, model_config: dict, file: str) -> dict[str, Any]:
    """The ``timm.create_model`` call that rebuilds a Hiera encoder: ``hiera_<size>_224`` (the encoder's size,
    or Hiera-B's as a template whose architecture the kwargs replace), the geometry where it differs from
    that factory's (sequences where timm takes them: timm 1.0.3 needs a sequence img_size too), the overlay
    (the file, no classifier, our preprocessing) as :func:`timm_spec`'s. ``model_config``: the checkpoint's
    model section (factory name + overrides); ``q_pool`` is read from the model (pooling has no weights)."""
    import inspect

    from timm.models.hiera import Hiera

    from .data import IMAGENET_MEAN, IMAGENET_STD
    from .models.hiera import HieraEncoder
    from .models.sizes import HIERA_SIZES
    from .models.transfer import hiera_arch
    ours = {k: p.default for k, p in inspect.signature(HieraEncoder).parameters.items()}
    ours.update(hiera_arch(model_config), q_pool=model.q_pool)
    if ours["norm_eps"] != 1e-6:
        raise ValueError(f"norm_eps={ours['norm_eps']}: timm's Hiera has LayerNorm eps 1e-6 only")
    size = next((k for k, v in HIERA_SIZES.items() if (ours["embed_dim"], ours["num_heads"], tuple(ours["stages"]))
                 == (v["embed_dim"], v["num_heads"], tuple(v["stages"]))), None)
    pair = ("img_size", "q_stride", "mask_unit_size", "patch_kernel", "patch_stride", "patch_padding")
    wanted = {k: [ours[k]] * 2 if k in pair else list(ours[k]) if k in ("stages", "mask_unit_attn") else ours[k]
              for k in ("img_size", "in_chans", "embed_dim", "num_heads", "stages", "q_pool", "q_stride",
                        "mask_unit_size", "mask_unit_attn", "dim_mul", "head_mul", "patch_kernel", "patch_stride",
                        "patch_padding", "mlp_ratio")}
    timm_default = {k: p.default for k, p in inspect.signature(Hiera).parameters.items()}
    timm_default.update(HIERA_SIZES[size or "base"])
    kwargs = {k: v for k, v in wanted.items() if v != (list(timm_default[k]) if isinstance(timm_default[k], tuple)
                                                        else timm_default[k])}
    img = ours["img_size"]
    overlay = {"file": file, "num_classes": 0, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
               "input_size": [ours["in_chans"], img, img], "crop_pct": 0.875, "interpolation": "bicubic"}
    return {"model_name": f"hiera_{size or 'base'}_224", "kwargs": kwargs, "pretrained_cfg_overlay": overlay}


def hiera_model_card(model, spec: dict, usage: str, results: dict | None, source: str | None) -> str:
    """README.md of a Hiera timm export: what it is, the timm call, the pretraining metrics."""
    from .models.naming import describe_model
    lines = ["---", "library_name: timm", "pipeline_tag: image-feature-extraction",
             "tags: [crossmae, hiera, masked-image-modeling]", "---", "", f"# {describe_model(model)}", "",
             "The Hiera encoder of a CrossMAE-Hiera / MAE-Hiera pretraining run (decoder removed), in the layout "
             "of timm's `Hiera` without a classifier.", ""]
    if source:
        lines += [f"Converted from `{source}`.", ""]
    lines += ["## Usage", "", "```python", usage, "```", "",
              "`forward_intermediates(x, intermediates_only=True)` gives each stage's map (NCHW), "
              "`forward_features(x)` the last stage's tokens.", ""]
    metrics = (results or {}).get("metrics")
    if isinstance(metrics, dict) and metrics:
        lines += ["## Pretraining metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"


def save_timm_hiera(model, model_config: dict, out: Path, results: dict | None = None,
                    source: str | None = None) -> dict:
    """Write ``model.safetensors`` (timm's Hiera layout), ``timm.json`` and ``README.md`` into ``out``."""
    from .files import write_text
    from .models.hub_mixin import save_safetensors
    weights = out / "model.safetensors"
    save_safetensors(hiera_timm_state(model), weights, metadata={"format": "pt"})
    spec = hiera_timm_spec(model, model_config, str(weights.resolve()))
    write_text(out / "timm.json", json.dumps(spec, indent=2) + "\n")
    portable = {**spec, "pretrained_cfg_overlay": {**spec["pretrained_cfg_overlay"], "file": "model.safetensors"}}
    write_text(out / "README.md", hiera_model_card(model, spec, timm_usage(portable), results, source))
    return spec


def refuse_hiera(ckpt: dict, state: dict, path: str | Path, target: str) -> None:
    """One ValueError naming ``path`` when the checkpoint holds a Hiera (pretraining, or a det / seg run on
    one), for the exports to ViT-only formats (``target``: detectron2, mmseg). A Hiera: the config names a
    Hiera model or family, or a block widens between stages (``blocks.{i}.proj``, timm's HieraBlock; a ViT
    block's projection is ``attn.proj``)."""
    import re
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    widening = re.compile(r"(^|\.)blocks\.\d+\.proj\.weight$")
    if model.get("family") == "hiera" or "hiera" in str(model.get("name", "")) or any(map(widening.search, state)):
        raise ValueError(f"{path} is a Hiera checkpoint: only ViT checkpoints export to {target} "
                         f"(`crossmae export --timm` writes timm's Hiera)")


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
    from .models.hiera import HieraEncoder
    from .userfiles import check_output_dir
    if mode not in ("full", "encoder", "timm"):
        raise ValueError(f"mode must be full, encoder or timm, got {mode!r}")
    checkpoint, out = Path(checkpoint), Path(out)
    check_output_dir(out, OUR_FILES, overwrite)  # before the slow part
    model, info = load_pretrained(checkpoint, model_name, model_kwargs)  # ours or the release's format
    hiera = isinstance(model, HieraEncoder)
    if hiera and mode != "timm":
        raise ValueError(f"{checkpoint}: a Hiera checkpoint ({info['name']}) exports only for timm: add --timm")
    if hiera and global_pool not in (None, "avg"):
        raise ValueError(f"{checkpoint}: a Hiera encoder has no cls token: global_pool must be avg")
    data = read_results(Path(results) if results else None, checkpoint)
    stale = [n for n in replaced_files(out, mode) if n not in written_files(mode)]
    out.mkdir(parents=True, exist_ok=True)
    source = checkpoint.name
    if hiera:
        spec = save_timm_hiera(model, {**info["kwargs"], "name": info["name"]}, out, data, source)
        logger.info("timm: %s", timm_usage(spec))
    elif mode == "timm":
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
    mode.add_argument("--timm", action="store_true",
                      help="the encoder in timm's VisionTransformer layout (a Hiera checkpoint: timm's Hiera)")
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
