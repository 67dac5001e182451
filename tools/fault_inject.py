#!/usr/bin/env python
"""Kill tiny training runs with SIGKILL at random moments, some of them inside checkpoint writes, restart
each until it finishes, and check that it ends bitwise where an uninterrupted run ends.

    python tools/fault_inject.py                          # pretrain and finetune, 6 kills each
    python tools/fault_inject.py --tasks pretrain --kills 20 --seed 3 --workdir /tmp/fi --keep

Per task, in a fresh directory: a reference run, then the same command restarted after every kill. Kills
are timed (``timer``: sent by this script at a random moment of the run's wall time, start-up included;
``fit``: a random moment of the training left, through epochs, evaluations and saves)
or planned inside the n-th checkpoint write of a process (``write``: half the bytes written; ``rename``:
the temporary file complete, not yet renamed; ``after``: renamed, nothing after it done). Except for
``timer``, the run's own process sends itself the SIGKILL, from a hook this script installs in its child
(nothing in the package knows about it).

Checked at the end (CPU, one thread, so bitwise equality is expected): every checkpoint*.pth equal to the
reference's (model and optimizer tensors, epoch, step), train_log.jsonl / epoch_log.jsonl describing the
same single trajectory (same steps and losses), the same results.json metrics (timings aside), no
temporary files and no lock left; then the finished command is run once more and must keep its results.
Exit code 0 if every check passed; tests/test_fault_injection.py runs a short version.

``--divergence STEP``: the divergence case instead. Under ``on_divergence=rollback``, the loss of optimizer
step STEP is made NaN once (a transient fault: a hook in the child, like the kills), and the run is also
killed inside its last checkpoint write and restarted. It must roll back to the last good checkpoint, halve
the lr (``divergence.lr_factor``, 0.5) for the rest of the run, and end with finite checkpoints equal,
bitwise, to those of a reference run that never diverged: the same command stopped (killed) right after that
last good checkpoint, then resumed by hand with ``optim.blr`` and ``optim.min_lr`` halved, i.e. exactly what a
user restarting after a NaN does. Why this reference: a transient NaN leaves no trace in a run that rolls
back, except that everything after the rollback runs at half the lr; a run that never diverged at the
original lr would differ from the epoch of the rollback on. Halving is exact in floating point (the
schedule's every term scales by 2**-1), so the two lrs are bitwise equal and so is everything after them.
"""
from __future__ import annotations

import argparse
import importlib
import io
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401
FAULT_ENV = "CROSSMAE_FAULT_INJECT"  # read only by this script's child mode
SAVE_PHASES = ("write", "rename", "after")
KINDS = ("timer", "fit", *SAVE_PHASES, "none")  # none: no kill (a start with only a NaN injected)
LR_FACTOR = 0.5  # on_divergence=rollback's default divergence.lr_factor: a power of two, so halving is exact

# a tiny ViT (32 px images, 8 px patches: 16 tokens) so each run takes seconds on one CPU thread
TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def task_overrides(task: str, out_dir: Path, data_dir: Path, epochs: int) -> list[str]:
    """The command line of each task: every save written (save_every=1), snapshots (keep_every=2), a log
    line per step, an evaluation per epoch, and the full augmentation pipeline where the task has one."""
    common = [f"output_dir={out_dir}", f"data.path={data_dir}", "data.num_workers=0", "device=cpu", "seed=0",
              f"epochs={epochs}", f"batch_size={BATCH}", "save_every=1", "keep_every=2", "log_every=1",
              "optim.warmup_epochs=1"]
    if task == "pretrain":
        model = dict(name="crossmae_vit_small_patch16", **TINY_VIT, decoder_embed_dim=32, decoder_depth=1,
                     decoder_num_heads=2)
        return common + [f"model.{k}={v}" for k, v in model.items()] + ["num_vis=4", "optim.blr=1e-3"]
    if task == "finetune":  # random_init: no pretraining checkpoint needed; RandAugment, mixup/cutmix, erasing on
        return common + [f"model.{k}={v}" for k, v in TINY_VIT.items()] + [
            "model.arch=small", "random_init=true", "data.nb_classes=4", "optim.blr=1e-2"]
    raise ValueError(f"unknown task {task!r}: pretrain or finetune")


TASKS = ("pretrain", "finetune")
TRAIN_IMAGES, BATCH = 32, 8  # write_tiny_imagefolder's train split; task_overrides' batch_size


def task_config(task: str, overrides: list[str]):
    """The task's full config (its schema defaults under ``overrides``), as the child will see it."""
    from crossmae.config import load_config
    if task == "pretrain":
        from crossmae.config import PretrainConfig as schema
    else:
        from crossmae.classification.config import FinetuneConfig as schema
    return load_config(schema, None, overrides)


def write_tiny_imagefolder(root: Path, classes: int = 4, train_per_class: int = 8, val_per_class: int = 4,
                           size: int = 40, seed: int = 0) -> Path:
    """``<root>/{train,val}/c<k>/<i>.png``: smooth random images, tinted per class (once: ``.complete``)."""
    import numpy as np
    from PIL import Image
    if (root / ".complete").exists():
        return root
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.normal(size=(size, size, 3)).cumsum(0).cumsum(1)
                img = (img - img.min()) / (np.ptp(img) + 1e-8) * 160 + 40 * np.eye(3)[c % 3] * (1 + c // 3)
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(d / f"{i}.png")
    (root / ".complete").touch()
    return root


@dataclass(frozen=True)
class Fault:
    """A kill ``at`` seconds after the process starts (``timer``) or after training starts (``fit``), or
    inside a checkpoint write (``kind`` one of SAVE_PHASES): the ``at``-th of the process, or the one of
    ``file`` = ``"<name>@<epoch>"`` (e.g. ``"checkpoint.pth@3"``) if given. ``relative``: ``at`` is a fraction
    in [0, 1) of what is left of the run, resolved when the process starts (``resolve``). ``nan_step``: the
    loss of that optimizer step (1-based) is NaN, the first time the process reaches it (``none``: no kill)."""
    kind: str
    at: float = 0
    relative: bool = False
    file: str | None = None
    nan_step: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {self.kind!r}")

    def __str__(self) -> str:
        if self.nan_step:
            kill = "" if self.kind == "none" else f"+{Fault(self.kind, self.at, self.relative, self.file)}"
            return f"nan@step{self.nan_step}{kill}"
        if self.file:
            return f"{self.kind}@{self.file}"
        if self.relative:
            return f"{self.kind}@{self.at:.2f} of the rest"
        return f"{self.kind}@{self.at:.2f}s" if self.kind in ("timer", "fit") else f"{self.kind}@save{int(self.at)}"

    def resolve(self, left: float, wall_s: float, fit_s: float, saves: int) -> Fault:
        """The concrete fault for a start with the fraction ``left`` of the epochs still to train, given the
        reference run's wall time, training time and checkpoint writes."""
        if not self.relative:
            return self
        if self.kind == "timer":  # anywhere in the process's life, start-up included
            return Fault("timer", self.at * wall_s)
        if self.kind == "fit":  # within the training left (what comes after it: ``timer`` and ``after`` kills)
            return Fault("fit", self.at * fit_s * left)
        return Fault(self.kind, 1 + int(self.at * max(1, math.ceil(saves * left))))


def random_faults(rng: random.Random, n: int) -> list[Fault]:
    """``n`` relative faults cycling through: during training, inside a checkpoint write, anywhere in the
    process's life, inside a checkpoint write."""
    kinds = ("fit", "save", "timer", "save")
    return [Fault(rng.choice(SAVE_PHASES) if kinds[i % 4] == "save" else kinds[i % 4], rng.random(), relative=True)
            for i in range(n)]


@dataclass
class Attempt:
    fault: Fault | None
    returncode: int
    seconds: float
    epochs_done: int = 0  # by the checkpoint it started from


@dataclass
class Report:
    task: str
    attempts: list[Attempt] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reference_s: float = 0.0
    reference: str = "the uninterrupted run"

    @property
    def kills(self) -> int:
        return sum(a.returncode == -signal.SIGKILL for a in self.attempts)

    def summary(self) -> str:
        faults = ", ".join(f"{a.fault or 'none'}->{'killed' if a.returncode == -signal.SIGKILL else a.returncode}"
                           for a in self.attempts)
        verdict = f"OK: bitwise equal to {self.reference}" if not self.problems else \
            "FAILED:\n  " + "\n  ".join(self.problems)
        return f"{self.task}: {self.kills} kills ({faults}); reference run {self.reference_s:.1f} s. {verdict}"


def _child_cmd(task: str, out_dir: Path, data_dir: Path, epochs: int, extra: tuple[str, ...] = ()) -> list[str]:
    """The child's command line; ``extra``: more overrides after the task's own."""
    return [sys.executable, str(Path(__file__).resolve()), "--child", task, str(out_dir), str(data_dir),
            str(epochs), *extra]


def _child_env(fault: Fault | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop(FAULT_ENV, None)
    specs = [f"nan:{fault.nan_step}"] if fault is not None and fault.nan_step else []
    if fault is not None and fault.kind not in ("timer", "none"):
        specs.append(f"{fault.kind}:{fault.file or fault.at}")
    if specs:
        env[FAULT_ENV] = ";".join(specs)
    return env


def run_once(cmd: list[str], fault: Fault | None, log: Path, timeout_s: float) -> Attempt:
    """One start of the run, killed as ``fault`` says; its output goes to ``log``."""
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=_child_env(fault), stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            proc.wait(timeout=fault.at if fault is not None and fault.kind == "timer" else timeout_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    return Attempt(fault, proc.returncode, time.monotonic() - start)


def _tail(log: Path, n: int = 15) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return "\n    ".join(lines[-n:])


def _epochs_done(out_dir: Path) -> int:
    from crossmae.engine.checkpoint import load_checkpoint
    try:
        return int(load_checkpoint(out_dir / "checkpoint.pth")["epoch"])
    except (ValueError, KeyError, OSError):
        return 0


def faulted_run(task: str, out_dir: Path, data_dir: Path, epochs: int, faults: list[Fault], logs: Path,
                timeout_s: float, report: Report, reference: dict, extra: tuple[str, ...] = ()) -> bool:
    """Start, kill as planned, restart, ... until a start finishes. False (with a problem noted) if a start
    fails other than by our SIGKILL. ``reference``: wall_s, fit_s, saves of the reference run."""
    cmd = _child_cmd(task, out_dir, data_dir, epochs, extra)
    for i, fault in enumerate([*faults, None]):
        log = logs / f"{task}-{i:02d}.log"
        done = _epochs_done(out_dir)
        if fault is not None:
            fault = fault.resolve(1 - done / epochs, **reference)
        attempt = run_once(cmd, fault, log, timeout_s)
        attempt.epochs_done = done
        report.attempts.append(attempt)
        if attempt.returncode == 0:
            return True
        if attempt.returncode != -signal.SIGKILL or fault is None:
            report.problems.append(f"start {i} ({fault or 'no fault'}) exited with {attempt.returncode}:\n    "
                                   + _tail(log))
            return False
    return False


# ---------------------------------------------------------------------------------------------- comparison
def _equal(a, b, where: str, problems: list[str]) -> None:
    import torch
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b)):
            diff = (float((a.double() - b.double()).abs().max()) if isinstance(a, torch.Tensor)
                    and isinstance(b, torch.Tensor) and a.shape == b.shape else "shape/dtype")
            problems.append(f"{where} differs (max abs diff {diff})")
    elif isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            problems.append(f"{where}: keys differ ({sorted(set(a) ^ set(b), key=str)[:5]})")
        for k in a.keys() & b.keys():
            _equal(a[k], b[k], f"{where}.{k}", problems)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]", problems)
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
        problems.append(f"{where}: {a!r} != {b!r}")


def _jsonl(path: Path, keys: tuple[str, ...]) -> list[tuple]:
    """``keys`` of each record, rollback records (the loop's own notes, see _rollbacks) left out."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [tuple(r.get(k) for k in keys) for r in records if "rollback" not in r]


def _rollbacks(run: Path) -> list[dict]:
    path = run / "epoch_log.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [r["rollback"] for r in records if "rollback" in r]


def _metrics(path: Path) -> dict:
    """results.json's metrics without wall-clock timings."""
    if not path.is_file():
        return {"<results.json missing>": True}
    metrics = json.loads(path.read_text()).get("metrics", {})
    return {k: v for k, v in metrics.items() if "time" not in k}


def compare_runs(ref: Path, run: Path) -> list[str]:
    """What differs between the reference run directory and the faulted one (empty: nothing)."""
    from crossmae.engine.checkpoint import load_checkpoint
    problems: list[str] = []
    names = sorted(p.name for p in ref.glob("checkpoint*.pth"))
    got = sorted(p.name for p in run.glob("checkpoint*.pth"))
    if names != got:
        problems.append(f"checkpoint files differ: reference {names}, faulted {got}")
    for name in sorted(set(names) & set(got)):
        a, b = load_checkpoint(ref / name), load_checkpoint(run / name)
        for key in ("model", "optimizer", "epoch", "step", "best"):
            _equal(a.get(key), b.get(key), f"{name}:{key}", problems)
    for log, keys in (("train_log.jsonl", ("step", "loss")), ("epoch_log.jsonl", ("epoch", "train_loss"))):
        expected, found = _jsonl(ref / log, keys), _jsonl(run / log, keys)
        if expected != found:
            problems.append(f"{log}: {keys} differ: reference {expected[:6]}..., faulted "
                            f"{found[:6]}... ({len(found)} lines)")
    _equal(_metrics(ref / "results.json"), _metrics(run / "results.json"), "results.json:metrics", problems)
    leftovers = sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == "run.lock")
    if leftovers:
        problems.append(f"left behind in {run}: {leftovers}")
    return problems


def check_task(task: str, work: Path, faults: list[Fault] | None = None, kills: int = 6, epochs: int = 4,
               seed: int = 0, rerun: bool = True, timeout_s: float = 600) -> Report:
    """Reference run, faulted run (``faults``, or ``kills`` random ones), comparison, rerun of the finished
    command. Everything lives under ``work/<task>``."""
    report = Report(task)
    base = work / task
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    data = write_tiny_imagefolder(work / "data")  # tasks checked in parallel: write it first
    reference = run_once(_child_cmd(task, base / "reference", data, epochs), None, logs / "reference.log", timeout_s)
    report.reference_s = reference.seconds
    if reference.returncode != 0:
        report.problems.append(f"the reference run failed ({reference.returncode}):\n    "
                               + _tail(logs / "reference.log"))
        return report
    facts = dict(wall_s=reference.seconds,
                 saves=epochs + epochs // 2,  # checkpoint.pth every epoch, a snapshot every second one
                 fit_s=json.loads((base / "reference" / "results.json").read_text())["metrics"]["train_time_s"])
    if faults is None:
        faults = random_faults(random.Random(seed), kills)
    if not faulted_run(task, base / "faulted", data, epochs, faults, logs, timeout_s, report, facts):
        return report
    report.problems += compare_runs(base / "reference", base / "faulted")
    if rerun:  # a finished command run again (or a kill after the last checkpoint): results must survive
        again = run_once(_child_cmd(task, base / "faulted", data, epochs), None, logs / "rerun.log", timeout_s)
        if again.returncode != 0:
            report.problems.append(f"rerunning the finished command failed ({again.returncode}):\n    "
                                   + _tail(logs / "rerun.log"))
        else:
            report.problems += [f"after a rerun of the finished command: {p}"
                                for p in compare_runs(base / "reference", base / "faulted")]
    return report


def check_divergence(task: str, work: Path, nan_step: int, epochs: int = 3, kill: Fault | None = None,
                     rerun: bool = True, timeout_s: float = 600) -> Report:
    """The divergence case (module docstring): under on_divergence=rollback, a NaN loss at optimizer step
    ``nan_step`` and the ``kill`` (default: inside the last checkpoint.pth write) in the first start; compared
    with the manual restart at half the lr from the last checkpoint before ``nan_step``. Under
    ``work/<task>-divergence``."""
    report = Report(f"{task} (divergence)", reference="a run that never diverged: stopped after the last good "
                                                      "checkpoint, resumed at half the lr")
    base = work / f"{task}-divergence"
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    data = write_tiny_imagefolder(work / "data")
    rollback = ("on_divergence=rollback", f"divergence.lr_factor={LR_FACTOR}")
    good_epoch = (nan_step - 1) // (TRAIN_IMAGES // BATCH)  # the last checkpoint.pth (save_every=1) before the NaN
    if not 0 <= good_epoch < epochs:
        raise ValueError(f"nan_step {nan_step} is not within the {epochs} epochs of {TRAIN_IMAGES // BATCH} steps")
    # the reference: stopped right after the last good checkpoint, resumed by hand at half the lr
    start = time.monotonic()
    ref = base / "reference"
    if good_epoch:
        first = run_once(_child_cmd(task, ref, data, epochs, rollback), Fault("after", file=f"checkpoint.pth@{good_epoch}"),
                         logs / "reference-0.log", timeout_s)
        if first.returncode != -signal.SIGKILL:
            report.problems.append(f"the reference's first part ended with {first.returncode}, not our kill:\n    "
                                   + _tail(logs / "reference-0.log"))
            return report
    optim = task_config(task, task_overrides(task, ref, data, epochs)).optim
    lowered = (f"optim.blr={optim.blr * LR_FACTOR!r}", f"optim.min_lr={optim.min_lr * LR_FACTOR!r}")
    second = run_once(_child_cmd(task, ref, data, epochs, rollback + lowered), None, logs / "reference-1.log", timeout_s)
    report.reference_s = time.monotonic() - start
    if second.returncode != 0:
        report.problems.append(f"the reference's restart at a lower lr failed ({second.returncode}):\n    "
                               + _tail(logs / "reference-1.log"))
        return report
    kill = kill or Fault("write", file=f"checkpoint.pth@{epochs}")
    fault = Fault(kill.kind, kill.at, kill.relative, kill.file, nan_step=nan_step)
    facts = dict(wall_s=report.reference_s, fit_s=report.reference_s, saves=epochs + epochs // 2)
    if not faulted_run(task, base / "faulted", data, epochs, [fault], logs, timeout_s, report, facts, rollback):
        return report
    report.problems += divergence_problems(base / "faulted", nan_step, good_epoch)
    report.problems += compare_runs(ref, base / "faulted")
    if rerun:
        again = run_once(_child_cmd(task, base / "faulted", data, epochs, rollback), None, logs / "rerun.log",
                         timeout_s)
        if again.returncode != 0:
            report.problems.append(f"rerunning the finished command failed ({again.returncode}):\n    "
                                   + _tail(logs / "rerun.log"))
        else:
            report.problems += [f"after a rerun of the finished command: {p}" for p in compare_runs(ref, base / "faulted")]
    return report


def has_rollback(task: str) -> bool:
    """Whether the task's config schema has the on_divergence field (the Trainer reads it from there)."""
    return "on_divergence" in task_config(task, [])


def divergence_problems(run: Path, nan_step: int, good_epoch: int) -> list[str]:
    """What is wrong with a run that diverged once and rolled back: no rollback logged, or another one; a
    non-finite checkpoint; a final checkpoint that forgot the lowered lr."""
    from crossmae.engine.checkpoint import load_checkpoint, named_tensors, nonfinite_names
    problems = []
    rollbacks = _rollbacks(run)
    if len(rollbacks) != 1 or f"at step {nan_step}" not in rollbacks[0]["reason"] \
            or not rollbacks[0]["to"].endswith("start of training" if not good_epoch else "checkpoint.pth"):
        problems.append(f"expected one rollback, from step {nan_step} to epoch {good_epoch}; epoch_log has {rollbacks}")
    for path in sorted(run.glob("checkpoint*.pth")):
        ckpt = load_checkpoint(path)
        bad = nonfinite_names(named_tensors({"model": ckpt["model"], "optimizer": ckpt["optimizer"]["state"]}))
        if bad:
            problems.append(f"{path.name} holds inf/NaN: {bad[:3]}")
        if ckpt["epoch"] > good_epoch and (ckpt.get("divergence") or {}).get("lr_scale") != LR_FACTOR:
            problems.append(f"{path.name} (epoch {ckpt['epoch']}) records lr_scale "
                            f"{(ckpt.get('divergence') or {}).get('lr_scale')}, not {LR_FACTOR}")
    return problems


# ---------------------------------------------------------------------------------------------- child side
def install_fault(spec: str) -> None:
    """``fit:<seconds>``: SIGKILL this process that long after training starts; ``<phase>:<n>``: inside its
    n-th checkpoint write; ``<phase>:<file>@<epoch>``: inside its write of ``file`` for ``epoch`` (see
    SAVE_PHASES); ``nan:<step>``: the loss of optimizer step ``step`` is NaN, once. Several, joined by ';'."""
    import threading

    import torch
    from crossmae.engine import checkpoint as ckpt_module
    from crossmae.engine import loop
    if ";" in spec:
        for one in spec.split(";"):
            install_fault(one)
        return
    phase, at = spec.split(":", 1)
    if phase == "nan":
        real_micro_step, fired = loop.Trainer._micro_step, []

        def micro_step(self, batch, sync):
            if fired or self.step + 1 != int(at):
                return real_micro_step(self, batch, sync)
            fired.append(self.step + 1)  # transient: this process never injects it again
            real_loss = self.loss_fn
            self.loss_fn = lambda model, b: real_loss(model, b) * float("nan")
            try:
                return real_micro_step(self, batch, sync)
            finally:
                self.loss_fn = real_loss

        loop.Trainer._micro_step = micro_step
        return

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if phase == "fit":
        real_fit = loop.Trainer.fit

        def fit(self, *args, **kwargs):
            timer = threading.Timer(float(at), die)
            timer.daemon = True  # a run that ends first exits normally
            timer.start()
            return real_fit(self, *args, **kwargs)

        loop.Trainer.fit = fit
        return
    if phase not in SAVE_PHASES:
        raise ValueError(f"{FAULT_ENV}: unknown phase {phase!r}")
    target_file, _, target_epoch = at.partition("@")
    state = {"writes": 0, "hit": False}
    real_save, real_replace = torch.save, os.replace

    def is_target(obj, f) -> bool:
        state["writes"] += 1
        if not target_epoch:
            return state["writes"] == int(float(at))
        try:  # save_checkpoint writes to an open ".<file>.<pid>.<hex>.tmp"
            name = os.path.basename(os.readlink(f"/proc/self/fd/{f.fileno()}"))
        except (OSError, AttributeError, ValueError):
            name = f".{target_file}."  # no /proc: match the epoch only
        return name.startswith(f".{target_file}.") and str(obj.get("epoch")) == target_epoch

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):  # not save_checkpoint's open temporary file
            return real_save(obj, f, *args, **kwargs)
        state["hit"] = is_target(obj, f)
        if state["hit"] and phase == "write":
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            die()
        return real_save(obj, f, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        ours = str(src).endswith(".tmp") and ".pth." in os.path.basename(str(src))
        if ours and state["hit"] and phase == "rename":
            die()
        real_replace(src, dst, *args, **kwargs)
        if ours and state["hit"] and phase == "after":
            die()

    ckpt_module.torch.save = save
    ckpt_module.os.replace = replace


def child_main(task: str, out_dir: str, data_dir: str, epochs: str, *extra: str) -> int:
    import torch
    torch.set_num_threads(1)
    if os.environ.get(FAULT_ENV):
        install_fault(os.environ[FAULT_ENV])
    from crossmae.cli import report_errors
    from crossmae.tasks import TASKS
    main = importlib.import_module(TASKS[task].module).main
    return report_errors(f"fault_inject {task}", main, None,
                         task_overrides(task, Path(out_dir), Path(data_dir), int(epochs)) + list(extra))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(*argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--kills", type=int, default=6, help="planned kills per task (timed and inside saves)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="draws the kill moments")
    p.add_argument("--workdir", help="where the runs go (default: a temporary directory, removed unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the run directories and logs")
    p.add_argument("--divergence", type=int, metavar="STEP",
                   help="the divergence case instead: NaN loss at optimizer step STEP (4 steps per epoch), rollback")
    a = p.parse_args(argv)
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="fault_inject_"))
    ok = True
    try:
        for task in a.tasks:
            if a.divergence and not has_rollback(task):
                print(f"{task} (divergence): skipped: its config has no on_divergence field", flush=True)
                continue
            report = (check_divergence(task, work, a.divergence, epochs=a.epochs) if a.divergence else
                      check_task(task, work, kills=a.kills, epochs=a.epochs, seed=a.seed))
            print(report.summary(), flush=True)
            ok &= not report.problems
    finally:
        if a.keep or not ok:
            print(f"runs and logs kept in {work}")
        elif not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
