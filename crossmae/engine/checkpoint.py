"""Checkpoints: atomic save (:mod:`crossmae.files`), safe load (no code execution), encoder extraction.

Format: a dict with ``model`` (state dict) and, for resumable runs, ``optimizer``,
``scaler``, ``epoch`` (epochs completed), ``step``, ``config``, ``format``.
Files in the official CrossMAE/MAE release format (``{"model", "optimizer", "epoch",
"scaler", "args"}``) load too: their ``args`` namespace is allow-listed, nothing else.
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..files import atomic_write

logger = logging.getLogger("crossmae")

FORMAT = "crossmae-toolkit/1"


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


EXPECTED = "a torch.save file (ours, or the official CrossMAE/MAE release) or a .safetensors file"


def _sniff(path: Path) -> str | None:
    """What is wrong with the file's first bytes, or None if they can start a torch.save file
    (a zip archive, or the legacy format's pickle)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "is empty (0 bytes: a copy or write cut short?)"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    try:
        text = head.decode("utf-8")
        if text.isprintable() or text.strip().isprintable():
            return f"is a text file (it starts with {text[:12]!r})"
    except UnicodeDecodeError:
        pass
    return f"is not a checkpoint (it starts with the bytes {head[:8]!r})"


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load without executing code from the file. ``.safetensors`` files give ``{"model": tensors}``.
    Anything that is not a readable checkpoint is one :class:`CheckpointError` saying what the file is."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; expected a checkpoint file in it (e.g. {path}/checkpoint.pth)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return {"model": load_file(str(path))}
        problem = _sniff(path)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    except Exception as e:  # safetensors' own error class: a damaged or foreign file
        raise CheckpointError(f"{path} is not a readable .safetensors file ({str(e).splitlines()[0]})") from e
    if problem:
        raise CheckpointError(f"{path} {problem}; expected {EXPECTED}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # torch words it in several ways
            raise CheckpointError(f"{path} is damaged or not a checkpoint (its pickle cannot be read); "
                                  f"expected {EXPECTED}") from e
        raise CheckpointError(
            f"refusing to load {path}: it needs arbitrary pickled objects, which could run code "
            f"({_last_line(e)}). Re-save its state dict with torch.save or as .safetensors.") from e
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    except Exception as e:  # random or truncated bytes raise RuntimeError, EOFError, KeyError, ValueError, ...
        raise CheckpointError(f"{path} is damaged or not a checkpoint ({type(e).__name__}: "
                              f"{_first_sentence(e)}); expected {EXPECTED}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    picked = [ln for ln in lines if "unsupported global" in ln.lower()] or lines[:1] or ["?"]
    return picked[0]


def _first_sentence(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else "no detail"
    return text.split(". ")[0].rstrip(".")


def model_state(ckpt: dict, path: str | os.PathLike = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint: ours, the official release's, or a bare state dict."""
    state = ckpt.get("model", ckpt.get("state_dict", ckpt))
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a CrossMAE/MAE checkpoint: expected a 'model' state dict, "
                              f"found keys {sorted(ckpt)[:8]}")
    check_floating({k: v for k, v in state.items() if _is_encoder_key(k.removeprefix("module."))}, path)
    check_finite_weights(state, path)  # every load of weights (resume=, pretrained=, det, seg, knn) comes here
    return state


def named_tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) state dict by dotted name: ``{"optimizer.state.3.exp_avg": t, ...}``."""
    if isinstance(obj, torch.Tensor):
        return {prefix.rstrip("."): obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    out = {}
    for k, v in items:
        out.update(named_tensors(v, f"{prefix}{k}."))
    return out


def norms_finite(tensors: list[torch.Tensor]) -> bool:
    """True only if no tensor holds an inf or NaN (those make its norm inf/NaN), in one fused reduction and one
    host sync per device: the 2-norms of all tensors at once (``torch._foreach_norm``; measured 3x faster on CPU
    than the max-abs norm, which cannot overflow). False may also mean a finite tensor whose 2-norm overflows
    (values beyond ~1e19 in float32): :func:`nonfinite_names` then looks at each tensor."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        if (t.is_floating_point() or t.is_complex()) and t.numel():
            by_device.setdefault(t.device, []).append(t.detach())
    flags = [torch.isfinite(torch.stack(torch._foreach_norm(ts))).all() for ts in by_device.values()]
    return all(bool(f) for f in flags)


def nonfinite_names(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding an inf or NaN: one fused reduction (:func:`norms_finite`) when all are
    finite, the common case; tensor by tensor only when it fails."""
    if norms_finite(list(tensors.values())):
        return []
    return [k for k, t in tensors.items()
            if (t.is_floating_point() or t.is_complex()) and t.numel() and not bool(torch.isfinite(t).all())]


def describe_nonfinite(bad: list[str], total: int, what: str = "tensors") -> str:
    """E.g. '49 of 51 tensors hold inf/NaN (blocks.0.attn.qkv.weight, ...)'."""
    return f"{len(bad)} of {total} {what} hold inf/NaN ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"


DIVERGED_FILE_HINT = ("it was written by a run that diverged: use an earlier checkpoint of that run "
                      "(checkpoint-XXXX.pth), or train again with a lower lr")


def check_finite_weights(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """A :class:`CheckpointError` naming ``path`` if its weights hold inf/NaN: such a file cannot be trained
    on, fine-tuned from or evaluated, and the error would otherwise surface later as a NaN loss."""
    bad = nonfinite_names(state)
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights: {describe_nonfinite(bad, len(state))}; "
                              f"{DIVERGED_FILE_HINT}")


def check_floating(state: dict[str, torch.Tensor], path: str | os.PathLike,
                   expected: dict[str, torch.Tensor] | None = None) -> None:
    """Refuse integer or boolean tensors where weights are expected: the keys whose tensor in ``expected``
    (a model's state dict) is floating point, or every key without it. ``load_state_dict`` would copy
    them into float parameters without a word (a .safetensors with the right names but int64 content
    trained silently). float64 / float16 / bfloat16 are weights in another precision: they load as before."""
    bad = [k for k, v in state.items() if not v.is_floating_point()
           and (expected is None or (k in expected and expected[k].is_floating_point()))]
    if bad:
        named = ", ".join(f"{k} ({str(state[k].dtype).removeprefix('torch.')})" for k in bad[:3])
        raise CheckpointError(f"{path}: {len(bad)} tensors hold integers or booleans where the model has "
                              f"floating-point weights, e.g. {named}{', ...' if len(bad) > 3 else ''}; "
                              f"save the weights as floating point")


def load_model_state(module: torch.nn.Module, ckpt: dict, path: str | os.PathLike, hint: str = "") -> None:
    """Strictly load the model state of ``ckpt`` (read from ``path``) into ``module``. A checkpoint of
    another architecture or image size is one :class:`CheckpointError` listing a few differing keys
    with their shapes (file vs model), the file's recorded model config and ``hint`` (what to do),
    instead of torch's one-line-per-key RuntimeError."""
    state = model_state(ckpt, path)
    own = module.state_dict()
    shapes = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if shapes or missing or unexpected:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} tensors differ in shape (file vs model), e.g. "
                         + ", ".join(f"{k} {a} vs {b}" for k, a, b in shapes[:3]))
        if missing:
            parts.append(f"{len(missing)} model tensors are not in the file, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} file tensors are not in the model, e.g. {unexpected[:3]}")
        model_cfg = (ckpt.get("config") or {}).get("model") if isinstance(ckpt.get("config"), dict) else None
        written = f" The file was written for model {_short(model_cfg)}." if model_cfg else ""
        raise CheckpointError(f"{path} does not fit this model: " + "; ".join(parts) + "." + written
                              + (f" {hint}" if hint else ""))
    check_floating(state, path, expected=own)
    module.load_state_dict(state)


def _short(obj, limit: int = 200) -> str:
    """A model config in a few words: the fields that decide tensor shapes first."""
    if not isinstance(obj, dict):
        return str(obj)[:limit]
    first = ("name", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "arch")
    items = [(k, obj[k]) for k in first if k in obj] + [(k, v) for k, v in obj.items() if k not in first]
    text = ", ".join(f"{k}={v}" for k, v in items)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_encoder_key(key: str) -> bool:
    """A ViT encoder tensor in timm's names: all of them are weights (floating point)."""
    return key.startswith(("patch_embed.", "blocks.", "norm.")) or key in ("cls_token", "pos_embed")


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ViT encoder part of a pretraining state dict (timm key names), decoder dropped.

    The encoder's own final ``norm`` is kept (MAE, plain CrossMAE); CrossMAE with inter-block
    attention has none."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out = {k: v for k, v in state.items() if _is_encoder_key(k)}
    if "patch_embed.proj.weight" not in out or not any(k.startswith("blocks.") for k in out):
        raise CheckpointError("state dict has no ViT encoder (patch_embed.proj.weight, blocks.*)")
    return out


def load_backbone_encoder(backbone: torch.nn.Module, path: str | os.PathLike, fits: str,
                          resize_patch_embed: bool = False) -> tuple[list[str], list[str]]:
    """The encoder of a pretraining checkpoint (ours, the official CrossMAE / MAE release, or a bare state dict)
    -> a dense backbone's ``load_pretrained`` (DenseViT, DenseHiera: crossmae.models.transfer does the mapping and
    resizing). ``fits`` names the config fields that decide the backbone's shapes, for the one-line error when the
    checkpoint does not fit them. Returns (missing, unexpected): only the backbone's new parts may be missing."""
    state = encoder_state(model_state(load_checkpoint(path), path))
    try:
        missing, unexpected = backbone.load_pretrained(state, resize_patch_embed=resize_patch_embed)
    except CheckpointError as e:
        raise CheckpointError(f"pretrained={path} does not fit {fits}: {e}") from e
    new = sorted({k.split(".")[-1] if "blocks." in k else k for k in missing})
    logger.info("loaded the encoder of %s: %d tensors; new (initialised here): %d %s; unused: %s",
                path, len(state) - len(unexpected), len(missing), new, unexpected)
    return missing, unexpected
