"""Run logging on rank 0: a tqdm progress bar, JSON-lines metrics, TensorBoard scalars."""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

from .distributed import is_main_process

logger = logging.getLogger("crossmae")


def setup_logging(output_dir: str | Path | None = None) -> None:
    """Console (rank 0 only, warnings from every rank) + ``<output_dir>/log.txt``."""
    root = logging.getLogger("crossmae")
    root.handlers.clear()
    root.setLevel(logging.INFO if is_main_process() else logging.WARNING)
    fmt = logging.Formatter("[%(asctime)s %(levelname)s] %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if output_dir is not None and is_main_process():
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(Path(output_dir) / "log.txt")
        file.setFormatter(fmt)
        root.addHandler(file)
    root.propagate = False


class RunLogger:
    """Writes ``train_log.jsonl`` (every ``log_every`` iterations), ``epoch_log.jsonl`` (one line per
    epoch, with evaluation results) and TensorBoard scalars under ``<output_dir>/tb``. No-op off rank 0."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = True):
        self.enabled = is_main_process()
        self.dir = Path(output_dir)
        self.tb = None
        if self.enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                    self.tb = SummaryWriter(str(self.dir / "tb"))
                except ImportError:  # tensorboard is a dependency; tolerate its absence all the same
                    logger.warning("tensorboard not installed: no TensorBoard scalars")

    def _append(self, name: str, record: dict) -> None:
        with open(self.dir / name, "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_iter(self, step: int, record: dict) -> None:
        if not self.enabled:
            return
        self._append("train_log.jsonl", {"step": step, **record})
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and math.isfinite(v) and k != "epoch":
                    self.tb.add_scalar(f"train/{k}", v, step)

    def log_epoch(self, epoch: int, record: dict) -> None:
        if not self.enabled:
            return
        self._append("epoch_log.jsonl", {"epoch": epoch, "time": time.time(), **record})
        if self.tb is not None:
            for k, v in _flatten(record).items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"epoch/{k}", v, epoch)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def write_json(path: str | Path, data: dict) -> None:
    """Results files (what tools/collect.py reads), written whole via a rename."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)
