"""Linear probing (MAE's protocol): frozen encoder, cls-token (or pooled) feature,
BatchNorm1d(affine=False) + Linear head, LARS (or SGD), RandomResizedCrop + flip.

    crossmae linprobe --config configs/linprobe/vit_base.yaml pretrained=ckpt.pth data.path=/data/imagenet
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

from .classification.common import (build_datasets, check_run_fields, create_model, eval_only_task, make_evaluator,
                                    train_loader, trained_results)
from .classification.config import LinprobeConfig
from .classification.lars import LARS
from .classification.model import describe, init_head, make_linear_probe
from .classification.transforms import eval_transform, linprobe_transform
from .config import load_config
from .engine import steps_per_epoch, warmup_cosine
from .engine.task import RunContext, Task, run_task
from .pretrain import resolve_accum_iter

logger = logging.getLogger("crossmae")


def build_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    params = list(params)
    if name == "lars":
        return LARS(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optim.name must be lars or sgd, got {name!r}")


def probe_loss(model, batch):
    imgs, targets = batch
    return nn.functional.cross_entropy(model(imgs), targets)


def run(cfg) -> dict:
    check_run_fields(cfg)
    if cfg.model.drop_path_rate:  # the encoder runs in train mode (the probe's BatchNorm must): keep it deterministic
        raise ValueError(f"model.drop_path_rate={cfg.model.drop_path_rate}: a frozen encoder takes no drop path, set 0")
    return run_task(cfg, build_task)


def build_task(ctx: RunContext) -> Task:
    cfg, dist = ctx.cfg, ctx.dist
    model, arch, pretrained = create_model(cfg)
    model = make_linear_probe(model)
    train_set, val_set = build_datasets(cfg, ctx.out_dir, dist.is_main, linprobe_transform(arch["img_size"]),
                                        eval_transform(arch["img_size"], cfg.crop_pct), None,
                                        need_train=not ctx.eval_only)
    evaluator = make_evaluator(cfg, val_set, dist)
    if ctx.eval_only:
        return eval_only_task("linprobe", ctx, model, evaluator, pretrained)

    init_head(model, std=0.01)
    accum_iter = resolve_accum_iter(cfg.batch_size, cfg.global_batch_size, cfg.accum_iter, dist.world_size)
    loader = train_loader(cfg, train_set, dist)
    effective_batch = cfg.batch_size * accum_iter * dist.world_size
    lr = cfg.optim.lr if cfg.optim.lr is not None else cfg.optim.blr * effective_batch / 256
    optimizer = build_optimizer(cfg.optim.name, model.head.parameters(), lr, cfg.optim.weight_decay,
                                cfg.optim.momentum)
    n_steps = steps_per_epoch(len(loader), accum_iter)
    schedule = warmup_cosine(lr, cfg.optim.min_lr, cfg.epochs * n_steps, int(cfg.optim.warmup_epochs * n_steps))
    logger.info("linear probe on %s features of %s; %d classes; %s", cfg.model.global_pool, describe(arch),
                cfg.data.nb_classes, "RANDOM encoder (control)" if cfg.random_init else f"encoder from {pretrained}")
    logger.info("%d train / %d val images; effective batch %d = %d x %d accum x %d processes; %s lr %.3g; "
                "%d steps/epoch", len(train_set), len(val_set), effective_batch, cfg.batch_size, accum_iter,
                dist.world_size, cfg.optim.name, lr, n_steps)
    return Task("linprobe", model, trained_results("linprobe", "linear probe", cfg, pretrained), evaluator,
                train_loader=loader, optimizer=optimizer, lr_schedule=schedule, loss_fn=probe_loss, epochs=cfg.epochs,
                accum_iter=accum_iter, best_metric="top1")


def main(config: str | None, overrides: list[str]) -> dict:
    return run(load_config(LinprobeConfig, config, overrides))
