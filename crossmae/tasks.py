"""Every training task and the program that runs it: ``crossmae <task> ...`` (crossmae/cli.py), the launchers
in tools/ (shell wrappers, SLURM submission, the paper row, the GPU check, fault injection) all read this table.

Modules are named as strings and imported only when their task runs: the core package never imports det/,
seg/ or cls_transfer/ (they depend on it, not the other way round).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    module: str  # its ``main(config, overrides)`` runs the task
    help: str
    # the module's own command-line entry ``cli(argv, prog)``, for tasks with options besides --config (det and
    # seg: --eval-only, --resume); None: crossmae.cli parses ``--config FILE [key=value ...]`` and calls ``main``
    cli: str | None = None
    aliases: tuple[str, ...] = ()  # earlier names, still accepted


TASKS = {
    "pretrain": Task("crossmae.pretrain", "pretrain CrossMAE or MAE (no config: the embedded demo; "
                     "eval_only=true: evaluate)"),
    "finetune": Task("crossmae.finetune", "fine-tune a pretrained encoder for classification (eval_only=true: evaluate)"),
    "linprobe": Task("crossmae.linprobe", "linear probe of a frozen pretrained encoder"),
    "det": Task("det.train", "ViTDet Mask R-CNN on COCO (det/; --eval-only, --resume)", cli="cli"),
    "seg": Task("seg.train", "UperNet semantic segmentation on ADE20K (seg/; --eval-only, --resume)", cli="cli"),
    "cls-transfer": Task("cls_transfer", "fine-tune a pretrained encoder on iNat2019 / Places365 / an ImageFolder "
                         "(cls_transfer/)", aliases=("cls_transfer",)),
}

