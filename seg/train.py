r"""UperNet semantic segmentation on ADE20K: training and evaluation entry.

    torchrun --nproc_per_node 8 -m seg.train --config configs/seg/upernet_vit_base_ade20k.yaml \
        pretrained=/ckpt/crossmae_vit_base.pth data.path=/data/ADEChallengeData2016 output_dir=out/seg_b
    python -m seg.train --config ... --eval-only weights=out/seg_b/checkpoint.pth

The iteration budget (``max_iters``, mmseg's 160k) runs in the one epoch-based loop as
``max_iters / iters_per_epoch`` "epochs" of exactly ``iters_per_epoch`` optimizer steps each
(:class:`seg.data.IterationSampler`), so the schedule, checkpoints and resume count real iterations.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from crossmae.cli import report_errors
from crossmae.config import load_config, to_dict
from crossmae.engine import load_checkpoint
from crossmae.engine.checkpoint import load_model_state
from crossmae.engine.distributed import barrier
from crossmae.engine.logging import progress_bar
from crossmae.engine.loop import autocast, resolve_precision
from crossmae.engine.task import RunContext, Task, run_task
from crossmae.models.naming import describe_model
from crossmae.pretrain import resolve_accum_iter

from .config import SegConfig
from .data import ADE20KDataset, eval_loader, train_loader
from .inference import inference
from .metrics import SegMetric
from .model import backbone_args, build_upernet, convert_sync_bn, load_pretrained_encoder, seg_loss
from .optim import build_seg_optimizer, mmseg_warmup_poly
from .synthetic import CLASS_NAMES as SYNTHETIC_CLASSES, make_synthetic_ade20k
from .transforms import TestTransform, TrainTransform

logger = logging.getLogger("crossmae")


# what a weights= checkpoint that does not fit the model should lead to
WEIGHTS_HINT = ("weights= takes a trained UperNet of the same model.* config; a pretraining checkpoint goes in "
                "pretrained= instead.")


def resolve_data_root(cfg, out_dir: Path, is_main: bool) -> tuple[Path, list[str] | None]:
    """The dataset root, generating the synthetic set first if asked for; class names if known."""
    if not cfg.data.path:
        raise ValueError("data.path is empty: give the ADEChallengeData2016 root (data.path=/data/ADEChallengeData2016)"
                         " or 'synthetic'")
    if cfg.data.path == "synthetic":
        root = out_dir / "synthetic_data"
        if is_main:
            make_synthetic_ade20k(root, cfg.data.synthetic_train, cfg.data.synthetic_val,  # colour-coded classes:
                                  tuple(cfg.data.synthetic_size), seed=cfg.seed, colour_coded=True)  # a quick demo
        barrier()
        if cfg.model.num_classes != len(SYNTHETIC_CLASSES):
            raise ValueError(f"the synthetic set has {len(SYNTHETIC_CLASSES)} classes; set model.num_classes="
                             f"{len(SYNTHETIC_CLASSES)}")
        return root, list(SYNTHETIC_CLASSES)
    return Path(cfg.data.path).expanduser(), None


def build_model(cfg):
    m = cfg.model
    m.backbone = backbone_args(m.family, m.backbone, cfg.pretrained)  # resolved: the saved config rebuilds it
    return build_upernet(dict(m.backbone), m.num_classes, m.channels, m.aux_channels, m.aux_weight, m.aux_in_index,
                         m.dropout, tuple(m.pool_scales), tuple(m.neck_rescales), m.avg_non_ignore, m.family)


class Evaluator:
    """``evaluate(module) -> {"mIoU", "mAcc", "aAcc"}`` over this rank's share of the validation set,
    reduced over ranks; the full result (per-class IoU/Acc) is kept in ``last``."""

    def __init__(self, cfg, dataset: ADE20KDataset, dist, precision: str):
        self.cfg = cfg
        self.dataset = dataset
        self.dist = dist
        self.precision = precision
        n = len(dataset) if cfg.test.max_images is None else min(cfg.test.max_images, len(dataset))
        subset = dataset if n == len(dataset) else torch.utils.data.Subset(dataset, range(n))
        self.loader = eval_loader(subset, cfg.test.num_workers, dist.rank, dist.world_size)
        self.last: dict = {}

    @torch.no_grad()
    def __call__(self, module: torch.nn.Module, epoch: int | None = None) -> dict:
        cfg, dev = self.cfg, self.dist.device
        was_training = module.training
        module.eval()
        metric = SegMetric(cfg.model.num_classes, class_names=self.dataset.class_names)
        divisor = getattr(module, "size_divisor", 1)

        def logits_fn(x):
            with autocast(self.precision, dev):
                return module(x)

        t0 = time.time()
        for img, label in progress_bar(self.loader, desc="eval", disable=not self.dist.is_main):
            scores = inference(logits_fn, img[None].to(dev, non_blocking=True), cfg.model.num_classes,
                               label.shape[-2:], scale=tuple(cfg.data.scale), ratios=tuple(cfg.test.ratios),
                               flip=cfg.test.flip, mode=cfg.test.mode, crop=cfg.test.crop_size or cfg.data.crop_size,
                               stride=cfg.test.stride, crop_batch=cfg.test.crop_batch, size_divisor=divisor)
            metric.update(scores.argmax(1)[0], label)
        result = metric.compute(dev if dev.type == "cuda" else "cpu")
        result["eval_time_s"] = time.time() - t0
        module.train(was_training)
        self.last = result
        return {k: result[k] for k in ("mIoU", "mAcc", "aAcc")}


def run(cfg) -> dict:
    return run_task(cfg, build_task)


def build_task(ctx: RunContext) -> Task:
    cfg, dist, out_dir = ctx.cfg, ctx.dist, ctx.out_dir
    if cfg.max_iters < 1 or cfg.iters_per_epoch < 1 or cfg.max_iters % cfg.iters_per_epoch:
        raise ValueError(f"max_iters ({cfg.max_iters}) must be a positive multiple of iters_per_epoch "
                         f"({cfg.iters_per_epoch})")
    epochs = cfg.max_iters // cfg.iters_per_epoch
    root, class_names = resolve_data_root(cfg, out_dir, dist.is_main)

    torch.manual_seed(cfg.seed)  # the heads' (and any new backbone part's) initialisation
    model = build_model(cfg)
    pretrained, eval_epoch = cfg.pretrained, None
    if ctx.eval_only:
        weights = ctx.eval_checkpoint()
        ckpt = load_checkpoint(weights)
        load_model_state(model, ckpt, weights, hint=WEIGHTS_HINT)
        pretrained = pretrained or (ckpt.get("config") or {}).get("pretrained", "")
        eval_epoch = ckpt.get("epoch")
        logger.info("evaluating %s", weights)
    elif cfg.weights:
        load_model_state(model, load_checkpoint(cfg.weights), cfg.weights, hint=WEIGHTS_HINT)
        logger.info("initialised the whole model from %s", cfg.weights)
    elif cfg.pretrained:
        load_pretrained_encoder(model, cfg.pretrained)
    else:
        logger.warning("no pretrained checkpoint: the backbone starts from random weights")
    model = convert_sync_bn(model, dist.device, dist.world_size)
    logger.info("UperNet, backbone %s: %.1fM parameters, %d classes", describe_model(model.backbone),
                sum(p.numel() for p in model.parameters()) / 1e6, cfg.model.num_classes)

    d = cfg.data
    val_set = ADE20KDataset(root, d.val_split, TestTransform(), cfg.model.num_classes, d.reduce_zero_label,
                            d.check_sizes, class_names)
    evaluator = Evaluator(cfg, val_set, dist, resolve_precision(cfg.precision, dist.device))
    summary = {"task": "seg", "dataset": cfg.dataset_name or root.name,
               "checkpoint": str(Path(pretrained).resolve()) if pretrained else "",
               "model_description": f"UperNet, {describe_model(model.backbone)} backbone", "config": to_dict(cfg)}

    def results(metrics: dict, trainer) -> dict:
        """The full result of the last evaluation (per class too); the training time where there was training."""
        result = evaluator.last
        summary["metrics"] = ({k: result[k] for k in ("mIoU", "mAcc", "aAcc", "eval_time_s")}
                              | {k: v for k, v in metrics.items() if k == "train_time_s"})
        summary["per_class"] = result["per_class"]
        summary["num_images"] = result["num_images"]
        logger.info("mIoU %.2f  mAcc %.2f  aAcc %.2f on %d images (%s)", result["mIoU"], result["mAcc"],
                    result["aAcc"], result["num_images"], out_dir / "results.json")
        return summary

    if ctx.eval_only:
        return Task("seg", model, results, evaluator, eval_epoch=eval_epoch)
    train_set = ADE20KDataset(root, d.train_split,
                              TrainTransform(d.crop_size, tuple(d.scale), tuple(d.ratio_range), d.cat_max_ratio,
                                             d.flip_prob, d.photometric),
                              cfg.model.num_classes, d.reduce_zero_label, d.check_sizes, class_names,
                              skip_unreadable=True, bad_pairs="skip")
    accum_iter = resolve_accum_iter(cfg.batch_size, cfg.global_batch_size, cfg.accum_iter, dist.world_size)
    loader = train_loader(train_set, cfg.batch_size, cfg.iters_per_epoch * accum_iter, d.num_workers, dist.rank,
                          dist.world_size, cfg.seed, pin_memory=d.pin_memory and dist.device.type == "cuda")
    o = cfg.optim
    optimizer = build_seg_optimizer(model, o.lr, o.weight_decay, betas=o.betas, layer_decay=o.layer_decay,
                                    num_layers=model.backbone.depth if o.layer_decay is not None else None)
    schedule = mmseg_warmup_poly(o.lr, cfg.max_iters, o.warmup_iters, o.power, o.min_lr, o.warmup_ratio)
    logger.info("%d training / %d validation images in %s; batch %d = %d x %d accum x %d processes; %d iterations "
                "= %d epochs of %d (%.1f passes over the data)", len(train_set), len(val_set), root,
                cfg.batch_size * accum_iter * dist.world_size, cfg.batch_size, accum_iter, dist.world_size,
                cfg.max_iters, epochs, cfg.iters_per_epoch,
                cfg.max_iters * cfg.batch_size * accum_iter * dist.world_size / len(train_set))
    return Task("seg", model, results, evaluator, train_loader=loader, optimizer=optimizer, lr_schedule=schedule,
                loss_fn=lambda m, batch: seg_loss(m, *batch), epochs=epochs, accum_iter=accum_iter,
                clip_grad=o.clip_grad, best_metric="mIoU")


def main(config: str | None, overrides: list[str], eval_only: bool = False, resume: str | None = None) -> dict:
    overrides = list(overrides) + (["eval_only=true"] if eval_only else []) + ([f"resume={resume}"] if resume else [])
    return run(load_config(SegConfig, config, overrides))


def cli(argv: list[str] | None = None, prog: str = "seg.train") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML recipe under configs/seg/")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate weights= (or --resume, or <output_dir>/checkpoint.pth) and exit")
    parser.add_argument("--resume", help="training checkpoint to resume (default: <output_dir>/checkpoint.pth)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.path=/data/ADEChallengeData2016")
    args = parser.parse_intermixed_args(argv)  # options may follow key=value overrides
    return report_errors(prog, main, args.config, args.overrides, args.eval_only, args.resume)


if __name__ == "__main__":
    sys.exit(cli())
