"""Run directories -> rows: every ``results.json`` under the given roots, one row per pretrained checkpoint
with the downstream numbers that name it, and the problems (unreadable, cut-short, unmatched files)."""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ...models.sizes import VIT_LETTERS, VIT_SIZES, vit_encoder, vit_size_in_name
from ...userfiles import parse_json, parse_yaml

logger = logging.getLogger("crossmae")

SIZE_NAMES = tuple(VIT_SIZES)
LOG_FILES = ("epoch_log.jsonl", "train_log.jsonl")


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    task: str
    datasets: tuple[str, ...]  # normalised dataset names (lowercase alphanumerics)
    metric: str


COLUMNS = (
    Column("in1k_ft", "IN-1K fine-tune", "finetune", ("imagenet", "imagenet1k", "in1k", "ilsvrc2012"), "top1"),
    Column("linprobe", "Linear probe", "linprobe", ("imagenet", "imagenet1k", "in1k", "ilsvrc2012"), "top1"),
    Column("coco_box", "COCO APbox", "det", ("coco", "coco2017"), "bbox_AP"),
    Column("coco_mask", "COCO APmask", "det", ("coco", "coco2017"), "segm_AP"),
    Column("ade20k_miou", "ADE20K mIoU", "seg", ("ade20k", "ade", "ade20k2016", "ade20k2021"), "mIoU"),
    Column("inat2019", "iNat2019", "cls_transfer", ("inat2019", "inaturalist2019", "inaturalist"), "top1"),
    Column("places365", "Places365", "cls_transfer", ("places365", "places365standard", "places"), "top1"),
)
# the headline metric of a task, for results on datasets outside the standard columns
TASK_METRICS = {"finetune": ("top1",), "linprobe": ("top1",), "cls_transfer": ("top1",),
                "det": ("bbox_AP", "segm_AP"), "seg": ("mIoU",)}
DOWNSTREAM_TASKS = tuple(TASK_METRICS)


def norm_name(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


@dataclass
class Problem:
    path: str
    kind: str  # corrupt | invalid | incomplete | unmatched | duplicate | log
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.path}: {self.message}"


@dataclass
class Row:
    """One pretrained checkpoint."""
    checkpoint: str
    label: str
    method: str | None = None  # "mae" | "crossmae"
    size: str | None = None  # small/base/large/huge, or "custom" for a non-standard architecture
    epochs: int | None = None
    mask_ratio: float | None = None
    pred_ratio: float | None = None
    decoder_depth: int | None = None
    resolution: int | None = None
    model: str | None = None
    arch: str | None = None  # for a "custom" size: what ran, e.g. "ViT 128w/4d/4h/p4 32px"
    values: dict[str, float] = field(default_factory=dict)  # column key -> our number
    sources: dict[str, str] = field(default_factory=dict)  # column key -> results.json it came from
    mtimes: dict[str, float] = field(default_factory=dict)

    @property
    def method_label(self) -> str:
        if self.method == "mae":
            return "MAE"
        if self.method == "crossmae":
            return f"CrossMAE ({self.pred_ratio:g})" if self.pred_ratio is not None else "CrossMAE"
        return "?"

    @property
    def size_label(self) -> str:
        if self.size == "custom" and self.arch:
            return self.arch
        return f"ViT-{VIT_LETTERS[self.size]}" if self.size in SIZE_NAMES else (self.size or "?")


# ------------------------------------------------------------------ reading
def read_results(path: Path) -> tuple[dict | None, Problem | None]:
    try:
        data = parse_json(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: JSONDecodeError, NestingError
        return None, Problem(str(path), "corrupt", f"cannot parse: {e}")
    if not isinstance(data, dict):
        return None, Problem(str(path), "invalid", f"holds a {type(data).__name__}, not an object")
    missing = [k for k in ("task", "checkpoint", "metrics") if k not in data]
    if missing:
        return None, Problem(str(path), "invalid", f"lacks {missing}")
    if not isinstance(data["metrics"], dict):
        return None, Problem(str(path), "invalid", "'metrics' is not an object")
    return data, None


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Records of a JSON-lines log and the number of unreadable lines (e.g. a line cut by a crash)."""
    records, bad = [], 0
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return [], 1
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = parse_json(line)
        except ValueError:  # JSONDecodeError, NestingError
            bad += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad += 1
    return records, bad


def scan(roots: list[str | Path]) -> tuple[list[tuple[Path, dict]], list[Problem]]:
    """Every readable results.json under ``roots``, and problems: unreadable files, and run directories
    with training logs or checkpoints but no results.json (unfinished, or killed)."""
    found, problems, seen = [], [], set()
    for root in roots:
        root = Path(root).expanduser()
        if not root.exists():
            problems.append(Problem(str(root), "invalid", "does not exist"))
            continue
        for path in sorted(root.rglob("results.json")) if root.is_dir() else [root]:
            path = path.resolve()
            if path in seen:
                continue
            seen.add(path)
            data, problem = read_results(path)
            if problem:
                problems.append(problem)
                logger.warning("skipping %s", problem)
            else:
                found.append((path, data))
        markers = [m for name in LOG_FILES + ("checkpoint.pth",) for m in root.rglob(name)] if root.is_dir() else []
        for marker in sorted(markers):
            if not (marker.parent / "results.json").exists():
                run = marker.parent.resolve()
                if run in seen:
                    continue
                seen.add(run)
                problems.append(Problem(str(run), "incomplete", f"no results.json yet ({_progress(run)})"))
    return found, problems


def _progress(run: Path) -> str:
    records, _ = read_jsonl(run / "epoch_log.jsonl")
    epochs = [r["epoch"] for r in records if isinstance(r.get("epoch"), (int, float))]
    if epochs:
        return f"last logged epoch {max(epochs):g}"
    return "no epoch finished" if (run / "train_log.jsonl").exists() else "checkpoint only"


# ------------------------------------------------------------------ rows
ARCH_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")


def read_model_kwargs(run_dir: Path) -> tuple[dict, Problem | None]:
    """Model keyword arguments from the run's config.yaml (written by pretraining; {} if there is none),
    or a problem if the file is unreadable or cut short. config.yaml lists ``model`` first and
    ``epochs`` after it: a file without ``epochs`` was cut mid-write (its model section may hold a
    truncated number), so nothing in it is trusted."""
    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        return {}, None
    try:
        data = parse_yaml(cfg.read_text())
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:  # ValueError: NestingError
        return {}, Problem(str(cfg), "corrupt", f"cannot parse: {str(e).splitlines()[0]}")
    if not isinstance(data, dict) or "epochs" not in data:
        return {}, Problem(str(cfg), "corrupt", "cut short (no 'epochs' after the model section): run skipped")
    model = data.get("model")
    if not isinstance(model, dict):
        return {}, Problem(str(cfg), "corrupt", "'model' is not a mapping: run skipped")
    bad = [k for k in ARCH_KEYS if k in model and (isinstance(model[k], bool) or not isinstance(model[k], int))]
    if bad:
        return {}, Problem(str(cfg), "corrupt", f"model.{bad[0]}={model[bad[0]]!r} is not an integer: run skipped")
    return model, None


def _size(model_name: str, kwargs: dict) -> tuple[str | None, int]:
    """(size, resolution): the ViT size in the factory name, or "custom" when config.yaml overrides its
    architecture (then no published number applies)."""
    size = vit_size_in_name(model_name)
    if size is None:
        return None, int(kwargs.get("img_size", 224))
    standard = vit_encoder(size)
    custom = any(standard[k] != kwargs[k] for k in standard if k in kwargs)
    return ("custom" if custom else size), int(kwargs.get("img_size", 224))


def _custom_arch(model_name: str, kwargs: dict) -> str | None:
    """The honest architecture name of a factory + overrides (see crossmae.models.naming)."""
    from ...models.naming import describe_arch
    size = vit_size_in_name(model_name)
    if size is None:
        return None
    fields = ("embed_dim", "depth", "num_heads", "patch_size", "img_size", "mlp_ratio")
    arch = {"img_size": 224, "mlp_ratio": 4.0, **vit_encoder(size)}
    try:
        return describe_arch(**{**arch, **{k: kwargs[k] for k in fields if k in kwargs}})
    except (TypeError, ValueError):
        return None


def pretrain_row(path: Path, data: dict, kwargs: dict) -> Row:
    """``kwargs``: the run's model arguments (:func:`read_model_kwargs`)."""
    # "factory" is the registered name the run was built from; "model" may be its honest description
    model = str(data.get("factory") or kwargs.get("name") or data.get("model", ""))
    size, resolution = _size(model, kwargs)
    decoder = norm_name(data.get("decoder", ""))
    method = "crossmae" if decoder == "crossmae" or model.startswith("crossmae") else \
        "mae" if decoder == "mae" or model.startswith("mae") else None
    return Row(checkpoint=_resolve(data["checkpoint"], path.parent), label=path.parent.name, method=method,
               size=size, epochs=_int(data.get("epochs")), mask_ratio=_float(data.get("mask_ratio")),
               pred_ratio=_float(data.get("pred_ratio")) if method == "crossmae" else None,
               decoder_depth=_int(data.get("decoder_depth")), resolution=resolution,
               model=str(data.get("model_description") or model),
               arch=_custom_arch(model, kwargs) if size == "custom" else None)


def _resolve(checkpoint: str, base: Path) -> str:
    p = Path(str(checkpoint)).expanduser()
    return str((p if p.is_absolute() else base / p).resolve())


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _row_for(checkpoint: str, rows: dict[str, Row], problems: list[Problem], source: Path) -> Row:
    """The row of a downstream result's checkpoint: its pretraining run; a kept snapshot of a known run
    (checkpoint-XXXX.pth: same run, epochs from the name); or a new row for an unknown file."""
    if checkpoint in rows:
        return rows[checkpoint]
    ckpt = Path(checkpoint)
    parent = next((r for r in rows.values() if Path(r.checkpoint).parent == ckpt.parent), None)
    m = re.fullmatch(r"checkpoint-(\d+)\.pth", ckpt.name)
    if parent is not None:
        row = Row(**{**parent.__dict__, "checkpoint": checkpoint, "label": f"{parent.label}/{ckpt.name}",
                     "values": {}, "sources": {}, "mtimes": {}})
        row.epochs = int(m.group(1)) if m else None
    else:
        row = Row(checkpoint=checkpoint, label=f"{ckpt.parent.name}/{ckpt.name}")
        problems.append(Problem(str(source), "unmatched", f"no pretraining results.json for checkpoint {checkpoint}; "
                                                          f"its row has no model attributes"))
    rows[checkpoint] = row
    return row


def columns_for(data: dict) -> list[tuple[str, str]]:
    """(column key, metric name) pairs a downstream result fills: standard columns for known datasets,
    extra columns "<task>/<dataset> <metric>" for others."""
    task, dataset = str(data.get("task")), norm_name(data.get("dataset", ""))
    std = [(c.key, c.metric) for c in COLUMNS if c.task == task and dataset in c.datasets]
    if std:
        return std
    return [(f"{task}/{data.get('dataset', '?')} {metric}", metric) for metric in TASK_METRICS.get(task, ())]


def build_rows(found: list[tuple[Path, dict]], problems: list[Problem]) -> tuple[list[Row], list[str]]:
    """Rows (pretraining order, then unknown checkpoints) and the extra column keys seen."""
    rows: dict[str, Row] = {}
    for path, data in found:
        if data["task"] == "pretrain":
            kwargs, problem = read_model_kwargs(path.parent)
            if problem:
                problems.append(problem)
                logger.warning("skipping %s: %s %s", path.parent, Path(problem.path).name, problem.message)
                continue
            row = pretrain_row(path, data, kwargs)
            if row.checkpoint in rows:
                problems.append(Problem(str(path), "duplicate", f"a second pretraining result for {row.checkpoint}"))
            rows[row.checkpoint] = row
    extra: list[str] = []
    for path, data in found:
        task = data["task"]
        if task == "pretrain":
            continue
        if task not in DOWNSTREAM_TASKS:
            problems.append(Problem(str(path), "invalid", f"unknown task {task!r}"))
            continue
        row = _row_for(_resolve(data["checkpoint"], path.parent), rows, problems, path)
        cols = columns_for(data)
        for key, metric in cols:
            value = _float(data["metrics"].get(metric))
            if value is None or not math.isfinite(value):
                problems.append(Problem(str(path), "invalid", f"metric {metric!r} missing or not a number"))
                continue
            if key not in [c.key for c in COLUMNS] and key not in extra:
                extra.append(key)
            mtime = path.stat().st_mtime
            if key in row.values:
                older, newer = sorted([(row.mtimes[key], row.sources[key]), (mtime, str(path))])
                problems.append(Problem(newer[1], "duplicate", f"{key} also in {older[1]}; the newer file is used"))
                if mtime < row.mtimes[key]:
                    continue
            row.values[key], row.sources[key], row.mtimes[key] = value, str(path), mtime
    return list(rows.values()), extra
