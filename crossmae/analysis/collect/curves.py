"""Training curves from the runs' JSON-lines logs (train_log.jsonl per step, epoch_log.jsonl per epoch)."""
from __future__ import annotations

import math
from pathlib import Path

from .rows import Problem, read_jsonl


def find_logs(roots: list[str | Path], problems: list[Problem] | None = None) -> dict[Path, dict[str, list[dict]]]:
    """{run dir: {"train": train_log records, "epoch": epoch_log records}} for every run with a log; a log
    with unreadable lines (cut by a kill, or not JSON) is added to ``problems``, its other lines are used."""
    runs: dict[Path, dict[str, list[dict]]] = {}
    for root in roots:
        root = Path(root).expanduser()
        if not root.is_dir():
            continue
        for name, kind in (("train_log.jsonl", "train"), ("epoch_log.jsonl", "epoch")):
            for path in sorted(root.rglob(name)):
                records, bad = read_jsonl(path)
                if bad and problems is not None:
                    problems.append(Problem(str(path), "log", f"{bad} unreadable line{'s' * (bad != 1)} skipped"))
                runs.setdefault(path.parent.resolve(), {"train": [], "epoch": []})[kind] = records
    return runs


def curve_series(logs: dict[str, list[dict]]) -> dict[str, tuple[list[float], list[float]]]:
    """Named (x, y) series of one run: "train loss" per logged step (x = epoch), and every numeric
    evaluation metric per epoch ("eval <name>")."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    pts = [(r["epoch"], r["loss"]) for r in logs["train"] if _num(r.get("epoch")) and _num(r.get("loss"))]
    if not pts:  # logs without per-iteration lines: the epoch means
        pts = [(r["epoch"], r["train_loss"]) for r in logs["epoch"]
               if _num(r.get("epoch")) and _num(r.get("train_loss"))]
    if pts:
        series["train loss"] = ([p[0] for p in pts], [p[1] for p in pts])
    for r in logs["epoch"]:
        ev = r.get("eval")
        if not isinstance(ev, dict) or not _num(r.get("epoch")):
            continue
        for k, v in ev.items():
            if _num(v) and k != "num_samples" and not k.endswith("_s"):  # counts and timings are no curves
                xs, ys = series.setdefault(f"eval {k}", ([], []))
                xs.append(r["epoch"])
                ys.append(v)
    return series


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
