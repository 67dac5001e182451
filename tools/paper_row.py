#!/usr/bin/env python
"""The paper's row for one pretraining checkpoint, from one command: every downstream evaluation of the
paper's tables with the recipes in configs/, then the results table beside the published numbers.

    python tools/paper_row.py --checkpoint ckpt.pth --roots configs/paper_row/roots_example.yaml \
        --output-dir output/row_b --dry-run            # print every command with its node and GPU counts
    python tools/paper_row.py --checkpoint ckpt.pth --roots roots.yaml --output-dir output/row_b   # locally
    python tools/paper_row.py ... --slurm --partition gpu                # one SLURM job per task (submitit)
    python tools/paper_row.py --preset toy --output-dir output/toy       # the CPU toy reproduction (tools/toy_preset.py)

Each task runs as its own process (tools/runs.py: tools/launch.sh locally, tools/submit_slurm.py on SLURM) in
``<output-dir>/<task>``. Rerunning is idempotent: a task whose results.json holds its metrics is skipped,
an unfinished one resumes from its checkpoint.pth (every task auto-resumes), a failed one is retried and
reported with its log. ``--tasks`` selects a subset. Every task is a ``crossmae`` command
(crossmae/tasks.py): this script only builds command lines.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401

from crossmae.models.sizes import VIT_SIZES, vit_size_of  # noqa: E402
from tools.runs import ROOT, Task, run_tasks  # noqa: E402
from tools.toy_preset import FAMILIES, TOY_SIZES, run_toy, toy_rows  # noqa: E402

# evaluation -> (crossmae task, dataset key in the roots YAML, {size: recipe}, results.json metrics that mark it
# finished)
ROW_TASKS = {
    "finetune": ("finetune", "imagenet", {s: f"configs/finetune/vit_{s}.yaml" for s in VIT_SIZES}, ("top1",)),
    "linprobe": ("linprobe", "imagenet", {s: f"configs/linprobe/vit_{s}.yaml" for s in VIT_SIZES}, ("top1",)),
    "det": ("det", "coco", {"base": "configs/det/vitdet_b_100ep.yaml", "large": "configs/det/vitdet_l_100ep.yaml",
                            "huge": "configs/det/vitdet_h_75ep.yaml"}, ("bbox_AP", "segm_AP")),
    "seg": ("seg", "ade20k", {"base": "configs/seg/upernet_vit_base_ade20k.yaml",
                              "large": "configs/seg/upernet_vit_large_ade20k.yaml"}, ("mIoU",)),
    "inat2019": ("cls-transfer", "inat2019",
                 {s: f"configs/cls_transfer/inat2019_vit_{s}.yaml" for s in ("base", "large")}, ("top1",)),
    "places365": ("cls-transfer", "places365",
                  {s: f"configs/cls_transfer/places365_vit_{s}.yaml" for s in ("base", "large")}, ("top1",)),
}
DATA_KEY = {"det": "data.root"}  # the override naming the dataset root (data.path elsewhere)


def checkpoint_size(path: str | Path) -> str:
    """The ViT size of a pretraining checkpoint (ours or an official release), from its patch projection."""
    from crossmae.engine.checkpoint import load_checkpoint, model_state
    state = model_state(load_checkpoint(path), path)
    weight = state.get("patch_embed.proj.weight")
    if weight is None:
        raise ValueError(f"{path}: no patch_embed.proj.weight: not a ViT pretraining checkpoint")
    width = int(weight.shape[0])
    size = vit_size_of(width)
    if size is None:
        widths = ", ".join(f"{fields['embed_dim']} {name}" for name, fields in VIT_SIZES.items())
        raise ValueError(f"{path}: encoder width {width} is none of the paper's sizes ({widths}); give --size")
    return size


def load_roots(path: str | Path) -> dict[str, str]:
    import yaml
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset roots file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping dataset -> root, e.g. 'imagenet: /data/imagenet'")
    known = {key for _, key, _, _ in ROW_TASKS.values()}
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
        entry, dataset, recipes, metrics = ROW_TASKS[name]
        if size not in recipes:
            skipped.append(f"{name}: no {size} recipe in configs/ (the paper reports {', '.join(recipes)})")
            continue
        if dataset not in roots:
            skipped.append(f"{name}: no '{dataset}' root in the dataset roots file")
            continue
        overrides = [f"pretrained={ckpt}", f"{DATA_KEY.get(entry, 'data.path')}={roots[dataset]}"]
        tasks.append(Task(name, entry, str(ROOT / recipes[size]), overrides, out / name, metrics, nodes,
                          gpus_per_node))
    return tasks, skipped



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
    p.add_argument("--size", choices=list(VIT_SIZES), help="default: read from the checkpoint")
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
    p.add_argument("--backbones", default=",".join(FAMILIES),
                   help="toy preset: the backbone families whose rows run (comma-separated subset of vit,hiera)")
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
        families = tuple(f.strip() for f in args.backbones.split(",") if f.strip())
        toy_rows(families)  # an unknown family is one line before anything runs
        return run_toy(out, args.preset, mode, args.threads, jobs=args.jobs, families=families)
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
