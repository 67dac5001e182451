"""CrossMAE / MAE pretraining: builds model, data and optimizer from a config and runs the loop.

    crossmae pretrain --config configs/pretrain/crossmae_vit_base.yaml data.path=/data/imagenet
    crossmae pretrain --config configs/pretrain/demo.yaml eval_only=true resume=output/demo/checkpoint.pth
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torchvision import transforms

from .analysis.figures import reconstruction_figure
from .analysis.reconstruction import reconstruct
from .config import PretrainConfig, load_config
from .data import (IMAGENET_MEAN, IMAGENET_STD, FastPretrainFolder, SafeImageFolder, build_loader,
                   make_demo_imagefolder, normalize_uint8, pretrain_transform, split_dir)
from .data import hw_decode
from .data.fast_device import EncodedCropFolder
from .data.synthetic import SyntheticImages
from .engine import build_adamw, load_checkpoint, steps_per_epoch, warmup_cosine
from .engine.checkpoint import load_model_state
from .engine.distributed import barrier
from .engine.task import RunContext, Task, run_task
from .knn import with_knn
from .models import build_model
from .models.blocks import set_backend
from .models.naming import describe_model, registered_or_described

logger = logging.getLogger("crossmae")


def resolve_accum_iter(batch_size: int, global_batch_size: int | None, accum_iter: int, world_size: int) -> int:
    if global_batch_size is None:
        return accum_iter
    per_step = batch_size * world_size
    if global_batch_size % per_step:
        raise ValueError(f"global_batch_size {global_batch_size} is not a multiple of batch_size x processes "
                         f"= {batch_size} x {world_size}")
    return global_batch_size // per_step


def pretrain_lr(blr: float, lr: float | None, effective_batch: int, mask_ratio: float, pred_ratio: float,
                pred_ratio_lr_scale: bool) -> float:
    """Absolute lr. The official script multiplies by pred_ratio / mask_ratio unless told not to;
    here that scaling is opt-in (``optim.pred_ratio_lr_scale``)."""
    if lr is not None:
        return lr
    scale = pred_ratio / mask_ratio if pred_ratio_lr_scale else 1.0
    return blr * effective_batch / 256 * scale


def pretrain_loss(model, batch):
    imgs = batch[0]
    if imgs.dtype == torch.uint8:  # the fast pipeline ships uint8 (4x fewer bytes); normalised on the device
        imgs = normalize_uint8(imgs)
    return model(imgs).loss


def fixed_batch(dataset: SafeImageFolder, n: int, img_size: int) -> torch.Tensor:
    """``n`` readable images spread over the classes, resized and centre-cropped: a fixed batch for the
    figure and the fixed-mask loss. Read like the training data (unreadable files are skipped); a
    dataset with no readable image fails here, before training."""
    tf = transforms.Compose([transforms.Resize(img_size, interpolation=transforms.InterpolationMode.BICUBIC),
                             transforms.CenterCrop(img_size), transforms.ToTensor(),
                             transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return torch.stack([tf(img) for img in dataset.readable_images(n)])


@torch.no_grad()
def fixed_mask_loss(model, imgs: torch.Tensor, seed: int = 0) -> float:
    """Reconstruction loss on fixed images with fixed masks: comparable across epochs and runs."""
    was_training = model.training
    model.eval()
    g = torch.Generator(device=imgs.device).manual_seed(seed)
    loss = float(model(imgs, model.sample_masks(imgs, generator=g)).loss)
    model.train(was_training)
    return loss


def load_evaluated(model, ctx: RunContext) -> tuple[Path, dict]:
    """eval_only: the checkpoint of ``ctx.eval_checkpoint()`` (``resume=``, else the output dir's own), loaded
    into ``model``."""
    path = Path(ctx.eval_checkpoint())
    if not ctx.cfg.resume and not path.is_file():
        raise ValueError(f"eval_only=true evaluates a pretraining checkpoint: there is none at {path}; "
                         f"give resume=<checkpoint>")
    ckpt = load_checkpoint(path)
    load_model_state(model, ckpt, path, hint="Use the model config of the run that wrote it.")
    logger.info("evaluating %s (epoch %s)", path, ckpt.get("epoch"))
    return path, ckpt


def build_task(ctx: RunContext) -> Task:
    cfg, dist, out_dir = ctx.cfg, ctx.dist, ctx.out_dir
    set_backend(cfg.attention)
    if cfg.data.pipeline == "nvimgcodec":  # needs an optional package and a GPU: stop before any work
        hw_decode.require(dist.device)
    model_kwargs = dict(cfg.model)
    torch.manual_seed(cfg.seed)  # the same weights at initialisation on every rank and every run
    model = build_model(model_kwargs.pop("name"), **model_kwargs)  # raises on bad names/ratios/sizes
    checkpoint, ckpt = load_evaluated(model, ctx) if ctx.eval_only else (out_dir / "checkpoint.pth", None)
    epochs = cfg.epochs if ckpt is None else ckpt.get("epoch") or 0  # those trained when the results are written
    img_size = model.patch_embed.img_size[0]
    if cfg.batch_size < 1 or cfg.epochs < 1:
        raise ValueError(f"batch_size and epochs must be >= 1, got {cfg.batch_size} and {cfg.epochs}")
    accum_iter = resolve_accum_iter(cfg.batch_size, cfg.global_batch_size, cfg.accum_iter, dist.world_size)

    data_root = cfg.data.path
    if data_root == "demo":
        data_root = out_dir / "demo_data"
        if dist.is_main:
            make_demo_imagefolder(data_root)
        barrier()  # the other ranks wait until rank 0 has written the demo images
    if not data_root:
        raise ValueError("data.path is empty: give an ImageFolder root (e.g. data.path=/data/imagenet), 'demo' "
                         "or 'synthetic'")
    if data_root == "synthetic":
        dataset = SyntheticImages(cfg.data.synthetic_images, img_size, cfg.seed)
    elif cfg.data.pipeline == "fast":
        dataset = FastPretrainFolder(split_dir(data_root, "train"), img_size, cfg.data.min_scale)
    elif cfg.data.pipeline == "nvimgcodec":
        dataset = EncodedCropFolder(split_dir(data_root, "train"), img_size, cfg.data.min_scale)
    else:
        dataset = SafeImageFolder(split_dir(data_root, "train"), transform=pretrain_transform(img_size, cfg.data.min_scale))
    description = describe_model(model)  # what ran, whatever the factory name says
    logger.info("model %s (factory %s): %d patches", description, cfg.model["name"], model.num_patches)
    loss_fn, collate_fn = pretrain_loss, None
    if isinstance(dataset, EncodedCropFolder):  # workers ship bytes and boxes; the loss decodes them on the GPU
        decode, collate_fn = hw_decode.HardwareCropDecoder(img_size, dist.device), hw_decode.collate_bytes
        loss_fn = lambda m, batch: pretrain_loss(m, (decode(batch),))  # noqa: E731
    if not ctx.eval_only:
        loader, optimizer, schedule = training_parts(cfg, dist, model, dataset, accum_iter, collate_fn)

    vis = fixed_batch(dataset, cfg.num_vis, img_size).to(dist.device) if cfg.num_vis else None
    if vis is None:
        dataset.readable_images(1)  # a folder of unreadable files fails now, not mid-epoch
    evaluate = (lambda m, epoch: {"fixed_mask_loss": fixed_mask_loss(m, vis, cfg.seed)}) if vis is not None else None
    # eval-only: the kNN monitor (when configured) at its one evaluation, whatever epoch the checkpoint is at
    evaluate = with_knn(evaluate, cfg.knn, img_size, 0 if ctx.eval_only else cfg.epochs, out_dir / "demo_data")
    if ctx.eval_only and evaluate is None:
        raise ValueError("eval_only=true has nothing to evaluate: num_vis=0 (no fixed-mask loss) and no kNN monitor "
                         "(knn.path, knn.every)")

    def measure_before(trainer) -> None:
        if vis is not None and trainer.start_epoch == 0:  # kept in the checkpoints: a resumed run reports it too
            trainer.run_state["fixed_mask_loss_before"] = fixed_mask_loss(model, vis, cfg.seed)

    def results(metrics: dict, trainer) -> dict:
        run_state = trainer.run_state if trainer is not None else ckpt.get("run_state") or {}
        loss_before = run_state.get("fixed_mask_loss_before")
        if loss_before is not None:
            metrics["fixed_mask_loss_before"] = loss_before
        if dist.is_main and vis is not None:
            g = torch.Generator(device=vis.device).manual_seed(cfg.seed)
            model.eval()
            rec = reconstruct(model, vis, model.sample_masks(vis, generator=g))
            fig = reconstruction_figure(rec, out_dir / "reconstruction.png",
                                        title=f"{description} after {epochs} epochs")
            logger.info("reconstructions (PSNR on predicted patches %.2f dB): %s", float(rec["psnr"].mean()), fig)
            if loss_before is not None:
                logger.info("fixed-mask loss: %.4f before training -> %.4f after", loss_before,
                            metrics["fixed_mask_loss"])
        return {"task": "pretrain", "model": registered_or_described(cfg.model["name"], model),
                "model_description": description, "factory": cfg.model["name"], "epochs": epochs,
                "mask_ratio": model.mask_ratio, "pred_ratio": model.pred_ratio,
                "decoder_depth": len(model.decoder_blocks), "decoder": type(model).__name__,
                "checkpoint": str(checkpoint.resolve()), "metrics": metrics}

    if ctx.eval_only:
        return Task("pretrain", model, results, evaluate, eval_epoch=epochs)
    return Task("pretrain", model, results, evaluate, train_loader=loader, optimizer=optimizer, lr_schedule=schedule,
                loss_fn=loss_fn, epochs=cfg.epochs, accum_iter=accum_iter, clip_grad=cfg.optim.clip_grad,
                before_fit=measure_before)


def training_parts(cfg, dist, model, dataset, accum_iter: int, collate_fn=None) -> tuple:
    """The loader, the optimizer and the lr schedule of a training run."""
    loader = build_loader(dataset, cfg.batch_size, cfg.data.num_workers, dist.rank, dist.world_size, cfg.seed,
                          pin_memory=cfg.data.pin_memory and dist.device.type == "cuda", collate_fn=collate_fn)
    effective_batch = cfg.batch_size * accum_iter * dist.world_size
    lr = pretrain_lr(cfg.optim.blr, cfg.optim.lr, effective_batch, model.mask_ratio, model.pred_ratio,
                     cfg.optim.pred_ratio_lr_scale)
    optimizer = build_adamw(model, lr, cfg.optim.weight_decay, betas=cfg.optim.betas)
    n_steps = steps_per_epoch(len(loader), accum_iter)
    schedule = warmup_cosine(lr, cfg.optim.min_lr, cfg.epochs * n_steps, int(cfg.optim.warmup_epochs * n_steps))
    logger.info("%d images in %s; effective batch %d = %d x %d accum x %d processes; lr %.3g; %d steps/epoch",
                len(dataset), dataset.root, effective_batch, cfg.batch_size, accum_iter, dist.world_size, lr, n_steps)
    return loader, optimizer, schedule


def run(cfg) -> dict:
    return run_task(cfg, build_task)


def main(config: str | None, overrides: list[str]) -> dict:
    return run(load_config(PretrainConfig, config, overrides))
