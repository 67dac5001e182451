"""ViTDet Mask R-CNN training and evaluation on COCO-format data.

    python -m det.train --config configs/det/vitdet_b_100ep.yaml data.root=/data/coco pretrained=/ckpt/crossmae_b.pth
    python -m det.train --config configs/det/vitdet_b_100ep.yaml --eval-only weights=/runs/det_b/checkpoint.pth
    (--eval-only is the override eval_only=true)
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import torch

from crossmae.cli import report_errors
from crossmae.config import load_config, to_dict
from crossmae.data import build_loader
from crossmae.data.shards import build_eval_loader
from crossmae.engine import build_adamw, load_checkpoint, steps_per_epoch, warmup_step
from crossmae.engine.checkpoint import load_model_state
from crossmae.engine.loop import autocast, resolve_precision
from crossmae.engine.task import RunContext, Task, run_task
from crossmae.models.naming import describe_model

from .backbone import build_net, load_encoder
from .coco import CocoInstances, collate
from .config import DetConfig
from .evaluation import CocoEvaluator
from .modeling import build_mask_rcnn
from .transforms import LargeScaleJitter

logger = logging.getLogger("crossmae")


def det_loss(model, batch):
    images, targets = batch
    losses = model(images, targets)
    return sum(losses.values()), {k: v.detach() for k, v in losses.items()}


def build_datasets(cfg, out_dir: Path, is_main: bool, world_size: int, with_train: bool = True):
    """(root, train set or None, val set); ``data.root=synthetic`` generates the set first."""
    root = cfg.data.root
    if not root:
        raise ValueError("data.root is empty: give a COCO root (data.root=/data/coco) or 'synthetic'")
    if root == "synthetic":
        from .synthetic import make_split
        root = out_dir / "synthetic_coco"
        if is_main and not (root / "annotations" / f"instances_{cfg.data.val_split}.json").is_file():
            # colour-coded classes: learnable from scratch in a short run (the shape-only set is the toy preset's)
            make_split(root, cfg.data.train_split, cfg.data.synthetic_train, cfg.data.synthetic_size, cfg.seed,
                       empty_every=25, colour_coded=True)
            make_split(root, cfg.data.val_split, cfg.data.synthetic_val, cfg.data.synthetic_size, cfg.seed + 1,
                       colour_coded=True)
        if world_size > 1:
            torch.distributed.barrier()
    root = Path(root).expanduser()
    ann = root / "annotations"
    val = CocoInstances(root / cfg.data.val_split, ann / f"instances_{cfg.data.val_split}.json", with_targets=False)
    if not with_train:
        return root, None, val
    # evaluation refuses missing or unreadable images and malformed annotations (AP needs every one, as they
    # are); training skips and counts them
    train = CocoInstances(root / cfg.data.train_split, ann / f"instances_{cfg.data.train_split}.json",
                          LargeScaleJitter(cfg.image_size, cfg.data.min_scale, cfg.data.max_scale), filter_empty=True,
                          missing_images="skip", skip_unreadable=True, bad_annotations="skip")
    if train.cat_ids != val.cat_ids:
        raise ValueError(f"train and val category ids differ: {train.cat_ids} vs {val.cat_ids}")
    return root, train, val


def build_detector(cfg, num_classes: int) -> torch.nn.Module:
    m = cfg.model
    net = build_net(m, cfg.image_size, cfg.pretrained)
    return build_mask_rcnn(
        net, num_classes=num_classes, image_size=cfg.image_size,
        fpn_channels=m.fpn_channels, anchor_sizes=tuple(m.anchor_sizes), box_head_convs=m.box_head_convs,
        box_head_fc=m.box_head_fc, mask_head_convs=m.mask_head_convs,
        rpn_pre_nms_top_n_train=m.rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test=m.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=m.rpn_post_nms_top_n_train, rpn_post_nms_top_n_test=m.rpn_post_nms_top_n_test,
        box_batch_size_per_image=m.box_batch_size_per_image,
        box_score_thresh=m.box_score_thresh, detections_per_img=m.detections_per_img, canonical_scale=m.canonical_scale,
        head_init=m.head_init)


def run(cfg, eval_only: bool = False) -> dict:
    if eval_only:  # the keyword predates the eval_only config field every task has
        warnings.warn("det.train.run(cfg, eval_only=True) is deprecated: set cfg.eval_only = True (eval_only=true)",
                      DeprecationWarning, stacklevel=2)
        cfg.eval_only = True
    return run_task(cfg, build_task)


def build_task(ctx: RunContext) -> Task:
    cfg, dist, out_dir = ctx.cfg, ctx.dist, ctx.out_dir
    if cfg.batch_size < 1 or cfg.epochs < 1:
        raise ValueError(f"batch_size and epochs must be >= 1, got {cfg.batch_size} and {cfg.epochs}")
    root, train_set, val_set = build_datasets(cfg, out_dir, dist.is_main, dist.world_size,
                                              with_train=not ctx.eval_only)
    torch.manual_seed(cfg.seed)  # the same detector initialisation on every rank and every run
    model = build_detector(cfg, val_set.num_classes)
    pretrained = ""
    if cfg.pretrained and not ctx.eval_only:
        pretrained = str(Path(cfg.pretrained).resolve())
        load_encoder(model.backbone.net, pretrained)
    model.to(dist.device)

    val_loader = build_eval_loader(val_set, cfg.eval_batch_size, cfg.data.num_workers, dist.rank, dist.world_size,
                                   collate_fn=collate)
    precision = resolve_precision(cfg.precision, dist.device)
    evaluator = CocoEvaluator(val_loader, val_set.coco.dataset, val_set.cat_ids, dist.device, dist.rank,
                              backend=cfg.eval_backend, precision_ctx=autocast(precision, dist.device))
    summary = {"task": "det", "dataset": cfg.data.name or root.name, "checkpoint": pretrained,
               "model_description": f"ViTDet Mask R-CNN, {describe_model(model.backbone.net)} backbone",
               "config": to_dict(cfg)}

    def results(metrics: dict, trainer) -> dict:
        summary["metrics"] = metrics
        if trainer is not None:
            logger.info("box AP %.2f, mask AP %.2f -> %s", metrics.get("bbox_AP", float("nan")),
                        metrics.get("segm_AP", float("nan")), out_dir / "results.json")
        return summary

    if ctx.eval_only:
        weights = ctx.eval_checkpoint()
        ckpt = load_checkpoint(weights)
        load_model_state(model, ckpt, weights, hint="--eval-only takes a trained detector of the same model.* "
                         "config; a pretraining checkpoint goes in pretrained= instead.")
        summary["checkpoint"] = str((ckpt.get("config") or {}).get("pretrained", "") or "")
        summary["weights"] = str(Path(weights).resolve())
        logger.info("evaluating %s on %d images of %s", weights, len(val_set), val_set.ann_file)
        return Task("det", model, results, lambda module, epoch: evaluator(module), eval_epoch=ckpt.get("epoch"))

    train_loader = build_loader(train_set, cfg.batch_size, cfg.data.num_workers, dist.rank, dist.world_size,
                                cfg.seed, pin_memory=dist.device.type == "cuda", collate_fn=collate)
    optimizer = build_adamw(model, cfg.optim.lr, cfg.optim.weight_decay, betas=cfg.optim.betas,
                            layer_decay=cfg.optim.layer_decay, num_layers=model.backbone.net.depth)
    n_steps = steps_per_epoch(len(train_loader), 1)
    total = cfg.epochs * n_steps
    schedule = warmup_step(cfg.optim.lr, total, cfg.optim.warmup_iters, cfg.optim.milestones, cfg.optim.gamma,
                           cfg.optim.warmup_factor)
    logger.info("ViTDet, backbone %s: %.1fM parameters, %d classes, %d train images (%d steps/epoch x %d epochs = "
                "%d iters), %d val images, batch %d x %d processes", describe_model(model.backbone.net),
                sum(p.numel() for p in model.parameters()) / 1e6, train_set.num_classes, len(train_set), n_steps,
                cfg.epochs, total, len(val_set), cfg.batch_size, dist.world_size)
    config = to_dict(cfg)
    config["pretrained"] = pretrained  # checkpoints name the pretraining file absolutely
    return Task("det", model, results, lambda module, epoch: evaluator(module), train_loader=train_loader,
                optimizer=optimizer, lr_schedule=schedule, loss_fn=det_loss, epochs=cfg.epochs,
                clip_grad=cfg.optim.clip_grad, best_metric="bbox_AP",
                find_unused_parameters=cfg.find_unused_parameters, checkpoint_config=config)


def main(config: str | None, overrides: list[str], eval_only: bool = False) -> dict:
    """``eval_only``: the ``--eval-only`` flag, the same as the override ``eval_only=true``."""
    return run(load_config(DetConfig, config, list(overrides) + (["eval_only=true"] if eval_only else [])))


def cli(argv: list[str] | None = None, prog: str = "train_vitdet") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML recipe under configs/det/")
    p.add_argument("--eval-only", action="store_true", help="evaluate `weights` (default <output_dir>/checkpoint.pth)")
    p.add_argument("--resume", help="resume training from this checkpoint (default: <output_dir>/checkpoint.pth "
                                    "if it exists)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=/data/coco batch_size=4")
    a = p.parse_intermixed_args(argv)  # options may follow key=value overrides
    overrides = list(a.overrides) + ([f"resume={a.resume}"] if a.resume else [])
    return report_errors(prog, main, a.config, overrides, eval_only=a.eval_only)


if __name__ == "__main__":
    sys.exit(cli())
