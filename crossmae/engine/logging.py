"""Run logging on rank 0: a tqdm progress bar, JSON-lines metrics, TensorBoard scalars."""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

from .checkpoint import atomic_write
from .distributed import is_main_process
from .rundir import lock_run_dir

logger = logging.getLogger("crossmae")


def setup_logging(output_dir: str | Path | None = None) -> None:
    """Console (rank 0 only, warnings from every rank) + ``<output_dir>/log.txt``.

    Every task calls this before it writes anything, so this is where rank 0 claims ``output_dir``
    (``rundir.lock_run_dir``: a second run on the same directory stops here with one clear message)."""
    root = logging.getLogger("crossmae")
    root.handlers.clear()
    root.setLevel(logging.INFO if is_main_process() else logging.WARNING)
    fmt = logging.Formatter("[%(asctime)s %(levelname)s] %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if output_dir is not None and is_main_process():
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(Path(output_dir) / "log.txt", delay=True)  # opened at the first record
        file.setFormatter(fmt)
        root.addHandler(file)
    root.propagate = False
    if output_dir is not None and is_main_process():
        # before anything is written there (log.txt opens at its first record, so the lock's warnings
        # about a stale lock or leftover temporary files reach it)
        lock_run_dir(output_dir)


class RunLogger:
    """Writes ``train_log.jsonl`` (every ``log_every`` iterations), ``epoch_log.jsonl`` (one line per
    epoch, with evaluation results) and TensorBoard scalars under ``<output_dir>/tb``. No-op off rank 0.

    A resumed run calls ``rewind(step, epoch)`` first, so the files describe one trajectory: records
    logged after the checkpoint it resumes from (by the run that was killed) are dropped."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = True):
        self.enabled = is_main_process()
        self.dir = Path(output_dir)
        self.tb = None
        self.tensorboard = tensorboard and self.enabled
        self.purge_step: int | None = None
        if self.enabled:
            self.dir.mkdir(parents=True, exist_ok=True)

    def _writer(self):
        """The TensorBoard writer, opened on first use (after ``rewind``, which sets its purge step)."""
        if self.tb is None and self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(self.dir / "tb"), purge_step=self.purge_step)
            except ImportError:  # tensorboard is a dependency; tolerate its absence all the same
                logger.warning("tensorboard not installed: no TensorBoard scalars")
                self.tensorboard = False
        return self.tb

    def rewind(self, step: int, epoch: int) -> None:
        """Drop ``train_log.jsonl`` records after optimizer step ``step``, ``epoch_log.jsonl`` records after
        ``epoch``, lines cut by a kill, and (via TensorBoard's purge step) scalars after ``step``."""
        if not self.enabled:
            return
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        self.purge_step = step + 1
        dropped = rewind_jsonl(self.dir / "train_log.jsonl", "step", step)
        dropped += rewind_jsonl(self.dir / "epoch_log.jsonl", "epoch", epoch)
        if dropped:
            logger.info("dropped %d log records written after step %d (epoch %d) by an earlier, interrupted run",
                        dropped, step, epoch)

    def _append(self, name: str, record: dict) -> None:
        with open(self.dir / name, "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_iter(self, step: int, record: dict) -> None:
        if not self.enabled:
            return
        self._append("train_log.jsonl", {"step": step, **record})
        tb = self._writer()
        if tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and math.isfinite(v) and k != "epoch":
                    tb.add_scalar(f"train/{k}", v, step)

    def log_epoch(self, epoch: int, record: dict, step: int | None = None) -> None:
        """``step``: the optimizer step at the end of the epoch, the x axis of the TensorBoard scalars (one
        axis for every scalar, so one purge step rewinds them all); the epoch number if not given."""
        if not self.enabled:
            return
        self._append("epoch_log.jsonl", {"epoch": epoch, "time": time.time(), **record})
        tb = self._writer()
        if tb is not None:
            for k, v in flatten_dict(record).items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    tb.add_scalar(f"epoch/{k}", v, epoch if step is None else step)
            tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def rewind_jsonl(path: Path, key: str, last: int) -> int:
    """Keep the records of a JSON-lines log whose ``key`` is at most ``last``; drop the others and any line
    that does not parse (cut by a kill). Rewritten via a rename, only when something is dropped. Returns
    how many lines were dropped."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return 0
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
            value = float(record[key])
        except (ValueError, KeyError, TypeError):
            continue
        if value <= last:
            kept.append(line)
    if len(kept) == len(lines):
        return 0
    text = "".join(line + "\n" for line in kept)
    atomic_write(path, lambda f: f.write(text), binary=False)
    return len(lines) - len(kept)


def flatten_dict(d: dict, sep: str = "/", prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``; an empty dict is a leaf."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten_dict(v, sep, f"{prefix}{k}{sep}"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def write_json(path: str | Path, data: dict) -> None:
    """Results files (what tools/collect.py reads), written whole via a rename."""
    text = json.dumps(data, indent=2, sort_keys=True)
    atomic_write(path, lambda f: f.write(text), binary=False)
