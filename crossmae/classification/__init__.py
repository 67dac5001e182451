"""Shared by fine-tuning and linear probing: the classifier, encoder loading, transforms, evaluation, LARS."""
from .evaluate import evaluate, topk_correct
from .lars import LARS
from .model import arch_from_checkpoint, build_classifier, load_encoder, make_linear_probe, resize_pos_embed, resolve_arch
from .transforms import build_criterion, build_mixup, eval_transform, finetune_transform, linprobe_transform

__all__ = ["LARS", "arch_from_checkpoint", "build_classifier", "build_criterion", "build_mixup", "eval_transform",
           "evaluate", "finetune_transform", "linprobe_transform", "load_encoder", "make_linear_probe",
           "resize_pos_embed", "resolve_arch", "topk_correct"]
