"""results.json of a re-run: a finished run that is run again trains nothing, so what only training
measured (its time, the loss before training) is carried over from the previous results.json, and
the evaluation is recomputed from the checkpoint by the caller."""
from __future__ import annotations

import logging
from pathlib import Path

from ..userfiles import parse_json

logger = logging.getLogger("crossmae")


def previous_metrics(path: str | Path, task: str) -> dict:
    """``metrics`` of an earlier results.json of the same task, or {} (missing, unreadable, other task)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        old = parse_json(path.read_text())
    except (OSError, ValueError) as e:
        logger.warning("ignoring the previous %s (%s: %s)", path, type(e).__name__, e)
        return {}
    if not isinstance(old, dict) or old.get("task") != task or not isinstance(old.get("metrics"), dict):
        return {}
    return old["metrics"]


def rerun_metrics(trained: bool, evaluated: dict, previous: dict, train_time_s: float) -> dict:
    """The metrics to write: a run that trained reports its own; a finished run re-run keeps the previous
    results' training-only entries and takes the fresh evaluation over them."""
    if trained:
        return {"train_time_s": train_time_s, **evaluated}
    return {**previous, **evaluated}
