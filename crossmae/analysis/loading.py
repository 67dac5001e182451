"""Rebuild a pretrained CrossMAE / MAE from a checkpoint, and the evaluation images the tools read.

Which model a checkpoint holds is read, in this order, from: an explicit model name + keyword
arguments (for files without a config, e.g. MAE's released weights); the toolkit's own ``config``
(``config["model"]`` = factory name + keyword arguments, written by every pretraining run); the
official CrossMAE/MAE release's ``args`` namespace (``--model``, ``--cross_mae``, ``--weight_fm``, ...).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..engine.checkpoint import CheckpointError, check_floating, load_checkpoint, model_state
from ..engine.distributed import resolve_device
from ..models import build_model
from ..models.naming import describe_model, registered_or_described


def model_spec_from_checkpoint(ckpt: dict, path: str | os.PathLike = "<checkpoint>") -> tuple[str, dict]:
    """(factory name, keyword arguments) stored in a checkpoint, or a CheckpointError saying what to pass."""
    config = ckpt.get("config")
    if isinstance(config, dict) and isinstance(config.get("model"), dict) and "name" in config["model"]:
        kwargs = dict(config["model"])
        return kwargs.pop("name"), kwargs
    args = ckpt.get("args")
    if args is not None and hasattr(args, "model"):
        return _official_spec(vars(args), path)
    raise CheckpointError(f"{path} does not say which model it holds (no config['model'] and no release 'args'): "
                          f"pass the model name and its keyword arguments explicitly (--model, --model-kwargs)")


def _official_spec(args: dict[str, Any], path) -> tuple[str, dict]:
    """Map the official release's command-line arguments onto our factories."""
    name = str(args["model"])  # e.g. mae_vit_base_patch16 (also used for CrossMAE runs)
    for suffix in ("_dec512d8b",):
        name = name.removesuffix(suffix)
    kwargs: dict[str, Any] = {"img_size": int(args.get("input_size", 224)),
                              "decoder_depth": int(args.get("decoder_depth", 8)),
                              "mask_ratio": float(args.get("mask_ratio", 0.75)),
                              "norm_pix_loss": bool(args.get("norm_pix_loss", False))}
    if args.get("cross_mae"):
        if list(args.get("use_fm", [-1])) != [-1]:
            raise CheckpointError(f"{path}: use_fm={args['use_fm']} (a subset of encoder blocks) is not supported; "
                                  f"only the default, every block")
        name = name.replace("mae_", "crossmae_", 1)
        kwargs.update(pred_ratio=float(args.get("kept_mask_ratio", kwargs["mask_ratio"])),
                      inter_block=bool(args.get("weight_fm", False)), use_input=bool(args.get("use_input", False)),
                      decoder_self_attn=bool(args.get("self_attn", False)))
    return name, kwargs


def load_pretrained(path: str | os.PathLike, model_name: str | None = None, model_kwargs: dict | None = None,
                    device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A pretraining checkpoint -> (model in eval mode, info {name, kwargs, epoch, path}).

    ``model_name`` (+ ``model_kwargs``) overrides whatever the checkpoint says. Every parameter must
    load: a mismatch is an error naming the missing and unexpected keys."""
    ckpt = load_checkpoint(path)
    if model_name is None:
        model_name, stored = model_spec_from_checkpoint(ckpt, path)
        model_kwargs = {**stored, **(model_kwargs or {})}
    model_kwargs = dict(model_kwargs or {})
    model = build_model(model_name, **model_kwargs)
    state = {k.removeprefix("module."): v for k, v in model_state(ckpt, path).items()}
    check_floating(state, path, expected=model.state_dict())
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{path} does not match model {model_name}({model_kwargs}): "
                              f"{str(e).splitlines()[-1].strip()}") from e
    # decoder_pos_embed / pos_embed are fixed buffers-as-parameters; old files may lack them
    missing = [k for k in missing if k not in ("pos_embed", "decoder_pos_embed")]
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match model {model_name}({model_kwargs}): missing keys "
                              f"{missing[:6]}{'...' if len(missing) > 6 else ''}, unexpected keys "
                              f"{unexpected[:6]}{'...' if len(unexpected) > 6 else ''}")
    model.to(device).eval()
    # "name" is the factory; "model" and "description" say what was built (overrides included)
    info = {"path": str(Path(path).resolve()), "name": model_name, "kwargs": model_kwargs,
            "epoch": ckpt.get("epoch"), "decoder": type(model).__name__,
            "model": registered_or_described(model_name, model), "description": describe_model(model)}
    return model, info


def eval_transform(img_size: int):
    """Resize the shorter side (bicubic), centre-crop, normalise with the ImageNet statistics."""
    from torchvision import transforms

    from ..data.folder import IMAGENET_MEAN, IMAGENET_STD
    return transforms.Compose([transforms.Resize(img_size, interpolation=transforms.InterpolationMode.BICUBIC),
                               transforms.CenterCrop(img_size), transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def image_folder(root: str | os.PathLike, img_size: int, max_images: int | None = None, seed: int = 0):
    """Evaluation images of an ImageFolder tree (``<root>/val`` if present, else ``root``).

    With ``max_images``, a fixed random subset (spread over classes), so runs are comparable."""
    from ..data.folder import SafeImageFolder
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if (root / "val").is_dir():
        root = root / "val"
    dataset = SafeImageFolder(root, transform=eval_transform(img_size))
    if max_images is not None and max_images < len(dataset):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(dataset), generator=g)[:max_images].sort().values.tolist()
        dataset = torch.utils.data.Subset(dataset, idx)
    return dataset


def image_size(model: nn.Module) -> int:
    return int(model.patch_embed.img_size[0])


def move_masks(masks, device):
    """A Masks tuple on another device."""
    return type(masks)(*(t.to(device) for t in masks))


def add_model_args(parser) -> None:
    """Command-line arguments every analysis tool shares to name a checkpoint and its model."""
    parser.add_argument("--checkpoint", required=True, help="pretraining checkpoint (ours, or the official release's)")
    parser.add_argument("--model", default=None,
                        help="model factory name, for files that do not record it (e.g. mae_vit_base_patch16)")
    parser.add_argument("--model-kwargs", default="{}", help='JSON keyword arguments, e.g. \'{"decoder_depth": 8}\'')
    parser.add_argument("--device", default="auto")


def parse_model_kwargs(text: str) -> dict:
    """``--model-kwargs`` JSON -> keyword arguments, with one clear error for anything but a JSON object."""
    from ..userfiles import parse_json
    try:
        kwargs = parse_json(text)
    except ValueError as e:  # JSONDecodeError, NestingError
        raise ValueError(f"--model-kwargs is not valid JSON: {e}") from e
    if not isinstance(kwargs, dict):
        raise ValueError("--model-kwargs must be a JSON object")
    return kwargs


def load_from_args(args) -> tuple[nn.Module, dict]:
    kwargs = parse_model_kwargs(args.model_kwargs)
    return load_pretrained(args.checkpoint, args.model, kwargs, resolve_device(args.device))


def loader(dataset, batch_size: int, num_workers: int = 0):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def spread_batch(dataset, n: int) -> torch.Tensor:
    """``n`` images taken at evenly spaced indices (ImageFolder sorts by class, so they span the classes)."""
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    n = min(n, len(dataset))
    return torch.stack([dataset[int(i * len(dataset) / n)][0] for i in range(n)])
