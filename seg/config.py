"""Config schema of UperNet training/evaluation (merged with a YAML recipe and key=value overrides
by :func:`crossmae.config.load_config`). Defaults are the mmseg MAE ViT-B ADE20K recipe."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

from crossmae.config import FRACTION, NONNEG, NONNEG_INT, POS_INT, POSITIVE, PROB, RATE, Check, Divergence


@dataclass
class SegModel:
    family: str = "vit"  # the backbone: vit | hiera (crossmae.models.hiera.DenseHiera, UperNet on its stages)
    # vit: keyword arguments of crossmae.models.dense_vit.seg_backbone: size (small|base|large|huge) + overrides;
    # hiera: of DenseHiera: size (tiny|small|base|base_plus|large, or auto = the pretrained checkpoint's) + overrides
    backbone: Dict[str, Any] = field(default_factory=lambda: {"size": "base"})  # merged with the YAML's
    num_classes: int = 150
    channels: int = 768  # UPerHead width (768 for ViT-B in mmseg's MAE config)
    aux_channels: int = 256
    aux_weight: float = 0.4  # 0 = no auxiliary head
    aux_in_index: int = 2
    dropout: float = 0.1
    pool_scales: List[int] = field(default_factory=lambda: [1, 2, 3, 6])
    neck_rescales: List[float] = field(default_factory=lambda: [4.0, 2.0, 1.0, 0.5])
    avg_non_ignore: bool = False  # mmseg's CrossEntropyLoss default: mean over all pixels, ignored ones included

    # value ranges beyond crossmae.config.CHECKS (checked by load_config)
    checks: ClassVar[dict] = {"num_classes": POS_INT, "channels": POS_INT, "aux_channels": POS_INT,
                              "aux_weight": NONNEG, "aux_in_index": NONNEG_INT, "dropout": RATE,
                              "pool_scales": POS_INT, "neck_rescales": POSITIVE}


@dataclass
class SegData:
    path: str = ""  # ADEChallengeData2016 root; "synthetic" = a generated ADE20K-layout set in <output_dir>/synthetic_data
    train_split: str = "training"
    val_split: str = "validation"
    reduce_zero_label: bool = True
    crop_size: int = 512
    scale: List[int] = field(default_factory=lambda: [2048, 512])  # (long, short) bound of the resize
    ratio_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    check_sizes: bool = True  # compare image / annotation sizes (file headers) when the dataset is built
    num_workers: int = 8
    pin_memory: bool = True
    # the synthetic set (data.path=synthetic)
    synthetic_train: int = 160
    synthetic_val: int = 40
    synthetic_size: List[int] = field(default_factory=lambda: [48, 96])  # (min, max) image side

    checks: ClassVar[dict] = {"crop_size": POS_INT, "scale": Check(lo=1, integer=True, length=2),
                              "ratio_range": Check(lo=0, lo_open=True, length=2, ordered=True),
                              "cat_max_ratio": FRACTION, "flip_prob": PROB,
                              "synthetic_size": Check(lo=8, integer=True, length=2, ordered=True)}


@dataclass
class SegTest:
    mode: str = "slide"  # slide | whole
    crop_size: Optional[int] = None  # sliding window; None = data.crop_size
    stride: int = 341
    ratios: List[float] = field(default_factory=lambda: [1.0])  # multi-scale: e.g. [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    flip: bool = False
    crop_batch: int = 8  # windows per forward pass
    num_workers: int = 4
    max_images: Optional[int] = None  # evaluate on the first N validation images only (quick checks)

    checks: ClassVar[dict] = {"mode": Check(choices=("slide", "whole")), "crop_size": POS_INT, "stride": POS_INT,
                              "ratios": POSITIVE, "crop_batch": POS_INT, "max_images": POS_INT}


@dataclass
class SegOptim:
    lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.05
    layer_decay: Optional[float] = 0.65
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_lr: float = 0.0
    clip_grad: Optional[float] = None

    checks: ClassVar[dict] = {"warmup_ratio": PROB, "power": NONNEG}  # mmseg's poly schedule (seg/optim.py)


@dataclass
class SegConfig:
    model: SegModel = field(default_factory=SegModel)
    data: SegData = field(default_factory=SegData)
    test: SegTest = field(default_factory=SegTest)
    optim: SegOptim = field(default_factory=SegOptim)
    pretrained: str = ""  # pretraining checkpoint whose encoder initialises the backbone ("" = random init)
    weights: str = ""  # a trained segmentation checkpoint to evaluate (--eval-only) or start from
    max_iters: int = 160000  # optimizer steps in total
    iters_per_epoch: int = 4000  # steps per loop "epoch" (checkpoint / log unit); must divide max_iters
    eval_every: int = 4  # epochs between evaluations (4 x 4000 = mmseg's 16k-iteration interval)
    batch_size: int = 2  # per process (8 GPUs x 2 = mmseg's 16)
    global_batch_size: Optional[int] = None  # if set, accum_iter = global / (batch_size * processes)
    accum_iter: int = 1
    precision: str = "auto"  # auto (bf16 on capable GPUs, fp32 on CPU) | bf16 | fp16 | fp32
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    output_dir: str = "output/seg"
    resume: str = ""  # checkpoint to resume; empty = <output_dir>/checkpoint.pth if present
    save_every: int = 1
    keep_every: int = 0
    log_every: int = 50
    eval_only: bool = False
    on_divergence: str = "stop"  # or rollback: restore the last good checkpoint at a lower lr
    divergence: Divergence = field(default_factory=Divergence)
    dataset_name: str = "ade20k"  # recorded in results.json

    checks: ClassVar[dict] = {"max_iters": POS_INT, "iters_per_epoch": POS_INT}
