"""Linear probing (MAE's protocol): frozen encoder, cls-token (or pooled) feature,
BatchNorm1d(affine=False) + Linear head, LARS (or SGD), RandomResizedCrop + flip.

    crossmae linprobe --config configs/linprobe/vit_base.yaml pretrained=ckpt.pth data.path=/data/imagenet
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn as nn

from .classification.common import (build_datasets, check_run_fields, create_model, make_evaluator, train_loader,
                                    write_results)
from .classification.config import LinprobeConfig
from .classification.lars import LARS
from .classification.model import describe, init_head, make_linear_probe
from .classification.transforms import eval_transform, linprobe_transform
from .config import load_config, save_config, to_dict
from .engine import Trainer, init_distributed, steps_per_epoch, warmup_cosine
from .engine.logging import setup_logging
from .engine.results import previous_metrics, rerun_metrics
from .finetune import evaluate_only
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
    dist = init_distributed(cfg.device)
    out_dir = Path(cfg.output_dir)
    setup_logging(out_dir)
    model, arch, pretrained = create_model(cfg)
    model = make_linear_probe(model)
    train_set, val_set = build_datasets(cfg, out_dir, dist.is_main, linprobe_transform(arch["img_size"]),
                                        eval_transform(arch["img_size"], cfg.crop_pct), None,
                                        need_train=not cfg.eval_only)
    evaluator = make_evaluator(cfg, val_set, dist)
    if cfg.eval_only:
        return evaluate_only(cfg, model, evaluator, out_dir, dist, pretrained, "linprobe")

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
    trainer = Trainer(model=model, optimizer=optimizer, train_loader=loader, lr_schedule=schedule,
                      loss_fn=probe_loss, epochs=cfg.epochs, output_dir=out_dir, dist=dist, accum_iter=accum_iter,
                      precision=cfg.precision, compile=cfg.compile, evaluate=evaluator,
                      eval_every=cfg.eval_every, best_metric="top1", save_every=cfg.save_every,
                      keep_every=cfg.keep_every, config=to_dict(cfg), seed=cfg.seed, log_every=cfg.log_every)
    if dist.is_main:
        save_config(cfg, out_dir / "config.yaml")
    trainer.auto_resume(cfg.resume)
    trained = trainer.start_epoch < cfg.epochs
    start = time.time()
    final = trainer.fit() or evaluator(model)
    # a re-run of a finished run keeps the training time of the run that trained
    metrics = rerun_metrics(trained, final, previous_metrics(out_dir / "results.json", "linprobe"),
                            time.time() - start)
    if trainer.best is not None:
        metrics["best_top1"] = trainer.best
    logger.info("linear probe done: top1 %.2f (best %.2f), top5 %.2f", final["top1"], trainer.best or final["top1"],
                final["top5"])
    return write_results(cfg, "linprobe", out_dir, metrics, pretrained, dist.is_main)


def main(config: str | None, overrides: list[str]) -> dict:
    return run(load_config(LinprobeConfig, config, overrides))
