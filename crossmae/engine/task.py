"""One run of a task, start to end. Pretraining, fine-tuning, linear probing, detection and segmentation
build their own parts (:class:`Task`); :func:`run_task` owns the sequence they share:

    init_distributed -> setup_logging -> claim the output dir -> build the task, then
    eval_only: evaluate the weights the task loaded -> results.json
    training:  Trainer -> config.yaml -> auto-resume -> fit -> (re-evaluate a finished run) -> results.json

Run settings every task schema has (``output_dir``, ``device``, ``resume``, ``precision``, ``seed``,
``save_every``, ``keep_every``, ``log_every``) are read from the config here; ``compile`` and ``eval_every``
too where the schema has them (eager, and every epoch, where it does not).

Eval-only, one convention for every task that evaluates: the config field ``eval_only=true`` evaluates the
checkpoint named by ``weights=`` (where the schema has it), else ``resume=``, else ``<output_dir>/checkpoint.pth``
(:meth:`RunContext.eval_checkpoint`); the task loads it into its model while it builds.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from ..config import save_config, to_dict
from .distributed import DistInfo, init_distributed
from .logging import setup_logging, write_json
from .loop import Evaluator, LossFn, Trainer
from .results import previous_metrics, rerun_metrics
from .rundir import lock_run_dir

logger = logging.getLogger("crossmae")


@dataclass
class RunContext:
    """What a task's builder is given: the config, the processes, the output dir, and whether it evaluates only."""
    cfg: Any
    dist: DistInfo
    out_dir: Path
    eval_only: bool

    def eval_checkpoint(self) -> str:
        """The checkpoint an eval-only run evaluates: ``weights``, else ``resume``, else the run's own last one."""
        return getattr(self.cfg, "weights", "") or self.cfg.resume or str(self.out_dir / "checkpoint.pth")


@dataclass
class Task:
    """What one task is made of. ``results(metrics, trainer)`` turns the final metrics into results.json
    (``trainer`` is None in an eval-only run) and logs the task's closing lines; it runs on every rank,
    results.json is written by rank 0. The training fields are left unset by an eval-only run."""
    name: str  # results.json's "task": a re-run carries over training-only metrics of the same task only
    model: nn.Module
    results: Callable[[dict, "Trainer | None"], dict]
    evaluate: Evaluator | None = None  # (model, epochs trained) -> metrics
    eval_epoch: int | None = None  # eval-only: the epoch of the evaluated checkpoint, if it records one
    train_loader: Any = None
    optimizer: Any = None
    lr_schedule: Callable[[int], float] | None = None
    loss_fn: LossFn | None = None
    epochs: int = 0
    accum_iter: int = 1
    clip_grad: float | None = None
    best_metric: str | None = None  # kept as checkpoint-best.pth when it improves
    find_unused_parameters: bool = False
    checkpoint_config: dict | None = None  # the config recorded in checkpoints; default: the run's
    before_fit: Callable[[Trainer], None] | None = None  # after resuming, e.g. what is measured before training


def claim_run_dir(out_dir: Path, dist: DistInfo) -> None:
    """Rank 0 takes the output dir's lock and removes what killed runs left there (``rundir.lock_run_dir``):
    a second run on the same directory stops here, before anything is written."""
    if dist.is_main:
        lock_run_dir(out_dir)


def run_task(cfg, build: Callable[[RunContext], Task]) -> dict:
    """Run ``build(context)``'s task under ``cfg``; returns what results.json holds."""
    dist = init_distributed(cfg.device)
    out_dir = Path(cfg.output_dir)
    setup_logging(out_dir)
    claim_run_dir(out_dir, dist)  # after the log file is set up: the lock's warnings (stale lock, leftovers) reach it
    ctx = RunContext(cfg, dist, out_dir, eval_only=bool(getattr(cfg, "eval_only", False)))
    task = build(ctx)
    if ctx.eval_only:
        task.model.to(dist.device)
        summary = task.results(task.evaluate(task.model, task.eval_epoch), None)
    else:
        summary = task.results(*_train(cfg, task, dist, out_dir))
    if dist.is_main:
        write_json(out_dir / "results.json", summary)
    return summary


def _train(cfg, task: Task, dist: DistInfo, out_dir: Path) -> tuple[dict, Trainer]:
    trainer = Trainer(model=task.model, optimizer=task.optimizer, train_loader=task.train_loader,
                      lr_schedule=task.lr_schedule, loss_fn=task.loss_fn, epochs=task.epochs, output_dir=out_dir,
                      dist=dist, accum_iter=task.accum_iter, clip_grad=task.clip_grad, precision=cfg.precision,
                      compile=getattr(cfg, "compile", False), evaluate=task.evaluate,
                      eval_every=getattr(cfg, "eval_every", 1), best_metric=task.best_metric,
                      save_every=cfg.save_every, keep_every=cfg.keep_every,
                      config=task.checkpoint_config or to_dict(cfg), seed=cfg.seed, log_every=cfg.log_every,
                      find_unused_parameters=task.find_unused_parameters)
    if dist.is_main:
        save_config(cfg, out_dir / "config.yaml")
    trainer.auto_resume(cfg.resume)
    if task.before_fit is not None:
        task.before_fit(trainer)
    trained = trainer.start_epoch < task.epochs
    start = time.time()
    final = dict(trainer.fit())
    if not final and task.evaluate is not None:  # a finished run re-run: evaluate its checkpoint once more
        final = task.evaluate(trainer.module, trainer.start_epoch)
    # a re-run of a finished run keeps what only training measured (its time) from the previous results
    metrics = rerun_metrics(trained, final, previous_metrics(out_dir / "results.json", task.name), time.time() - start)
    return metrics, trainer
