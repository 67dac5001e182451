"""The one training loop. A task supplies a model, a data loader, ``loss_fn(model, batch)`` and,
optionally, ``evaluate(model, epoch) -> metrics`` (``epoch``: the epochs trained so far); the loop does the rest: DDP, gradient accumulation,
mixed precision, clipping, per-step learning rate, logging, evaluation, checkpoints and resume.

Reproducibility: at the start of every epoch the RNGs are seeded from (seed, epoch, rank) and the
distributed sampler from (seed, epoch), so a run resumed from an epoch checkpoint follows the same
trajectory as one that never stopped, on every rank.

Divergence: a non-finite loss (checked at logging steps and epoch ends), non-finite weights or optimizer
state (checked before every checkpoint write, which is then refused) or a non-finite evaluation loss stops
the run naming the last good checkpoint, or, with ``on_divergence: rollback``, restores that checkpoint,
lowers the lr by ``divergence.lr_factor`` for the rest of the run and carries on (at most
``divergence.max_retries`` times). A written checkpoint is therefore always finite.
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import inspect
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from .checkpoint import (CheckpointError, describe_nonfinite, load_checkpoint, load_model_state, named_tensors,
                         nonfinite_names, save_checkpoint)
from .distributed import DistInfo, all_reduce_sum
from .logging import RunLogger, flatten_dict, progress_bar
from .optim import set_lr
from .rundir import holds_run_dir, lock_run_dir

logger = logging.getLogger("crossmae")

RESUME_HINT = ("Resume it with the config it was trained with (config.yaml beside it), or start this run "
               "afresh: a new output_dir and no resume=.")

LossFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, dict]"]
Evaluator = Callable[[nn.Module, int], dict]  # (model, epochs trained) -> metrics


def takes_epoch(evaluate: Callable) -> Evaluator:
    """``evaluate`` as an :data:`Evaluator`: one that takes the model alone (it needs no epoch) is wrapped."""
    try:
        inspect.signature(evaluate).bind(None, 0)
        return evaluate
    except TypeError:
        return lambda model, epoch: evaluate(model)


def resolve_precision(precision: str, device: torch.device, allow_cpu: bool = False) -> str:
    """'auto' -> bf16 on GPUs that support it, fp32 elsewhere. bf16/fp16 asked for off a GPU fall back
    to fp32 (slow there) unless ``allow_cpu``: then CPU autocast runs, so tests can exercise those paths."""
    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision != "fp32" and device.type != "cuda" and not allow_cpu:
        logger.warning("precision %s asked for on %s: using fp32", precision, device.type)
        return "fp32"
    return precision


def resolve_compile(compile: bool | str, device: torch.device) -> bool:
    """'auto' -> torch.compile on CUDA, where it was measured 1.3-1.4x faster per pretraining step (ViT-B,
    H200, bf16; docs/performance.md), unless the compiler cannot run there (no Triton, or a Python that
    dynamo does not support yet: then eager, with a warning); eager on CPU, where it was not faster.
    Also takes true/false in any case."""
    value = str(compile).lower()
    if value not in ("auto", "true", "false"):
        raise ValueError(f"compile must be auto, true or false, got {compile!r}")
    if value != "auto":
        return value == "true"
    if device.type != "cuda":
        return False
    if not compiler_available():
        logger.warning("compile=auto: torch.compile cannot run here (no usable Triton, or dynamo does not support "
                       "this Python); training eager")
        return False
    return True


def compiler_available() -> bool:
    try:
        from torch.utils._triton import has_triton
        return bool(torch._dynamo.is_dynamo_supported() and has_triton())
    except Exception:  # private helpers: a torch that lacks them is a torch we cannot vouch for
        return False


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors in (nested) lists, tuples and dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


@dataclass(frozen=True)
class DivergencePolicy:
    """What the loop does when training diverges. ``stop``: raise, naming the last good checkpoint (the
    default: a human decides). ``rollback``: restore the last good checkpoint (model, optimizer, scaler,
    step; the data order is a function of (seed, epoch), so it replays exactly), multiply the lr by
    ``lr_factor`` for the rest of the run, and go on; give up after ``max_retries`` rollbacks in the run.

    Why a lower lr rather than skipping the offending batches: the loss is checked at logging steps only
    (a check per step would sync the GPU every step), so the batch that started a divergence is not known;
    a too-high lr (the common cause) diverges again on other batches; and it is what a user restarting by
    hand does, so a rolled-back run equals, bitwise, that manual restart (tools/fault_inject.py checks it)."""
    action: str = "stop"
    max_retries: int = 3
    lr_factor: float = 0.5

    def __post_init__(self):
        if self.action not in ("stop", "rollback"):
            raise ValueError(f"on_divergence must be stop or rollback, got {self.action!r}")
        if self.max_retries < 0 or not 0 < self.lr_factor <= 1:
            raise ValueError(f"divergence.max_retries must be >= 0 and divergence.lr_factor in (0, 1], got "
                             f"{self.max_retries} and {self.lr_factor}")

    @classmethod
    def from_config(cls, config: dict) -> "DivergencePolicy":
        """From a task config's ``on_divergence`` and ``divergence`` fields (stop where it has none)."""
        section = config.get("divergence") or {}
        return cls(str(config.get("on_divergence") or "stop"), int(section.get("max_retries", cls.max_retries)),
                   float(section.get("lr_factor", cls.lr_factor)))


class Diverged(FloatingPointError):
    """Raised inside the loop when training diverged; ``fit`` stops or rolls back (``DivergencePolicy``)."""


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    s = (seed * 1_000_003 + epoch * 1009 + rank) % (2 ** 31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


class Trainer:
    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, train_loader,
                 lr_schedule: Callable[[int], float], loss_fn: LossFn, epochs: int, output_dir: str | Path,
                 dist: DistInfo, accum_iter: int = 1, clip_grad: float | None = None, precision: str = "auto",
                 compile: bool | str = False, evaluate: Evaluator | Callable[[nn.Module], dict] | None = None,
                 eval_every: int = 1,
                 best_metric: str | None = None, save_every: int = 1, keep_every: int = 0,
                 config: dict | None = None, seed: int = 0, log_every: int = 20, find_unused_parameters: bool = False,
                 tensorboard: bool = True, allow_cpu_autocast: bool = False,
                 divergence: DivergencePolicy | None = None):
        if accum_iter < 1:
            raise ValueError(f"accum_iter must be >= 1, got {accum_iter}")
        self.module = model.to(dist.device)
        self.dist = dist
        self.ddp: DistributedDataParallel | None = None
        if dist.world_size > 1:
            self.ddp = DistributedDataParallel(
                self.module, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters)
        self.model: nn.Module = self.ddp or self.module
        if resolve_compile(compile, dist.device):
            self.model = torch.compile(self.model)  # around DDP: dynamo splits the graph at its buckets
        self.optimizer = optimizer
        self.loader = train_loader
        self.lr_schedule = lr_schedule
        self.loss_fn = loss_fn
        self.epochs = epochs
        self.output_dir = Path(output_dir)
        self.accum_iter = accum_iter
        self.clip_grad = clip_grad
        self.precision = resolve_precision(precision, dist.device, allow_cpu=allow_cpu_autocast)
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=self.precision == "fp16")
        self.evaluate = takes_epoch(evaluate) if evaluate is not None else None
        self.eval_every = eval_every
        self.best_metric = best_metric
        self.save_every = save_every
        self.keep_every = keep_every
        self.config = config or {}
        self.seed = seed
        self.log_every = log_every
        self.start_epoch = 0
        self.epoch = 0  # the (0-based) epoch being trained or evaluated
        self.step = 0  # optimizer steps taken
        self.best: float | None = None
        self.last_eval: dict = {}
        # what a task measures once, at the start of training (e.g. the loss before it): kept in checkpoints,
        # so a run resumed after a kill still reports it
        self.run_state: dict = {}
        # on_divergence: from the config of every task that has the fields, unless given
        self.divergence = divergence or DivergencePolicy.from_config(self.config)
        self.lr_scale = 1.0  # lr_factor ** rollbacks: kept in checkpoints, so a restarted run keeps the lower lr
        self.rollbacks = 0
        self.last_good: tuple[Path, int] | None = None  # the newest finite checkpoint written or resumed: (path, epoch)
        self._initial_state: dict | None = None  # what a rollback before the first checkpoint restores
        if dist.is_main and not holds_run_dir(self.output_dir):  # run_task claimed it; a direct user may not have
            lock_run_dir(self.output_dir)
        self.run_log = RunLogger(self.output_dir, tensorboard=tensorboard)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, epoch: int) -> dict:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": epoch, "step": self.step, "best": self.best,
                "config": self.config, "run_state": self.run_state,
                "divergence": {"lr_scale": self.lr_scale, "rollbacks": self.rollbacks}}

    def save(self, name: str, epoch: int) -> None:
        """Write a checkpoint, unless the weights or optimizer state are not finite (then ``Diverged``):
        a written checkpoint is always one to resume from."""
        state = self.state_dict(epoch)
        self.check_finite_state(state)  # on every rank: the decision must be the same everywhere
        path = self.output_dir / name
        if self.dist.is_main:
            save_checkpoint(state, path)
        if self.last_good is None or epoch >= self.last_good[1]:
            self.last_good = (path, epoch)

    def check_finite_state(self, state: dict) -> None:
        """Raise ``Diverged`` if the model or optimizer tensors of ``state`` hold an inf or NaN: one fused
        reduction over all of them (about a 2-norm's cost), names looked up only if it fails."""
        tensors = {**named_tensors(state["model"], "model."), **named_tensors(state["optimizer"]["state"], "optimizer.")}
        bad = nonfinite_names(tensors)
        if _any_rank(bool(bad), self.dist.device):
            model = [k for k in bad if k.startswith("model.")]
            what = (describe_nonfinite([k.removeprefix("model.") for k in model], len(state["model"]), "model tensors")
                    if model else describe_nonfinite(bad, len(tensors) - len(state["model"]), "optimizer tensors"))
            raise Diverged(f"the weights are not finite after step {self.step}: {what}; checkpoint not written")

    def resume(self, path: str | Path, refuse_other_run: bool = False) -> None:
        """Continue from a training checkpoint. Its recorded config is compared with this run's: a different
        model or data is refused if ``refuse_other_run`` (a checkpoint found in the output dir), else warned
        about (a checkpoint named explicitly); other differences are logged."""
        ckpt = load_checkpoint(path)
        missing = [k for k in ("model", "optimizer", "epoch") if k not in ckpt]
        if missing:
            raise CheckpointError(f"cannot resume from {path}: it lacks {missing} (a weights-only file? "
                                  f"use it as pretrained weights instead)")
        check_resume_config(ckpt.get("config"), self.config, path, refuse=refuse_other_run)
        self.load_training_state(ckpt, path)
        self.last_good = (Path(path), self.start_epoch)
        logger.info("resumed from %s at epoch %d (step %d)", path, self.start_epoch, self.step)
        if self.lr_scale != 1.0:
            logger.info("the lr stays x%g, as lowered by %d rollback(s) after divergence", self.lr_scale,
                        self.rollbacks)

    def load_training_state(self, ckpt: dict, path: str | Path) -> None:
        """Model, optimizer, scaler, epoch, step and the rest of a checkpoint (``resume`` and rollbacks)."""
        load_model_state(self.module, ckpt, path, hint=RESUME_HINT)  # refuses non-finite weights
        bad = nonfinite_names(named_tensors(ckpt["optimizer"].get("state", {})))
        if bad:
            raise CheckpointError(f"cannot resume from {path}: its optimizer state holds inf/NaN ({bad[0]}, ...): "
                                  f"it was written by a run that diverged; use an earlier checkpoint, or "
                                  f"pretrained= to start a new run from its weights")
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:  # other parameter groups: another layer_decay / weight-decay split
            raise CheckpointError(f"cannot resume from {path}: its optimizer state does not fit this run's "
                                  f"parameter groups ({e}). {RESUME_HINT}") from e
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = self.epoch = int(ckpt["epoch"])
        self.step = int(ckpt.get("step", 0))
        self.best = ckpt.get("best")
        self.run_state = dict(ckpt.get("run_state") or {})
        divergence = ckpt.get("divergence") or {}
        self.lr_scale = float(divergence.get("lr_scale", 1.0))
        self.rollbacks = int(divergence.get("rollbacks", 0))

    def auto_resume(self, resume: str | None) -> None:
        """Resume from ``resume`` if given, else from ``<output_dir>/checkpoint.pth`` if it exists (refused
        if that checkpoint is of another model or data: another experiment used this output dir)."""
        latest = self.output_dir / "checkpoint.pth"
        if resume:
            self.resume(resume)
        elif latest.is_file():
            self.resume(latest, refuse_other_run=True)

    # ------------------------------------------------------------------ training
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.loader), self.accum_iter)

    def _micro_step(self, batch, sync: bool) -> dict:
        ctx = contextlib.nullcontext() if sync or self.ddp is None else self.ddp.no_sync()
        with ctx:
            with autocast(self.precision, self.dist.device):
                out = self.loss_fn(self.model, batch)
            loss, metrics = out if isinstance(out, tuple) else (out, {})
            self.scaler.scale(loss / self.accum_iter).backward()
        return {"loss": loss.detach(), **metrics}

    def _optimizer_step(self) -> float | None:
        grad_norm = None
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(nn.utils.clip_grad_norm_(self.module.parameters(), self.clip_grad))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return grad_norm

    def train_one_epoch(self, epoch: int) -> dict:
        self.model.train()
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        n_steps = self.steps_per_epoch()
        totals: dict[str, torch.Tensor] = {}
        # a bar on a terminal; where stderr is a file (SLURM, nohup, CI), a plain line at every logging step
        bar = progress_bar(total=n_steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step", disable=not self.dist.is_main,
                           steps_left=(self.epochs - epoch) * n_steps)
        with contextlib.closing(bar):
            return self._train_steps(epoch, n_steps, totals, bar)

    def _train_steps(self, epoch: int, n_steps: int, totals: dict, bar) -> dict:
        t0, n_samples, micro = time.time(), 0, 0
        self.optimizer.zero_grad(set_to_none=True)
        for batch in self.loader:
            if micro // self.accum_iter >= n_steps:
                break
            if micro % self.accum_iter == 0:
                lr = self.lr_schedule(self.step) * self.lr_scale
                set_lr(self.optimizer, lr)
            batch = to_device(batch, self.dist.device)
            last_micro = micro % self.accum_iter == self.accum_iter - 1
            metrics = self._micro_step(batch, sync=last_micro)
            n_samples += _batch_size(batch)
            micro += 1
            for k, v in metrics.items():
                # summed on the device: no host sync per step
                totals[k] = totals.get(k, 0.0) + torch.as_tensor(v, device=self.dist.device).detach().double()
            if not last_micro:
                continue
            grad_norm = self._optimizer_step()
            bar.update(1)
            if self.step % self.log_every == 0 or micro // self.accum_iter == n_steps:
                loss = float(metrics["loss"])
                self.check_finite_loss(loss)
                ips = n_samples * self.dist.world_size / (time.time() - t0)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{ips:.1f}")
                record = {"epoch": epoch + micro / (n_steps * self.accum_iter), "lr": lr, "img_per_s": ips,
                          "epoch_elapsed_s": time.time() - t0,  # steady-state speed from two records of an epoch
                          **{k: float(v) for k, v in metrics.items()}}
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                self.run_log.log_iter(self.step, record)
        # mean over every micro-batch of every rank
        keys = sorted(totals)
        stacked = torch.stack([totals[k] for k in keys] + [torch.tensor(float(micro), dtype=torch.float64,
                                                                        device=self.dist.device)])
        stacked = all_reduce_sum(stacked)
        if "loss" in totals:
            self.check_finite_loss(float(stacked[keys.index("loss")]))
        means = {f"train_{k}": float(stacked[i] / max(stacked[-1], 1)) for i, k in enumerate(keys)}
        return {**means, "epoch_time_s": time.time() - t0, "lr": self.lr_schedule(self.step) * self.lr_scale}

    def check_finite_loss(self, loss: float) -> None:
        """At logging steps and epoch ends only (not every step: that would sync the GPU each step); either
        way before the next checkpoint is written. Agreed on by every rank."""
        if _any_rank(not math.isfinite(loss), self.dist.device):
            raise Diverged(f"loss is {loss} at step {self.step}")

    def fit(self) -> dict:
        # the logs describe one trajectory: drop what a killed run logged after the checkpoint we start from
        self.run_log.rewind(self.step, self.start_epoch)
        if self.start_epoch >= self.epochs:
            logger.info("nothing to train: checkpoint is at epoch %d of %d", self.start_epoch, self.epochs)
        elif self.divergence.action == "rollback" and self.last_good is None:
            self._initial_state = self._snapshot()
        epoch = self.start_epoch
        while epoch < self.epochs:
            try:
                self._run_epoch(epoch)
                epoch += 1
            except Diverged as diverged:
                epoch = self._recover(diverged)
        self.run_log.close()
        return self.last_eval

    def _run_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        seed_epoch(self.seed, epoch, self.dist.rank)
        record = self.train_one_epoch(epoch)
        skipped = getattr(getattr(self.loader, "dataset", None), "num_skipped", None)
        if callable(skipped):
            record["skipped_images"] = skipped()
        last = epoch + 1 == self.epochs
        if self.evaluate is not None and ((epoch + 1) % self.eval_every == 0 or last):
            metrics = self.evaluate(self.module, epoch + 1)
            check_eval_losses(metrics, epoch + 1)  # a NaN evaluation is never a result to keep
            self.last_eval = metrics
            record["eval"] = metrics
            self._track_best(epoch)
        # checkpoint.pth is the epoch's commit point, written last: a kill before it repeats the epoch
        # (logs are rewound, snapshots rewritten identically), a kill after it loses nothing of the epoch
        if self.keep_every and (epoch + 1) % self.keep_every == 0:
            self.save(f"checkpoint-{epoch + 1:04d}.pth", epoch + 1)
        self.run_log.log_epoch(epoch + 1, record, step=self.step)
        logger.info("epoch %d/%d: %s", epoch + 1, self.epochs, _fmt(record))
        if (epoch + 1) % self.save_every == 0 or last:
            self.save("checkpoint.pth", epoch + 1)

    # ------------------------------------------------------------------ divergence
    def _recover(self, diverged: Diverged) -> int:
        """Stop (``FloatingPointError``, one line naming the last good checkpoint) or roll back to the last
        good checkpoint with a lower lr; returns the epoch to continue from."""
        policy = self.divergence
        if policy.action == "stop":
            raise FloatingPointError(f"{diverged}; stopping. {self._last_good_text()}. Rerun with a lower lr, "
                                     f"clip_grad or bf16/fp32 (on_divergence=rollback does so automatically)"
                                     ) from diverged
        if self.rollbacks >= policy.max_retries:
            raise FloatingPointError(f"{diverged}; giving up after {self.rollbacks} rollback(s) (lr x{self.lr_scale:g}, "
                                     f"divergence.max_retries={policy.max_retries}). {self._last_good_text()}. "
                                     f"Try a lower lr, clip_grad or bf16/fp32") from diverged
        rollbacks, lr_scale = self.rollbacks + 1, self.lr_scale * policy.lr_factor
        if self.last_good is not None:
            source = str(self.last_good[0])
            self.load_training_state(load_checkpoint(self.last_good[0]), self.last_good[0])
        else:
            source = "the start of training"
            self.load_training_state(self._initial_state, source)
        self.rollbacks, self.lr_scale = rollbacks, lr_scale
        self.run_log.rewind(self.step, self.start_epoch, by="the diverged trajectory")  # one trajectory in the logs
        logger.warning("%s: rolled back to %s (epoch %d, step %d); lr x%g from now on (rollback %d of at most %d)",
                       diverged, source, self.start_epoch, self.step, lr_scale, rollbacks, policy.max_retries)
        self.run_log.log_epoch(self.start_epoch, {"rollback": {"reason": str(diverged), "to": source, "count": rollbacks,
                                                               "lr_scale": lr_scale}}, step=self.step)
        return self.start_epoch

    def _last_good_text(self) -> str:
        if self.last_good is None:
            return "No checkpoint was written before it"
        return f"The last good checkpoint is {self.last_good[0]} (epoch {self.last_good[1]})"

    def _snapshot(self) -> dict:
        """The training state now, copied off the device: a rollback target before the first checkpoint."""
        state = self.state_dict(self.start_epoch)
        state["model"] = {k: v.detach().to("cpu", copy=True) for k, v in state["model"].items()}
        return copy.deepcopy(state)

    def _track_best(self, epoch: int) -> None:
        if self.best_metric is None:
            return
        if self.best_metric not in self.last_eval:
            raise KeyError(f"best_metric {self.best_metric!r} not among evaluation results {sorted(self.last_eval)}")
        value = float(self.last_eval[self.best_metric])
        if not math.isfinite(value):  # e.g. an AP with no ground truth: never a best
            return
        if self.best is None or value > self.best:
            self.best = value
            self.save("checkpoint-best.pth", epoch + 1)
            logger.info("new best %s = %.4f at epoch %d", self.best_metric, value, epoch + 1)


# What makes a run this run: a checkpoint whose config differs here belongs to another experiment. Every
# other field (epochs, lr, batch size, ...) may legitimately change between starts of one run.
IDENTITY_FIELDS = ("model", "data", "pretrained", "random_init")
NOT_IDENTITY = ("model.*drop_path_rate", "data.num_workers", "data.pin_memory", "data.name", "data.check_sizes",
                "data.verify_md5")
IGNORED_FIELDS = ("resume",)


def config_differences(saved: dict, current: dict) -> tuple[dict[str, tuple], list[str]]:
    """``({dotted key: (saved, current)}, keys only one side has)`` over the leaves of two config dicts.
    Path-like strings naming the same file compare equal."""
    a, b = flatten_dict(saved, "."), flatten_dict(current, ".")
    diffs = {k: (a[k], b[k]) for k in sorted(a.keys() & b.keys()) if not _same_value(a[k], b[k])}
    return diffs, sorted(a.keys() ^ b.keys())


def is_identity_field(key: str) -> bool:
    return (key.split(".")[0] in IDENTITY_FIELDS
            and not any(fnmatch.fnmatchcase(key, pattern) for pattern in NOT_IDENTITY))


def check_resume_config(saved: dict | None, current: dict, path: str | Path, refuse: bool) -> None:
    """Log how the checkpoint's config differs from this run's; a different model or data raises a
    ``CheckpointError`` naming the keys if ``refuse``, else it is warned about."""
    if not saved or not current:
        return
    diffs, one_sided = config_differences(saved, current)
    diffs = {k: v for k, v in diffs.items() if k.split(".")[0] not in IGNORED_FIELDS}
    identity = {k: v for k, v in diffs.items() if is_identity_field(k)}
    others = {k: v for k, v in diffs.items() if k not in identity}
    if others:
        logger.info("resuming %s with changed settings: %s", path, _fmt_diffs(others))
    if one_sided:
        logger.info("fields only in the checkpoint's config or only in this one (not compared): %s",
                    ", ".join(one_sided))
    if not identity:
        return
    what = (f"{path} was written by a run with another model or data (checkpoint -> this run: "
            f"{_fmt_diffs(identity)})")
    if refuse:
        raise CheckpointError(f"{what}. This output dir holds another experiment: choose a new output_dir, or "
                              f"pass resume={path} to continue that checkpoint under this config deliberately.")
    logger.warning("%s; resuming it as asked (resume=)", what)


def _same_value(a, b) -> bool:
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and a and b:
        return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))
    return False


def _fmt_diffs(diffs: dict[str, tuple]) -> str:
    return ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diffs.items())


# evaluation metrics that are not finite only when the model's outputs are not: a loss, or the kNN monitor's
# accuracy (NaN for non-finite features, crossmae/knn.py). Others may be NaN by definition (e.g. COCO AP of a
# size range without ground truth).
DIVERGENCE_METRICS = ("loss", "*_loss", "knn_top1")


def check_eval_losses(metrics: dict, epoch: int) -> None:
    """``Diverged`` if one of :data:`DIVERGENCE_METRICS` is not finite: the model's outputs are, even where its
    weights are finite but huge."""
    bad = {k: v for k, v in flatten_dict(metrics).items() if isinstance(v, (int, float)) and not math.isfinite(v)
           and any(fnmatch.fnmatchcase(k.rsplit("/", 1)[-1], pattern) for pattern in DIVERGENCE_METRICS)}
    if bad:
        raise Diverged(f"the evaluation after epoch {epoch} gave {', '.join(f'{k}={v}' for k, v in bad.items())}")


def _any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank (every rank must take the same branch of a divergence decision)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)) > 0)


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    if isinstance(first, torch.Tensor):
        return first.shape[0]
    return len(first) if isinstance(first, (list, tuple)) else 1


def _fmt(record: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                     if not isinstance(v, dict)) + (f", eval={record['eval']}" if "eval" in record else "")


def steps_per_epoch(num_batches: int, accum_iter: int) -> int:
    """Optimizer steps per epoch; an incomplete accumulation group at the end of an epoch is dropped."""
    if num_batches < accum_iter:
        raise ValueError(f"{num_batches} batches per epoch cannot fill one accumulation group of {accum_iter}: "
                         f"lower the batch size or accum_iter, or add data")
    return num_batches // accum_iter

