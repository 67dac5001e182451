#!/usr/bin/env python
"""The paper's row for one pretraining checkpoint, from one command: every downstream evaluation of the
paper's tables with the recipes in configs/, then the results table beside the published numbers.

    python tools/paper_row.py --checkpoint ckpt.pth --roots configs/paper_row/roots_example.yaml \
        --output-dir output/row_b --dry-run            # print every command with its node and GPU counts
    python tools/paper_row.py --checkpoint ckpt.pth --roots roots.yaml --output-dir output/row_b   # locally
    python tools/paper_row.py ... --slurm --partition gpu                # one SLURM job per task (submitit)
    python tools/paper_row.py --preset toy --output-dir output/toy       # the CPU toy reproduction (README)

Each task runs as its own process (tools/launch.sh locally, tools/submit_slurm.py on SLURM) in
``<output-dir>/<task>``. Rerunning is idempotent: a task whose results.json holds its metrics is skipped,
an unfinished one resumes from its checkpoint.pth (every task auto-resumes), a failed one is retried and
reported with its log. ``--tasks`` selects a subset. The core package never imports det/, seg/ or
cls_transfer/: this script only builds their command lines.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

# evaluation -> (dataset key in the roots YAML, {size: recipe}, results.json metrics that mark it finished)
ROW_TASKS = {
    "finetune": ("imagenet", {s: f"configs/finetune/vit_{s}.yaml" for s in ("small", "base", "large", "huge")},
                 ("top1",)),
    "linprobe": ("imagenet", {s: f"configs/linprobe/vit_{s}.yaml" for s in ("small", "base", "large", "huge")},
                 ("top1",)),
    "det": ("coco", {"base": "configs/det/vitdet_b_100ep.yaml", "large": "configs/det/vitdet_l_100ep.yaml",
                     "huge": "configs/det/vitdet_h_75ep.yaml"}, ("bbox_AP", "segm_AP")),
    "seg": ("ade20k", {"base": "configs/seg/upernet_vit_base_ade20k.yaml",
                       "large": "configs/seg/upernet_vit_large_ade20k.yaml"}, ("mIoU",)),
    "inat2019": ("inat2019", {s: f"configs/cls_transfer/inat2019_vit_{s}.yaml" for s in ("base", "large")},
                 ("top1",)),
    "places365": ("places365", {s: f"configs/cls_transfer/places365_vit_{s}.yaml" for s in ("base", "large")},
                  ("top1",)),
}
# how each kind of run is started: the python arguments (local) and the tools/submit_slurm.py command
ENTRIES = {
    "pretrain": (["-m", "crossmae.cli", "pretrain"], ["pretrain"]),
    "finetune": (["-m", "crossmae.cli", "finetune"], ["finetune"]),
    "linprobe": (["-m", "crossmae.cli", "linprobe"], ["linprobe"]),
    "det": (["tools/train_vitdet.py"], ["det"]),
    "seg": (["tools/train_seg.py"], ["seg"]),
    "cls_transfer": (["-m", "cls_transfer"], ["cls_transfer"]),
}
DATA_KEY = {"det": "data.root"}  # the override naming the dataset root (data.path elsewhere)
WIDTH_TO_SIZE = {384: "small", 768: "base", 1024: "large", 1280: "huge"}
STATUS_FILE = "paper_row_status.json"  # written by this script beside each run: exit code and log


@dataclass
class Task:
    """One run: a name, the program that runs it, its config + overrides, and where it writes."""
    name: str
    entry: str  # a key of ENTRIES
    config: str
    overrides: list[str]
    output_dir: Path
    metrics: tuple[str, ...]
    nodes: int = 1
    gpus_per_node: int = 8
    group: dict = field(default_factory=dict)  # toy preset: what the run is (init, task, seed)

    def _args(self, launcher: int) -> list[str]:
        return ENTRIES[self.entry][launcher] + ["--config", self.config, *self.overrides,
                                                f"output_dir={self.output_dir}"]

    def python_args(self) -> list[str]:
        return self._args(0)

    def slurm_args(self) -> list[str]:
        return self._args(1)

    @property
    def log(self) -> Path:
        return self.output_dir / "paper_row.log"


def checkpoint_size(path: str | Path) -> str:
    """The ViT size of a pretraining checkpoint (ours or an official release), from its patch projection."""
    from crossmae.engine.checkpoint import load_checkpoint, model_state
    state = model_state(load_checkpoint(path), path)
    weight = state.get("patch_embed.proj.weight")
    if weight is None:
        raise ValueError(f"{path}: no patch_embed.proj.weight: not a ViT pretraining checkpoint")
    width = int(weight.shape[0])
    if width not in WIDTH_TO_SIZE:
        raise ValueError(f"{path}: encoder width {width} is none of the paper's sizes "
                         f"({', '.join(f'{w} {s}' for w, s in WIDTH_TO_SIZE.items())}); give --size")
    return WIDTH_TO_SIZE[width]


def load_roots(path: str | Path) -> dict[str, str]:
    import yaml
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset roots file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping dataset -> root, e.g. 'imagenet: /data/imagenet'")
    known = {key for key, _, _ in ROW_TASKS.values()}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown dataset keys {unknown}; known: {sorted(known)}")
    return {k: str(v) for k, v in data.items() if v}


def row_tasks(checkpoint: str, size: str, roots: dict[str, str], out: Path, names: list[str] | None = None,
              nodes: int = 1, gpus_per_node: int = 8) -> tuple[list[Task], list[str]]:
    """The paper's evaluations of a checkpoint of ``size``, and why any of the asked-for ones is left out.

    Every recipe is written for one 8-GPU node (its global batch is reached by gradient accumulation),
    so more nodes or fewer GPUs change only the accumulation, not the result."""
    names = list(names or ROW_TASKS)
    bad = [n for n in names if n not in ROW_TASKS]
    if bad:
        raise ValueError(f"unknown tasks {bad}; known: {', '.join(ROW_TASKS)}")
    ckpt = str(Path(checkpoint).expanduser().resolve())
    tasks, skipped = [], []
    for name in names:
        dataset, recipes, metrics = ROW_TASKS[name]
        if size not in recipes:
            skipped.append(f"{name}: no {size} recipe in configs/ (the paper reports {', '.join(recipes)})")
            continue
        if dataset not in roots:
            skipped.append(f"{name}: no '{dataset}' root in the dataset roots file")
            continue
        entry = name if name in ("finetune", "linprobe", "det", "seg") else "cls_transfer"
        overrides = [f"pretrained={ckpt}", f"{DATA_KEY.get(entry, 'data.path')}={roots[dataset]}"]
        tasks.append(Task(name, entry, str(ROOT / recipes[size]), overrides, out / name, metrics, nodes,
                          gpus_per_node))
    return tasks, skipped


# ---------------------------------------------------------------------------------------------- state

def task_state(task: Task) -> str:
    """done (results.json holds every metric), failed (the last run exited non-zero), partial (a
    checkpoint to resume), or todo."""
    results = task.output_dir / "results.json"
    if results.is_file():
        try:
            metrics = json.loads(results.read_text()).get("metrics", {})
        except (ValueError, AttributeError):
            metrics = {}
        if isinstance(metrics, dict) and all(isinstance(metrics.get(m), (int, float)) and math.isfinite(metrics[m])
                                             for m in task.metrics):
            return "done"
    status = task.output_dir / STATUS_FILE
    if status.is_file():
        try:
            if json.loads(status.read_text()).get("returncode", 0) != 0:
                return "failed"
        except ValueError:
            pass
    return "partial" if (task.output_dir / "checkpoint.pth").is_file() else "todo"


def write_status(task: Task, returncode: int, seconds: float) -> None:
    from crossmae.engine.logging import write_json
    write_json(task.output_dir / STATUS_FILE, {"returncode": returncode, "log": str(task.log),
                                               "seconds": round(seconds, 1)})


# ---------------------------------------------------------------------------------------------- running

def local_command(task: Task) -> list[str]:
    return ["bash", str(ROOT / "tools" / "launch.sh"), *task.python_args()]


def slurm_command(task: Task, partition: str | None, timeout_min: int) -> list[str]:
    cmd = [sys.executable, str(ROOT / "tools" / "submit_slurm.py"), "--nodes", str(task.nodes),
           "--gpus-per-node", str(task.gpus_per_node), "--timeout", str(timeout_min),
           "--job-dir", str(task.output_dir / "slurm" / "%j"), "--name", f"row-{task.name}"]
    if partition:
        cmd += ["--partition", partition]
    return cmd + ["--", *task.slurm_args()]


def run_local(task: Task, threads: int | None = None) -> int:
    """Run one task to completion, its output in ``task.log``; returns the exit code."""
    task.output_dir.mkdir(parents=True, exist_ok=True)
    # launch.sh uses every local GPU (or one CPU process) unless NGPUS says otherwise; the toy runs ask for one
    # PYTHON: this interpreter, so a venv's python called without activating the venv runs the tasks too
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHON=sys.executable)
    if task.gpus_per_node == 1:
        env["NGPUS"] = "1"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.time()
    with open(task.log, "a") as log:
        rc = subprocess.call(local_command(task), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    write_status(task, rc, time.time() - start)
    return rc


def run_tasks(tasks: list[Task], mode: str, slurm: bool = False, partition: str | None = None,
              timeout_min: int = 4320, threads: int | None = None, say=print, jobs: int = 1) -> dict[str, list[Task]]:
    """Run every task not yet done (mode local; ``jobs`` at a time), submit it (slurm) or print its command
    (dry-run, the SLURM submission if ``slurm``); returns the tasks grouped by state."""
    by_state: dict[str, list[Task]] = {"done": [], "failed": [], "submitted": [], "pending": []}
    if mode == "local" and jobs > 1:  # independent CPU runs side by side (tiny models use few threads well)
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(jobs) as pool:
            parts = list(pool.map(lambda t: run_tasks([t], mode, threads=threads, say=say), tasks))
        for part in parts:
            for state, ts in part.items():
                by_state[state] += [t for t in ts if t not in by_state[state]]
        return by_state
    for task in tasks:
        state = task_state(task)
        if state == "done":
            say(f"[done]    {task.name}: {task.output_dir / 'results.json'}")
            by_state["done"].append(task)
            continue
        note = {"partial": " (resumes from checkpoint.pth)", "failed": " (failed before: retried)"}.get(state, "")
        if mode == "dry-run":
            cmd = slurm_command(task, partition, timeout_min) if slurm else local_command(task)
            where = "" if slurm else " (locally: every local GPU, or NGPUS)" if task.gpus_per_node > 1 else ""
            say(f"[{state}] {task.name}: {task.nodes} node(s) x {task.gpus_per_node} GPU(s){where}{note}\n  "
                + " ".join(cmd))
            by_state["pending"].append(task)
        elif mode == "slurm":
            say(f"[submit]  {task.name}{note}")
            rc = subprocess.call(slurm_command(task, partition, timeout_min), cwd=ROOT)
            by_state["submitted" if rc == 0 else "failed"].append(task)
        else:
            say(f"[run]     {task.name}{note}: log {task.log}")
            start = time.time()
            rc = run_local(task, threads)
            ok = rc == 0 and task_state(task) == "done"
            if rc == 0 and not ok:  # exited cleanly without the metrics: record it as a failure
                write_status(task, 1, time.time() - start)
            say(f"          {'finished' if ok else f'FAILED (exit {rc})'} in {time.time() - start:.0f} s")
            by_state["done" if ok else "failed"].append(task)
    for task in by_state["failed"]:
        say(f"FAILED: {task.name}: see {task.log}")
    return by_state


# ---------------------------------------------------------------------------------------------- toy preset

TOY_INITS = {  # row -> pretraining overrides (None: random init)
    "CrossMAE γ=0.25": ["model.name=crossmae_vit_small_patch16", "model.pred_ratio=0.25"],
    "CrossMAE γ=0.75": ["model.name=crossmae_vit_small_patch16", "model.pred_ratio=0.75"],
    "MAE": ["model.name=mae_vit_small_patch16"],
    "random init": None,
}
TOY_TASKS = {  # downstream run -> (entry, config, data override key, dataset folder, results.json metrics)
    # in run order within a seed: the dense tasks (what the preset is for) before the classification ones
    "det": ("det", "configs/paper_row/toy_det.yaml", "data.root", "shapes", ("bbox_AP", "segm_AP")),
    "seg": ("seg", "configs/paper_row/toy_seg.yaml", "data.path", "scenes", ("mIoU",)),
    "linprobe": ("linprobe", "configs/paper_row/toy_linprobe.yaml", "data.path", "photos", ("top1",)),
    "finetune": ("finetune", "configs/paper_row/toy_finetune.yaml", "data.path", "photos", ("top1",)),
}
TOY_COLUMNS = {  # table column -> (run, metric); knn: the frozen encoder, scored in this process
    "linear probe top-1": ("linprobe", "top1"), "fine-tune top-1": ("finetune", "top1"),
    "det box AP": ("det", "bbox_AP"), "det mask AP": ("det", "segm_AP"), "seg mIoU": ("seg", "mIoU"),
    "kNN top-1": ("knn", "knn_top1"),
}
TOY_SIZES = {"toy": dict(seeds=3, pretrain_epochs=None, downstream={}),  # None/{}: the configs' values
             "toy-smoke": dict(seeds=1, pretrain_epochs=1,
                               downstream={"linprobe": ["epochs=1"], "finetune": ["epochs=1"],
                                           "det": ["epochs=1", "eval_every=1", "save_every=1"],
                                           "seg": ["max_iters=4", "iters_per_epoch=2", "eval_every=2", "optim.warmup_iters=1"]})}
# labelled train / val images per task, unlabelled pool images per task (>= 10x the labelled ones)
TOY_DATA = {"toy": dict(photos=48, shapes=(64, 250), scenes=(64, 200), pool=(1500, 1500)),
            "toy-smoke": dict(photos=8, shapes=(16, 8), scenes=(12, 6), pool=(160, 120))}


def _slug(label: str) -> str:
    return label.lower().replace("crossmae γ=", "crossmae_g").replace(".", "").replace(" ", "_")


def make_toy_data(out: Path, preset: str) -> Path:
    """The three labelled toy datasets (few labels: a small train set, a large val set) and an unlabelled
    pretraining ImageFolder ``<out>/data/pretrain/train/<set>/``: the photo crops' training images (symlinks)
    and pools of detection and segmentation images from the same generators and photographs, drawn with
    other seeds than the labelled sets and >= 10x larger. Idempotent."""
    from crossmae.data.demo import make_demo_imagefolder
    from det import synthetic as det_synth  # only the preset touches the downstream packages' data makers
    from seg import synthetic as seg_synth
    data = out / "data"
    sizes = TOY_DATA[preset]
    make_demo_imagefolder(data / "photos", crops_per_photo=sizes["photos"], size=64)
    if not (data / "shapes" / ".complete").exists():
        det_synth.make_split(data / "shapes", "train2017", sizes["shapes"][0], 64, seed=0, empty_every=25)
        det_synth.make_split(data / "shapes", "val2017", sizes["shapes"][1], 64, seed=1)
        (data / "shapes" / ".complete").touch()
    seg_synth.make_synthetic_ade20k(data / "scenes", *sizes["scenes"], size_range=(64, 96), seed=0)
    pre = data / "pretrain" / "train"
    if not (pre.parent / ".complete").exists():
        photos = sorted((data / "photos" / "train").rglob("*.png"))
        (pre / "photos").mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(photos):
            link = pre / "photos" / f"{i:05d}{f.suffix}"
            if not link.exists():
                link.symlink_to(f.resolve())
        det_synth.make_unlabelled(pre / "shapes", sizes["pool"][0], 64, seed=100)
        seg_synth.make_unlabelled(pre / "scenes", sizes["pool"][1], (64, 96), seed=100)
        (pre.parent / ".complete").touch()
    return data


def toy_tasks(out: Path, preset: str) -> tuple[list[Task], list[Task]]:
    """(pretraining runs, downstream runs) of a toy preset; identical downstream recipe for every init.
    The kNN runs (entry "knn") are scored in this process by ``run_knn``, the others are launched."""
    size = TOY_SIZES[preset]
    data = out / "data"
    pre_cfg = str(ROOT / "configs/paper_row/toy_pretrain.yaml")
    pretrain, downstream = [], []
    for label, init in TOY_INITS.items():
        if init is None:
            continue
        ov = [*init, f"data.path={data / 'pretrain'}"]
        if size["pretrain_epochs"]:
            ov.append(f"epochs={size['pretrain_epochs']}")
        pretrain.append(Task(f"pretrain {label}", "pretrain", pre_cfg, ov, out / "pretrain" / _slug(label),
                             ("fixed_mask_loss",), 1, 1, {"init": label}))
    ckpts = {t.group["init"]: t.output_dir / "checkpoint.pth" for t in pretrain}
    any_ckpt = next(iter(ckpts.values()))  # the random-init rows borrow this architecture, not its weights
    # seed-major order, random init (the baseline of every row) first: a run stopped part-way has the
    # comparison for every row at the same number of seeds
    inits = sorted(TOY_INITS.items(), key=lambda item: item[1] is not None)
    for seed in range(size["seeds"]):
        for run, (entry, cfg, key, folder, metrics) in TOY_TASKS.items():
            for label, init in inits:
                ov = [f"{key}={data / folder}", f"seed={seed}", *size["downstream"].get(entry, [])]
                if init is not None:
                    ov.append(f"pretrained={ckpts[label]}")
                elif entry in ("linprobe", "finetune"):
                    ov += [f"pretrained={any_ckpt}", "random_init=true"]
                downstream.append(Task(f"{entry} {label} seed {seed}", entry, str(ROOT / cfg), ov,
                                       out / entry / f"{_slug(label)}_s{seed}", metrics, 1, 1,
                                       {"init": label, "run": run, "seed": seed}))
        for label, init in TOY_INITS.items():
            ov = [f"checkpoint={ckpts.get(label, any_ckpt)}", f"data={data / 'photos'}", f"seed={seed}",
                  f"random_init={init is None}"]
            downstream.append(Task(f"knn {label} seed {seed}", "knn", "", ov, out / "knn" / f"{_slug(label)}_s{seed}",
                                   ("knn_top1",), 1, 1, {"init": label, "run": "knn", "seed": seed}))
    return pretrain, downstream


def run_knn(tasks: list[Task], mode: str, threads: int | None, say=print) -> dict[str, list[Task]]:
    """kNN top-1 of each task's frozen encoder on the photo classes (crossmae/knn.py: all train crops as memory,
    all val crops as queries), in this process; a random-init encoder is drawn with ``torch.manual_seed(seed)``.
    A pretrained encoder's score does not depend on the seed."""
    import torch
    from crossmae.engine.logging import write_json
    from crossmae.knn import run as knn
    by_state: dict[str, list[Task]] = {"done": [], "failed": [], "pending": []}
    if threads:
        torch.set_num_threads(threads)
    scored: dict[tuple, dict] = {}  # a pretrained encoder is scored once, whatever the seed
    for task in tasks:
        if task_state(task) == "done":
            by_state["done"].append(task)
            continue
        args = dict(o.split("=", 1) for o in task.overrides)
        if mode == "dry-run":
            say(f"[todo]    {task.name}: in this process, crossmae.knn.run({args})")
            by_state["pending"].append(task)
            continue
        random_init = args["random_init"] == "True"
        key = (args["checkpoint"], args["data"], args["seed"] if random_init else None)
        if key not in scored:
            torch.manual_seed(int(args["seed"]))
            try:
                scored[key] = knn(args["checkpoint"], args["data"], train_images=0, val_images=0, num_workers=0,
                                  random_init=random_init, device="cpu")
            except Exception as e:  # noqa: BLE001 - one failed score must not lose the others; reported below
                say(f"FAILED: {task.name}: {e}")
                by_state["failed"].append(task)
                continue
        metrics = scored[key]
        write_json(task.output_dir / "results.json", {"task": "knn", "metrics": metrics})
        by_state["done"].append(task)
    return by_state


def decoder_gflops(pretrain_task: Task) -> float:
    """Training FLOPs of the decoder per image (forward + backward), from the pretraining config."""
    from crossmae.analysis.flops import meta_model_flops
    from crossmae.config import PretrainConfig, load_config
    cfg = load_config(PretrainConfig, pretrain_task.config, pretrain_task.overrides)
    kwargs = dict(cfg.model)
    flops, _ = meta_model_flops(kwargs.pop("name"), **kwargs)
    return flops["decoder"]["total"] / 1e9


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


def toy_values(downstream: list[Task], label: str, column: str) -> list[float]:
    """One column's finished values for one row, one per seed."""
    run, metric = TOY_COLUMNS[column]
    return [float(json.loads((t.output_dir / "results.json").read_text())["metrics"][metric]) for t in downstream
            if t.group["init"] == label and t.group["run"] == run and task_state(t) == "done"]


def toy_table(pretrain: list[Task], downstream: list[Task]) -> str:
    """Markdown: one row per initialisation, mean ± std over seeds per column, decoder FLOPs."""
    flops = {t.group["init"]: decoder_gflops(t) for t in pretrain}
    columns = list(TOY_COLUMNS)
    seeds = max((t.group["seed"] for t in downstream), default=0) + 1
    lines = [f"| init | decoder GFLOPs / image (train) | {' | '.join(columns)} |",
             "|---" * (len(columns) + 2) + "|"]
    for label in TOY_INITS:
        cells = []
        for column in columns:
            vals = toy_values(downstream, label, column)
            cells.append(_mean_std(vals) + ("" if len(vals) == seeds else f" ({len(vals)}/{seeds} seeds)"))
        gf = f"{flops[label]:.4f}" if label in flops else "–"
        lines.append(f"| {label} | {gf} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def toy_curves(downstream: list[Task]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{"det box AP" / "det mask AP" / "seg mIoU": {init: [(epoch, metric) per evaluation]}} over every
    finished seed's epoch_log.jsonl (the seeds are averaged per epoch)."""
    wanted = {"det box AP": ("det", "bbox_AP"), "det mask AP": ("det", "segm_AP"), "seg mIoU": ("seg", "mIoU")}
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for column, (run, metric) in wanted.items():
        for label in TOY_INITS:
            points: dict[int, list[float]] = {}
            for t in downstream:
                log = t.output_dir / "epoch_log.jsonl"
                if t.group["init"] != label or t.group["run"] != run or task_state(t) != "done" or not log.is_file():
                    continue
                for line in log.read_text().splitlines():
                    rec = json.loads(line)
                    if metric in rec.get("eval", {}):
                        points.setdefault(int(rec["epoch"]), []).append(float(rec["eval"][metric]))
            if points:
                curves.setdefault(column, {})[label] = [(e, statistics.mean(v)) for e, v in sorted(points.items())]
    return curves


def plot_toy_curves(curves: dict, path: Path) -> None:
    """Validation metric against training epoch, one panel per dense column, one line per init."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, max(len(curves), 1), figsize=(4.2 * max(len(curves), 1), 3.4), squeeze=False)
    for ax, (column, by_init) in zip(axes[0], curves.items()):
        for label, points in by_init.items():
            ax.plot(*zip(*points), marker="o", label=label, linestyle="--" if label == "random init" else "-")
        ax.set_title(column + " (val, mean over seeds)")
        ax.set_xlabel("epoch (seg: iterations / iters_per_epoch)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def colour_baselines(data: Path) -> str:
    """The colour-only classifier's score on the detection instances and segmentation regions (det/seg synthetic)."""
    from det.synthetic import colour_baseline as det_colour
    from seg.synthetic import colour_baseline as seg_colour
    d, s = det_colour(data / "shapes"), seg_colour(data / "scenes")
    return (f"colour-histogram classifier (logistic regression on each instance's / region's RGB histogram): "
            f"det {d['accuracy']:.1f}% on {d['instances']} val instances (most frequent class {d['chance']:.1f}%), "
            f"seg {s['accuracy']:.1f}% on {s['regions']} val regions (most frequent class {s['chance']:.1f}%)")


def run_toy(out: Path, preset: str, mode: str, threads: int | None, say=print, jobs: int = 1) -> int:
    start = time.time()
    if mode != "dry-run":
        make_toy_data(out, preset)
    pretrain, downstream = toy_tasks(out, preset)
    # the first seed's random-init detection and segmentation need no pretraining: they share its job slots
    early = [t for t in downstream if t.group["seed"] == 0 and t.entry in ("det", "seg")
             and not any(o.startswith("pretrained=") for o in t.overrides)]
    states = run_tasks(pretrain + early, mode, threads=threads, say=say, jobs=jobs)
    if any(t in pretrain for t in states["failed"]):
        return 1
    knn_states = run_knn([t for t in downstream if t.entry == "knn"], mode, threads, say)  # seconds: first
    rest = [t for t in downstream if t.entry != "knn" and not (mode == "dry-run" and t in early)]  # listed once
    states = run_tasks(rest, mode, threads=threads, say=say, jobs=jobs)
    if mode == "dry-run":
        return 0
    table = toy_table(pretrain, downstream)
    curves = toy_curves(downstream)
    if curves:
        plot_toy_curves(curves, out / "toy_curves.png")
    wall = time.time() - start
    text = (f"# {preset} preset\n\n{table}\nmean ± std over seeds; wall time of this invocation {wall / 60:.1f} min\n"
            f"command: python tools/paper_row.py --preset {preset} --output-dir {out}\n\n"
            f"{colour_baselines(out / 'data')}\n\nlearning curves (val metric per evaluation; seeds averaged): "
            f"{out / 'toy_curves.png'}\n{json.dumps(curves)}\n")
    (out / "toy_results.md").write_text(text)
    say(text)
    return 1 if states["failed"] or knn_states["failed"] else 0


# ---------------------------------------------------------------------------------------------- entry

def collect_table(out: Path, say=print) -> int:
    """tools/collect.py over the row's output: our numbers beside the published ones."""
    cmd = [sys.executable, str(ROOT / "tools" / "collect.py"), str(out), "--output-dir", str(out / "results"),
           "--overwrite"]  # the row's own table, remade on every rerun
    say(" ".join(cmd))
    return subprocess.call(cmd, cwd=ROOT)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="pretraining checkpoint (ours or an official CrossMAE/MAE release file)")
    p.add_argument("--roots", help="YAML of dataset roots (configs/paper_row/roots_example.yaml)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--overwrite", action="store_true", help="use a non-empty --output-dir that this script did not "
                                                            "make (its runs and tables go in; other files are kept)")
    p.add_argument("--size", choices=sorted(set(WIDTH_TO_SIZE.values())), help="default: read from the checkpoint")
    p.add_argument("--tasks", help=f"comma-separated subset of {','.join(ROW_TASKS)}")
    p.add_argument("--preset", choices=sorted(TOY_SIZES), help="the CPU toy reproduction instead of a checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print every command with node and GPU counts")
    p.add_argument("--slurm", action="store_true", help="one SLURM job per task (tools/submit_slurm.py)")
    p.add_argument("--partition", default=None, help="SLURM partition")
    p.add_argument("--timeout", type=int, default=4320, help="SLURM time limit per job, minutes (requeued after)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="OMP threads per local run (CPU)")
    p.add_argument("--jobs", type=int, default=1, help="toy preset: downstream runs side by side (CPU)")
    return p.parse_args(argv)


def claim_output_dir(out: Path, mode: str, overwrite: bool) -> None:
    """Never into a directory of the user's own without --overwrite; a rerun into this script's tree goes on."""
    if mode != "dry-run":
        from crossmae.userfiles import claim_output_tree
        claim_output_tree(out, ".paper_row", overwrite, "its runs and tables (toy_results.md, results/)")


def run(args) -> int:
    out = Path(args.output_dir).expanduser().resolve()
    mode = "dry-run" if args.dry_run else "slurm" if args.slurm else "local"
    if args.preset:
        if args.slurm:
            raise ValueError("--preset runs locally (or --dry-run), not on SLURM")
        claim_output_dir(out, mode, args.overwrite)
        return run_toy(out, args.preset, mode, args.threads, jobs=args.jobs)
    if not args.checkpoint or not args.roots:
        raise ValueError("give --checkpoint and --roots (or --preset toy)")
    if not Path(args.checkpoint).expanduser().is_file():
        raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")
    roots = load_roots(args.roots)
    size = args.size or checkpoint_size(args.checkpoint)
    names = [n.strip() for n in args.tasks.split(",") if n.strip()] if args.tasks else None
    tasks, skipped = row_tasks(args.checkpoint, size, roots, out, names, args.nodes, args.gpus_per_node)
    claim_output_dir(out, mode, args.overwrite)
    print(f"ViT-{size} checkpoint {args.checkpoint}: {len(tasks)} tasks in {out}")
    for s in skipped:
        print(f"[skip]    {s}")
    states = run_tasks(tasks, mode, slurm=args.slurm, partition=args.partition, timeout_min=args.timeout,
                       threads=args.threads)
    if mode == "local" and states["done"]:
        collect_table(out)
    elif mode == "slurm":
        print(f"when the jobs are done: rerun this command (finished tasks are skipped) or "
              f"python tools/collect.py {out} --output-dir {out / 'results'} --overwrite")
    return 1 if states["failed"] else 0


def main(argv=None) -> int:
    from crossmae.cli import report_errors
    rc = 0

    def _run():
        nonlocal rc
        rc = run(parse(argv))
    err = report_errors("paper_row.py", _run)
    return err or rc


if __name__ == "__main__":
    sys.exit(main())
