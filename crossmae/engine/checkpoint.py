"""Checkpoints: atomic save, safe load (no code execution), encoder extraction.

Format: a dict with ``model`` (state dict) and, for resumable runs, ``optimizer``,
``scaler``, ``epoch`` (epochs completed), ``step``, ``rng``, ``config``, ``format``.
Files in the official CrossMAE/MAE release format (``{"model", "optimizer", "epoch",
"scaler", "args"}``) load too: their ``args`` namespace is allow-listed, nothing else.
"""
from __future__ import annotations

import argparse
import os
import pickle
import random
import re
import secrets
from pathlib import Path

import numpy as np
import torch

FORMAT = "crossmae-toolkit/1"


class CheckpointError(ValueError):
    pass


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``:
    a crash or kill at any point leaves the previous file intact. The file gets the permissions every
    other file gets (0666 less the umask), so colleagues on a shared cluster can read it; the temporary
    name carries the writer's pid, so a later run can tell (and remove) ones that killed runs left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)  # make the rename itself durable


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the data itself is synced
        pass
    finally:
        os.close(fd)


# save_checkpoint's temporary files: ".<name>.<pid>.<hex>.tmp"; ".<name>.<8 chars>.tmp" from older versions
_TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.[0-9a-f]{8}|[A-Za-z0-9_]{8})\.tmp$")


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary checkpoint files in ``directory`` that no live process on this host is writing
    (a kill during ``save_checkpoint`` leaves one). Call it only where no other host writes checkpoints into
    ``directory`` (``lock_run_dir`` does, holding the directory's lock). Returns the removed paths."""
    removed = []
    for p in sorted(Path(directory).glob(".*.tmp")):
        m = _TEMP_NAME.match(p.name)
        if m is None or not m["name"].endswith((".pth", ".pt", ".safetensors", ".bin")):
            continue  # not one of ours
        pid = int(m["pid"]) if m["pid"] else None
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            continue  # being written right now
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load without executing code from the file. ``.safetensors`` files give ``{"model": tensors}``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return {"model": load_file(str(path))}
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it needs arbitrary pickled objects, which could run code "
            f"(weights_only load failed: {str(e).splitlines()[0]}). Re-save its state dict with torch.save "
            f"or as .safetensors.") from e
    except (RuntimeError, EOFError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def model_state(ckpt: dict, path: str | os.PathLike = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint: ours, the official release's, or a bare state dict."""
    state = ckpt.get("model", ckpt.get("state_dict", ckpt))
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a CrossMAE/MAE checkpoint: expected a 'model' state dict, "
                              f"found keys {sorted(ckpt)[:8]}")
    return state


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ViT encoder part of a pretraining state dict (timm key names), decoder dropped.

    The encoder's own final ``norm`` is kept (MAE, plain CrossMAE); CrossMAE with inter-block
    attention has none."""
    prefixes = ("patch_embed.", "blocks.", "norm.")
    names = ("cls_token", "pos_embed")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out = {k: v for k, v in state.items() if k.startswith(prefixes) or k in names}
    if "patch_embed.proj.weight" not in out or not any(k.startswith("blocks.") for k in out):
        raise CheckpointError("state dict has no ViT encoder (patch_embed.proj.weight, blocks.*)")
    return out


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": random.getstate()[2], "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
