"""Run logging on rank 0: progress (a tqdm bar on a terminal, plain periodic lines elsewhere), JSON-lines
metrics, TensorBoard scalars."""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Iterable

from ..files import atomic_write
from ..userfiles import parse_json
from .distributed import is_main_process

logger = logging.getLogger("crossmae")


def setup_logging(output_dir: str | Path | None = None) -> None:
    """Console (rank 0 only, warnings from every rank) + ``<output_dir>/log.txt``. Claiming ``output_dir``
    is a separate call (``task.claim_run_dir``), made right after this one, so the lock's warnings reach log.txt."""
    use_bars()  # a bad CROSSMAE_PROGRESS fails now, not after the data is set up
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


# ------------------------------------------------------------------ progress
PROGRESS_ENV = "CROSSMAE_PROGRESS"  # bar | lines | auto (unset): bars only where stderr is a terminal


def use_bars() -> bool:
    """tqdm bars where stderr is a terminal; elsewhere (SLURM .out files, nohup, CI) every redraw would land in
    the log, carriage returns and all, so plain lines instead. ``CROSSMAE_PROGRESS=bar|lines`` forces either."""
    mode = os.environ.get(PROGRESS_ENV, "auto").strip().lower()
    if mode == "auto":
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    if mode not in ("bar", "lines"):
        raise ValueError(f"environment variable {PROGRESS_ENV}={mode!r}: must be bar, lines or auto")
    return mode == "bar"


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, steps_left: int | None = None, min_interval_s: float = 30.0):
    """A tqdm bar, or (see :func:`use_bars`) a :class:`ProgressLines` with the same interface."""
    if use_bars():
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False)
    return ProgressLines(iterable, total=total, desc=desc, unit=unit, disable=disable, steps_left=steps_left,
                         min_interval_s=min_interval_s)


class ProgressLines:
    """Progress as log lines (console and log.txt), like detectron2's and mmengine's loggers. The training
    loop calls ``set_postfix`` at its logging steps (every ``log_every``): one line each, with the step, the
    fields given (loss, lr, images/s) and the ETA of the ``steps_left`` steps to the end of the run.
    Iterated over (evaluation loops), it writes a line at most every ``min_interval_s`` seconds."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, steps_left: int | None = None, min_interval_s: float = 30.0):
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        self.total = total if total is not None or iterable is None else _len_or_none(iterable)
        self.steps_left = steps_left if steps_left is not None else self.total
        self.min_interval_s = min_interval_s
        self.n = 0
        self.start = self.last_line = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
            now = time.monotonic()
            if now - self.last_line >= self.min_interval_s:
                self._line({}, now)

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **fields) -> None:
        self._line(fields)

    def _line(self, fields: dict, now: float | None = None) -> None:
        if self.disable:
            return
        now = time.monotonic() if now is None else now
        self.last_line = now
        rate = self.n / max(now - self.start, 1e-9)
        where = f"{self.n}/{self.total}" if self.total else str(self.n)
        if self.unit != "it":
            where = f"{self.unit} {where}"
        parts = [f"{k}={v}" for k, v in fields.items()] or [f"{rate:.2f} {self.unit}/s"]
        if self.steps_left and self.n:
            parts.append(f"eta {datetime.timedelta(seconds=round((self.steps_left - self.n) / rate))}")
        logger.info("%s %s: %s", self.desc, where, " ".join(parts))

    def close(self) -> None:
        pass


def _len_or_none(iterable) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


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

    def rewind(self, step: int, epoch: int, by: str = "an earlier, interrupted run") -> None:
        """Drop ``train_log.jsonl`` records after optimizer step ``step``, ``epoch_log.jsonl`` records after
        ``epoch``, lines cut by a kill, and (via TensorBoard's purge step) scalars after ``step``. ``by``: who
        wrote them, for the log line."""
        if not self.enabled:
            return
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        self.purge_step = step + 1
        dropped = rewind_jsonl(self.dir / "train_log.jsonl", "step", step)
        dropped += rewind_jsonl(self.dir / "epoch_log.jsonl", "epoch", epoch)
        if dropped:
            logger.info("dropped %d log records written after step %d (epoch %d) by %s", dropped, step, epoch, by)

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
            record = parse_json(line)
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
