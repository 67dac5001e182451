"""End-to-end fine-tuning of a pretrained CrossMAE/MAE encoder for classification (MAE's recipe,
the paper's Table 11): layer-wise lr decay, RandAugment, mixup/cutmix, label smoothing, drop path.

    crossmae finetune --config configs/finetune/vit_base.yaml pretrained=ckpt.pth data.path=/data/imagenet
    crossmae finetune --config configs/finetune/vit_base.yaml eval_only=true resume=output/finetune/checkpoint-best.pth
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from .classification.common import (build_datasets, check_run_fields, create_model, load_trained, make_evaluator,
                                    train_loader, write_results)
from .classification.config import FinetuneConfig
from .classification.model import describe, init_head
from .classification.transforms import build_criterion, build_mixup, eval_transform, finetune_transform
from .config import load_config, save_config, to_dict
from .engine import Trainer, build_adamw, init_distributed, steps_per_epoch, warmup_cosine
from .engine.logging import setup_logging
from .engine.results import previous_metrics, rerun_metrics
from .pretrain import resolve_accum_iter

logger = logging.getLogger("crossmae")


def make_loss(mixup, criterion) -> Callable:
    def loss_fn(model, batch):
        imgs, targets = batch
        if mixup is not None:
            imgs, targets = mixup(imgs, targets)
        return criterion(model(imgs), targets)
    return loss_fn


def evaluate_only(cfg, model, evaluator, out_dir: Path, dist, pretrained: str, task: str) -> dict:
    """Evaluate the trained classifier in ``cfg.resume``; results.json names the pretraining checkpoint
    it came from when its config recorded one."""
    ckpt = load_trained(model, cfg.resume)
    model.to(dist.device)
    start = time.time()
    metrics = evaluator(model)
    metrics["eval_time_s"] = time.time() - start
    recorded = (ckpt.get("config") or {}).get("pretrained")
    if recorded:  # what the classifier was actually trained from
        pretrained = recorded
    logger.info("%s on %d images: top1 %.2f  top5 %.2f", cfg.resume, metrics["num_samples"], metrics["top1"],
                metrics["top5"])
    return write_results(cfg, task, out_dir, metrics, pretrained, dist.is_main,
                         evaluated=str(Path(cfg.resume).resolve()))


def run(cfg, dataset_fn: Callable | None = None, task: str = "finetune") -> dict:
    """``dataset_fn(data_cfg, split, transform)`` supplies other datasets (cls_transfer); default ImageFolder."""
    check_run_fields(cfg)
    a = cfg.aug
    mixup_on = a.mixup > 0 or a.cutmix > 0 or a.cutmix_minmax is not None
    if mixup_on and cfg.batch_size % 2:
        raise ValueError(f"mixup/cutmix pair samples within a batch: batch_size must be even, got {cfg.batch_size}")
    dist = init_distributed(cfg.device)
    out_dir = Path(cfg.output_dir)
    setup_logging(out_dir)
    model, arch, pretrained = create_model(cfg)
    img_size = arch["img_size"]
    train_set, val_set = build_datasets(
        cfg, out_dir, dist.is_main,
        finetune_transform(img_size, a.auto_augment, a.color_jitter, a.reprob, a.remode, a.recount),
        eval_transform(img_size, a.crop_pct), dataset_fn, need_train=not cfg.eval_only)
    evaluator = make_evaluator(cfg, val_set, dist)
    if cfg.eval_only:
        return evaluate_only(cfg, model, evaluator, out_dir, dist, pretrained, task)

    init_head(model, std=2e-5)
    accum_iter = resolve_accum_iter(cfg.batch_size, cfg.global_batch_size, cfg.accum_iter, dist.world_size)
    loader = train_loader(cfg, train_set, dist)
    effective_batch = cfg.batch_size * accum_iter * dist.world_size
    lr = cfg.optim.lr if cfg.optim.lr is not None else cfg.optim.blr * effective_batch / 256
    decay = dict(layer_decay=cfg.optim.layer_decay, num_layers=arch["depth"]) if cfg.optim.layer_decay else {}
    optimizer = build_adamw(model, lr, cfg.optim.weight_decay, betas=cfg.optim.betas, **decay)
    n_steps = steps_per_epoch(len(loader), accum_iter)
    schedule = warmup_cosine(lr, cfg.optim.min_lr, cfg.epochs * n_steps, int(cfg.optim.warmup_epochs * n_steps))
    mixup = build_mixup(cfg.data.nb_classes, a.mixup, a.cutmix, a.cutmix_minmax, a.mixup_prob, a.mixup_switch_prob,
                        a.mixup_mode, a.smoothing)
    logger.info("%s: %s, %.1fM parameters, pool %s, drop path %.2f; %d classes", task, describe(arch),
                sum(p.numel() for p in model.parameters()) / 1e6, cfg.model.global_pool, cfg.model.drop_path_rate,
                cfg.data.nb_classes)
    logger.info("%d train / %d val images; effective batch %d = %d x %d accum x %d processes; lr %.3g; "
                "%d steps/epoch", len(train_set), len(val_set), effective_batch, cfg.batch_size, accum_iter,
                dist.world_size, lr, n_steps)
    trainer = Trainer(model=model, optimizer=optimizer, train_loader=loader, lr_schedule=schedule,
                      loss_fn=make_loss(mixup, build_criterion(mixup, a.smoothing)), epochs=cfg.epochs,
                      output_dir=out_dir, dist=dist, accum_iter=accum_iter, clip_grad=cfg.optim.clip_grad,
                      precision=cfg.precision, compile=cfg.compile, evaluate=evaluator, eval_every=cfg.eval_every,
                      best_metric="top1", save_every=cfg.save_every, keep_every=cfg.keep_every, config=to_dict(cfg),
                      seed=cfg.seed, log_every=cfg.log_every)
    if dist.is_main:
        save_config(cfg, out_dir / "config.yaml")
    trainer.auto_resume(cfg.resume)
    trained = trainer.start_epoch < cfg.epochs
    start = time.time()
    final = trainer.fit()
    if not final:  # resumed a finished run: evaluate it once more
        final = evaluator(trainer.module)
    # a re-run of a finished run keeps the training time of the run that trained
    metrics = rerun_metrics(trained, final, previous_metrics(out_dir / "results.json", task), time.time() - start)
    if trainer.best is not None:
        metrics["best_top1"] = trainer.best
    logger.info("%s done: top1 %.2f (best %.2f), top5 %.2f", task, final["top1"], trainer.best or final["top1"],
                final["top5"])
    return write_results(cfg, task, out_dir, metrics, pretrained, dist.is_main)


def main(config: str | None, overrides: list[str]) -> dict:
    return run(load_config(FinetuneConfig, config, overrides))
