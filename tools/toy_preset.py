"""The CPU toy reproduction of the paper's comparison (``python tools/paper_row.py --preset toy``; README):
CrossMAE γ=0.25, CrossMAE γ=0.75 and MAE on a toy ViT, CrossMAE-Hiera γ=0.25 and MAE-Hiera on a toy Hiera,
pretrained on toy data, then every init (random init of each backbone too) through the same detection,
segmentation, linear-probe, fine-tuning and kNN runs over several seeds; a table of mean ± std, decoder FLOPs,
learning curves and a colour-only baseline."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from tools.runs import ROOT, Task, run_tasks, task_state

TOY_INITS = {  # row -> (backbone family, pretraining overrides; None: random init)
    "CrossMAE γ=0.25": ("vit", ["model.name=crossmae_vit_small_patch16", "model.pred_ratio=0.25"]),
    "CrossMAE γ=0.75": ("vit", ["model.name=crossmae_vit_small_patch16", "model.pred_ratio=0.75"]),
    "MAE": ("vit", ["model.name=mae_vit_small_patch16"]),
    "random init": ("vit", None),
    "CrossMAE-Hiera γ=0.25": ("hiera", ["model.name=crossmae_hiera_tiny_224", "model.pred_ratio=0.25"]),
    "MAE-Hiera": ("hiera", ["model.name=mae_hiera_tiny_224"]),
    "random init Hiera": ("hiera", None),
}
FAMILIES = ("vit", "hiera")
TOY_PRETRAIN = {"vit": "configs/paper_row/toy_pretrain.yaml", "hiera": "configs/paper_row/toy_pretrain_hiera.yaml"}
TOY_TASKS = {  # downstream run -> (entry, config per family, data override key, dataset folder, results.json metrics)
    # in run order within a seed: the dense tasks (what the preset is for) before the classification ones
    "det": ("det", {"vit": "configs/paper_row/toy_det.yaml", "hiera": "configs/paper_row/toy_det_hiera.yaml"},
            "data.root", "shapes", ("bbox_AP", "segm_AP")),
    "seg": ("seg", {"vit": "configs/paper_row/toy_seg.yaml", "hiera": "configs/paper_row/toy_seg_hiera.yaml"},
            "data.path", "scenes", ("mIoU",)),
    "linprobe": ("linprobe", dict.fromkeys(FAMILIES, "configs/paper_row/toy_linprobe.yaml"), "data.path", "photos",
                 ("top1",)),
    "finetune": ("finetune", dict.fromkeys(FAMILIES, "configs/paper_row/toy_finetune.yaml"), "data.path", "photos",
                 ("top1",)),
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
    return label.lower().replace(" γ=", "_g").replace(".", "").replace(" ", "_").replace("-", "_")


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


def toy_rows(families: tuple[str, ...] = FAMILIES) -> dict[str, tuple[str, list[str] | None]]:
    """The rows of TOY_INITS whose backbone family is in ``families``."""
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        raise ValueError(f"--backbones takes a comma-separated subset of {','.join(FAMILIES)}, got {','.join(families)}")
    return {label: row for label, row in TOY_INITS.items() if row[0] in families}


def toy_tasks(out: Path, preset: str, families: tuple[str, ...] = FAMILIES) -> tuple[list[Task], list[Task]]:
    """(pretraining runs, downstream runs) of a toy preset; identical downstream recipe for every init of a
    backbone family. The kNN runs (entry "knn") are scored in this process by ``run_knn``, the others are launched."""
    size = TOY_SIZES[preset]
    data = out / "data"
    rows = toy_rows(families)
    pretrain, downstream = [], []
    for label, (family, init) in rows.items():
        if init is None:
            continue
        ov = [*init, f"data.path={data / 'pretrain'}"]
        if size["pretrain_epochs"]:
            ov.append(f"epochs={size['pretrain_epochs']}")
        pretrain.append(Task(f"pretrain {label}", "pretrain", str(ROOT / TOY_PRETRAIN[family]), ov,
                             out / "pretrain" / _slug(label), ("fixed_mask_loss",), 1, 1, {"init": label}))
    ckpts = {t.group["init"]: t.output_dir / "checkpoint.pth" for t in pretrain}
    # the random-init rows of the classification and kNN runs borrow an architecture of their family, not its weights
    arch_ckpt = {}
    for label, (family, init) in rows.items():
        if init is not None:
            arch_ckpt.setdefault(family, ckpts[label])
    # seed-major order, random init (the baseline of every row) first: a run stopped part-way has the
    # comparison for every row at the same number of seeds
    inits = sorted(rows.items(), key=lambda item: item[1][1] is not None)
    for seed in range(size["seeds"]):
        for run, (entry, cfgs, key, folder, metrics) in TOY_TASKS.items():
            for label, (family, init) in inits:
                ov = [f"{key}={data / folder}", f"seed={seed}", *size["downstream"].get(entry, [])]
                if init is not None:
                    ov.append(f"pretrained={ckpts[label]}")
                elif entry in ("linprobe", "finetune"):
                    ov += [f"pretrained={arch_ckpt[family]}", "random_init=true"]
                downstream.append(Task(f"{entry} {label} seed {seed}", entry, str(ROOT / cfgs[family]), ov,
                                       out / entry / f"{_slug(label)}_s{seed}", metrics, 1, 1,
                                       {"init": label, "run": run, "seed": seed}))
        for label, (family, init) in rows.items():
            ov = [f"checkpoint={ckpts.get(label, arch_ckpt[family])}", f"data={data / 'photos'}", f"seed={seed}",
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


def toy_step_times(pretrain: list[Task], repeats: int = 5, seed: int = 0) -> dict[str, list[float]]:
    """{row: process CPU seconds of one pretraining step per repeat}: forward, backward and AdamW step at the
    config's batch size on random images, every row once per round, rounds interleaved with a rotating start so
    that each row meets the same machine conditions; CPU time, not wall time, because the cores are shared."""
    import torch
    from crossmae.config import PretrainConfig, load_config
    from crossmae.models import build_model
    runners = []
    for task in pretrain:
        cfg = load_config(PretrainConfig, task.config, task.overrides)
        torch.manual_seed(seed)
        kwargs = dict(cfg.model)
        model = build_model(kwargs.pop("name"), **kwargs).train()
        size = kwargs.get("img_size", 224)
        imgs = torch.randn(cfg.batch_size, 3, size, size, generator=torch.Generator().manual_seed(seed))
        runners.append((task.group["init"], model, torch.optim.AdamW(model.parameters(), lr=1e-4), imgs))
    times: dict[str, list[float]] = {label: [] for label, *_ in runners}
    for rep in range(repeats + 1):  # the first round is untimed warm-up
        shift = rep % len(runners)
        for label, model, optimizer, imgs in runners[shift:] + runners[:shift]:
            start = time.process_time()
            model(imgs).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if rep:
                times[label].append(time.process_time() - start)
    return times


def step_time_cells(times: dict[str, list[float]], reference: str = "MAE") -> dict[str, str]:
    """'412 ms (0.81x MAE, 0.78-0.84)': the median step and its ratio to the reference row's, with the range of
    the per-round ratios (one round = every row timed once, side by side)."""
    cells = {}
    for label, ts in times.items():
        ratios = [t / r for t, r in zip(ts, times[reference])] if reference in times else []
        cell = f"{statistics.median(ts) * 1e3:.0f} ms"
        if ratios and label != reference:
            cell += f" ({statistics.median(ratios):.2f}x {reference}, {min(ratios):.2f}-{max(ratios):.2f})"
        cells[label] = cell
    return cells


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


def toy_table(pretrain: list[Task], downstream: list[Task], step_times: dict[str, str] | None = None) -> str:
    """Markdown: one row per initialisation, mean ± std over seeds per column, decoder FLOPs and (given
    ``step_time_cells``) the pretraining step's CPU time."""
    flops = {t.group["init"]: decoder_gflops(t) for t in pretrain}
    step_times = step_times or {}
    columns = list(TOY_COLUMNS)
    seeds = max((t.group["seed"] for t in downstream), default=0) + 1
    labels = dict.fromkeys(t.group["init"] for t in downstream)  # the rows of the tasks given, in TOY_INITS order
    lines = [f"| init | decoder GFLOPs / image (train) | pretraining step (CPU time) | {' | '.join(columns)} |",
             "|---" * (len(columns) + 3) + "|"]
    for label in (label for label in TOY_INITS if label in labels):
        cells = []
        for column in columns:
            vals = toy_values(downstream, label, column)
            cells.append(_mean_std(vals) + ("" if len(vals) == seeds else f" ({len(vals)}/{seeds} seeds)"))
        gf = f"{flops[label]:.4f}" if label in flops else "–"
        lines.append(f"| {label} | {gf} | {step_times.get(label, '–')} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def toy_curves(downstream: list[Task]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{"det box AP" / "det mask AP" / "seg mIoU": {init: [(epoch, metric) per evaluation]}} over every
    finished seed's epoch_log.jsonl (the seeds are averaged per epoch)."""
    wanted = {"det box AP": ("det", "bbox_AP"), "det mask AP": ("det", "segm_AP"), "seg mIoU": ("seg", "mIoU")}
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for column, (run, metric) in wanted.items():
        for label in dict.fromkeys(t.group["init"] for t in downstream):
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
            ax.plot(*zip(*points), marker="o", label=label, linestyle="--" if label.startswith("random init") else "-")
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


def run_toy(out: Path, preset: str, mode: str, threads: int | None, say=print, jobs: int = 1,
            families: tuple[str, ...] = FAMILIES) -> int:
    start = time.time()
    if mode != "dry-run":
        make_toy_data(out, preset)
    pretrain, downstream = toy_tasks(out, preset, families)
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
    table = toy_table(pretrain, downstream, step_time_cells(toy_step_times(pretrain)))
    curves = toy_curves(downstream)
    if curves:
        plot_toy_curves(curves, out / "toy_curves.png")
    wall = time.time() - start
    text = (f"# {preset} preset\n\n{table}\nmean ± std over seeds; wall time of this invocation {wall / 60:.1f} min\n"
            f"command: python tools/paper_row.py --preset {preset} --output-dir {out} --backbones {','.join(families)}\n\n"
            f"{colour_baselines(out / 'data')}\n\nlearning curves (val metric per evaluation; seeds averaged): "
            f"{out / 'toy_curves.png'}\n{json.dumps(curves)}\n")
    (out / "toy_results.md").write_text(text)
    say(text)
    return 1 if states["failed"] or knn_states["failed"] else 0
