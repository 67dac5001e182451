"""Runs of the paper row and of its toy preset (tools/paper_row.py, tools/toy_preset.py): each a crossmae
command in its own output directory, run locally (tools/launch.sh), submitted to SLURM (tools/submit_slurm.py)
or printed (dry run). A run whose results.json holds its metrics is done and skipped; a failed one is retried."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATUS_FILE = "paper_row_status.json"  # written beside each run: exit code and log


@dataclass
class Task:
    """One run: a name, the program that runs it, its config + overrides, and where it writes."""
    name: str
    entry: str  # a task of crossmae/tasks.py, run as ``crossmae <entry>`` (the toy preset's "knn": in process)
    config: str
    overrides: list[str]
    output_dir: Path
    metrics: tuple[str, ...]
    nodes: int = 1
    gpus_per_node: int = 8
    group: dict = field(default_factory=dict)  # toy preset: what the run is (init, task, seed)

    def crossmae_args(self) -> list[str]:
        """Its command line after ``crossmae`` (``python -m crossmae.cli`` locally, tools/submit_slurm.py on SLURM)."""
        return [self.entry, "--config", self.config, *self.overrides, f"output_dir={self.output_dir}"]

    @property
    def log(self) -> Path:
        return self.output_dir / "paper_row.log"


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
    return ["bash", str(ROOT / "tools" / "launch.sh"), "-m", "crossmae.cli", *task.crossmae_args()]


def slurm_command(task: Task, partition: str | None, timeout_min: int) -> list[str]:
    cmd = [sys.executable, str(ROOT / "tools" / "submit_slurm.py"), "--nodes", str(task.nodes),
           "--gpus-per-node", str(task.gpus_per_node), "--timeout", str(timeout_min),
           "--job-dir", str(task.output_dir / "slurm" / "%j"), "--name", f"row-{task.name}"]
    if partition:
        cmd += ["--partition", partition]
    return cmd + ["--", *task.crossmae_args()]


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
