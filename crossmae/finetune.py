"""End-to-end fine-tuning of a pretrained CrossMAE/MAE encoder for classification (MAE's recipe,
the paper's Table 11): layer-wise lr decay, RandAugment, mixup/cutmix, label smoothing, drop path.

    crossmae finetune --config configs/finetune/vit_base.yaml pretrained=ckpt.pth data.path=/data/imagenet
    crossmae finetune --config configs/finetune/vit_base.yaml eval_only=true resume=output/finetune/checkpoint-best.pth
"""
from __future__ import annotations

import logging
from typing import Callable

from .classification.common import (build_datasets, check_run_fields, create_model, eval_only_task, make_evaluator,
                                    train_loader, trained_results)
from .classification.config import FinetuneConfig
from .classification.model import describe, init_head
from .classification.transforms import build_criterion, build_mixup, eval_transform, finetune_transform
from .config import load_config
from .engine import build_adamw, steps_per_epoch, warmup_cosine
from .engine.task import RunContext, Task, run_task
from .pretrain import resolve_accum_iter

logger = logging.getLogger("crossmae")


def make_loss(mixup, criterion) -> Callable:
    def loss_fn(model, batch):
        imgs, targets = batch
        if mixup is not None:
            imgs, targets = mixup(imgs, targets)
        return criterion(model(imgs), targets)
    return loss_fn


def run(cfg, dataset_fn: Callable | None = None, task: str = "finetune") -> dict:
    """``dataset_fn(data_cfg, split, transform)`` supplies other datasets (cls_transfer); default ImageFolder."""
    check_run_fields(cfg)
    a = cfg.aug
    mixup_on = a.mixup > 0 or a.cutmix > 0 or a.cutmix_minmax is not None
    if mixup_on and cfg.batch_size % 2:
        raise ValueError(f"mixup/cutmix pair samples within a batch: batch_size must be even, got {cfg.batch_size}")
    return run_task(cfg, lambda ctx: build_task(ctx, dataset_fn, task))


def build_task(ctx: RunContext, dataset_fn: Callable | None, name: str) -> Task:
    cfg, dist, a = ctx.cfg, ctx.dist, ctx.cfg.aug
    model, arch, pretrained = create_model(cfg)
    img_size = arch["img_size"]
    train_set, val_set = build_datasets(
        cfg, ctx.out_dir, dist.is_main,
        finetune_transform(img_size, a.auto_augment, a.color_jitter, a.reprob, a.remode, a.recount),
        eval_transform(img_size, a.crop_pct), dataset_fn, need_train=not ctx.eval_only)
    evaluator = make_evaluator(cfg, val_set, dist)
    if ctx.eval_only:
        return eval_only_task(name, ctx, model, evaluator, pretrained)

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
    logger.info("%s: %s, %.1fM parameters, pool %s, drop path %.2f; %d classes", name, describe(arch),
                sum(p.numel() for p in model.parameters()) / 1e6, cfg.model.global_pool, cfg.model.drop_path_rate,
                cfg.data.nb_classes)
    logger.info("%d train / %d val images; effective batch %d = %d x %d accum x %d processes; lr %.3g; "
                "%d steps/epoch", len(train_set), len(val_set), effective_batch, cfg.batch_size, accum_iter,
                dist.world_size, lr, n_steps)
    return Task(name, model, trained_results(name, name, cfg, pretrained), evaluator, train_loader=loader,
                optimizer=optimizer, lr_schedule=schedule, loss_fn=make_loss(mixup, build_criterion(mixup, a.smoothing)),
                epochs=cfg.epochs, accum_iter=accum_iter, clip_grad=cfg.optim.clip_grad, best_metric="top1")


def main(config: str | None, overrides: list[str]) -> dict:
    return run(load_config(FinetuneConfig, config, overrides))
