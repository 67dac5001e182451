"""What fine-tuning and linear probing share: model from a checkpoint, data, evaluation, results."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import torch

from ..config import to_dict
from ..data import build_loader
from ..data.shards import build_eval_loader
from ..engine.checkpoint import load_checkpoint, load_model_state, model_state
from ..engine.loop import Evaluator
from ..engine.task import RunContext, Task
from .data import check_classes, check_same_classes, dataset_name, imagefolder_dataset, resolve_demo
from .evaluate import evaluate
from .model import ARCH_FIELDS, build_classifier, describe, load_encoder, resolve_arch

logger = logging.getLogger("crossmae")


def check_run_fields(cfg) -> None:
    if cfg.batch_size < 1 or cfg.epochs < 1:
        raise ValueError(f"batch_size and epochs must be >= 1, got {cfg.batch_size} and {cfg.epochs}")
    if cfg.eval_only and not cfg.resume:
        raise ValueError("eval_only=true evaluates a trained classifier: give resume=<checkpoint>")
    if not cfg.eval_only and not cfg.pretrained and not cfg.random_init:
        raise ValueError("no pretrained checkpoint: set pretrained=<pretraining checkpoint>, or random_init=true "
                         "(with model.arch) for a randomly initialised control")
    if cfg.data.nb_classes < 2:
        raise ValueError(f"data.nb_classes must be >= 2, got {cfg.data.nb_classes}")


def create_model(cfg) -> tuple[torch.nn.Module, dict, str]:
    """The classifier described by cfg.model, with the pretrained encoder loaded (unless random_init).
    Writes the resolved architecture back into cfg.model so saved configs are self-contained.
    Returns (model, architecture, absolute pretrained path or '')."""
    ckpt, path = None, ""
    if cfg.pretrained:
        path = str(Path(cfg.pretrained).expanduser().resolve())
        if not cfg.eval_only:
            cfg.pretrained = path  # saved configs name the file absolutely
    if cfg.eval_only:  # the trained classifier records its architecture; the pretraining file is not needed
        ckpt = load_checkpoint(cfg.resume)
    elif cfg.pretrained:
        ckpt = load_checkpoint(path)
    elif cfg.model.arch == "auto" and cfg.resume:  # resume of a run whose config recorded the arch
        ckpt = load_checkpoint(cfg.resume)
    arch = resolve_arch(cfg.model, ckpt)
    for k, v in arch.items():
        setattr(cfg.model, k, v)
    torch.manual_seed(cfg.seed)  # the fresh head (and a random_init encoder) is reproducible
    model = build_classifier(cfg.data.nb_classes, global_pool=cfg.model.global_pool,
                             drop_path_rate=cfg.model.drop_path_rate, **arch)
    if cfg.pretrained and not cfg.random_init and not cfg.eval_only:  # eval_only loads the trained weights
        load_encoder(model, model_state(ckpt, path), source=path)
    elif cfg.random_init:
        logger.warning("random_init=true: the encoder keeps its random initialisation (a control run)")
    return model, arch, path


def build_datasets(cfg, out_dir: Path, is_main: bool, train_tf, eval_tf, dataset_fn: Callable | None,
                   need_train: bool = True):
    dataset_fn = dataset_fn or imagefolder_dataset
    resolve_demo(cfg.data, out_dir, is_main)
    if not cfg.data.path:
        raise ValueError("data.path is empty: give the dataset root (e.g. data.path=/data/imagenet) or 'demo'")
    val = dataset_fn(cfg.data, "val", eval_tf)
    if hasattr(val, "skip_unreadable"):  # evaluation: an unreadable image is an error, never a substitute
        val.skip_unreadable = False
    if hasattr(val, "check_headers"):  # ... found before training rather than at the first evaluation
        val.check_headers()
    check_classes(val, cfg.data.nb_classes, f"{dataset_name(cfg.data)} val")
    train = None
    if need_train:
        train = dataset_fn(cfg.data, "train", train_tf)
        check_classes(train, cfg.data.nb_classes, f"{dataset_name(cfg.data)} train")
        check_same_classes(train, val)
    return train, val


def train_loader(cfg, dataset, dist):
    return build_loader(dataset, cfg.batch_size, cfg.data.num_workers, dist.rank, dist.world_size, cfg.seed,
                        pin_memory=cfg.data.pin_memory and dist.device.type == "cuda")


def make_evaluator(cfg, val, dist) -> Evaluator:
    loader = build_eval_loader(val, cfg.eval_batch_size or cfg.batch_size, cfg.data.num_workers, dist.rank,
                               dist.world_size, pin_memory=cfg.data.pin_memory and dist.device.type == "cuda")
    return lambda module, epoch: evaluate(module, loader, dist.device, cfg.precision, expected=len(val))


def load_trained(model: torch.nn.Module, path: str) -> dict:
    """Weights of a trained classifier (our checkpoint, or a bare/official ``{"model": ...}`` file), strict."""
    ckpt = load_checkpoint(path)
    state = {k.removeprefix("module."): v for k, v in model_state(ckpt, path).items()}
    load_model_state(model, {**ckpt, "model": state}, path,
                     hint="Use the model.arch, global_pool and data.nb_classes of the run that wrote it.")
    return ckpt


def eval_only_task(name: str, ctx: RunContext, model: torch.nn.Module, evaluator: Evaluator, pretrained: str) -> Task:
    """Evaluate the trained classifier ``ctx.eval_checkpoint()`` (``resume=``); results.json names the
    pretraining checkpoint it came from when its config recorded one."""
    cfg, path = ctx.cfg, ctx.eval_checkpoint()
    ckpt = load_trained(model, path)
    pretrained = (ckpt.get("config") or {}).get("pretrained") or pretrained  # what it was actually trained from

    def timed(module, epoch) -> dict:
        start = time.time()
        return {**evaluator(module, epoch), "eval_time_s": time.time() - start}

    def results(metrics: dict, trainer) -> dict:
        logger.info("%s on %d images: top1 %.2f  top5 %.2f", path, metrics["num_samples"], metrics["top1"],
                    metrics["top5"])
        return results_summary(cfg, name, metrics, pretrained, evaluated=str(Path(path).resolve()))
    return Task(name, model, results, timed, eval_epoch=ckpt.get("epoch"))


def trained_results(name: str, label: str, cfg, pretrained: str) -> Callable:
    """``Task.results`` of a training run: the best top-1 beside the final one; ``label`` names it in the log."""
    def results(metrics: dict, trainer) -> dict:
        if trainer.best is not None:
            metrics["best_top1"] = trainer.best
        logger.info("%s done: top1 %.2f (best %.2f), top5 %.2f", label, metrics["top1"],
                    trainer.best or metrics["top1"], metrics["top5"])
        return results_summary(cfg, name, metrics, pretrained)
    return results


def results_summary(cfg, task: str, metrics: dict, pretrained: str, **extra) -> dict:
    # a random-init control has no pretraining checkpoint, whatever architecture it borrowed
    summary = {"task": task, "dataset": dataset_name(cfg.data), "checkpoint": "" if cfg.random_init else pretrained,
               "random_init": bool(cfg.random_init), "metrics": metrics, "config": to_dict(cfg), **extra}
    arch = {k: getattr(cfg.model, k, None) for k in (*ARCH_FIELDS, "family", "hiera")}  # resolved by create_model
    if arch["family"] == "hiera" or all(arch[k] is not None for k in ARCH_FIELDS):
        summary["model_description"] = describe(arch)
    return summary
