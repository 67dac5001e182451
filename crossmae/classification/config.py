"""Config schemas of fine-tuning and linear probing (YAML recipes in configs/finetune, configs/linprobe)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

from ..config import Check, Divergence
from ..models.sizes import VIT_SIZES


@dataclass
class ClsModel:
    arch: str = "auto"  # a ViT size (crossmae.models.sizes), or auto: the architecture recorded in `pretrained`
    img_size: Optional[int] = None  # input resolution; None = the checkpoint's (224 for a named size)
    patch_size: Optional[int] = None  # these four override the size's values
    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    mlp_ratio: Optional[float] = None
    global_pool: str = "avg"  # avg (mean of patch tokens + fc_norm) | token (cls token after the final norm)
    drop_path_rate: float = 0.1
    family: str = "vit"  # vit | hiera: set from the checkpoint by arch=auto (a CrossMAE-Hiera / MAE-Hiera)
    hiera: Dict[str, Any] = field(default_factory=dict)  # family hiera: the encoder's arguments (from the checkpoint)

    # value ranges beyond crossmae.config.CHECKS (checked by load_config)
    checks: ClassVar[dict] = {"arch": Check(choices=("auto", *VIT_SIZES)),
                              "family": Check(choices=("vit", "hiera"))}


@dataclass
class ClsData:
    path: str = ""  # ImageFolder root with train/ and val/ (the ImageNet layout); "demo" = bundled photos
    name: str = ""  # dataset name in results.json; empty = the folder's name
    nb_classes: int = 1000  # checked against the dataset before training (>= 2)
    num_workers: int = 8
    pin_memory: bool = True

    checks: ClassVar[dict] = {"nb_classes": Check(lo=2, integer=True)}


@dataclass
class FinetuneAug:
    auto_augment: Optional[str] = "rand-m9-mstd0.5-inc1"  # RandAugment(9, 0.5); null = off
    color_jitter: float = 0.4  # only used without auto_augment (timm's rule)
    reprob: float = 0.25  # random erasing probability
    remode: str = "pixel"
    recount: int = 1
    mixup: float = 0.8  # alpha; 0 = off
    cutmix: float = 1.0  # alpha; 0 = off
    cutmix_minmax: Optional[List[float]] = None
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    smoothing: float = 0.1
    crop_pct: Optional[float] = None  # eval: resize to img_size / crop_pct, centre crop; None = MAE's (0.875 up to 224 px, 1.0 above)


@dataclass
class FinetuneOptim:
    blr: float = 1e-3  # lr = blr * effective batch / 256 (paper Table 11)
    lr: Optional[float] = None  # absolute lr; takes precedence over blr
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    layer_decay: Optional[float] = 0.75  # block i gets layer_decay ** (depth + 1 - i); null = off
    warmup_epochs: float = 5
    clip_grad: Optional[float] = None


@dataclass
class RunFields:
    """What every classification run has besides model/data/optim."""
    pretrained: str = ""  # the pretraining checkpoint (ours or the official CrossMAE/MAE release)
    random_init: bool = False  # control run: the architecture of `pretrained` (or model.arch), random weights
    epochs: int = 100
    batch_size: int = 32  # per process
    global_batch_size: Optional[int] = None  # if set, accum_iter = global / (batch_size * processes)
    accum_iter: int = 1
    eval_batch_size: Optional[int] = None  # per process; None = batch_size
    precision: str = "auto"
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    output_dir: str = "output/finetune"
    resume: str = ""  # resume training from this checkpoint; empty = <output_dir>/checkpoint.pth if present
    eval_only: bool = False  # evaluate `resume` (a fine-tuned / probed checkpoint) and stop
    save_every: int = 1
    keep_every: int = 0
    eval_every: int = 1
    log_every: int = 20
    on_divergence: str = "stop"  # or rollback: restore the last good checkpoint at a lower lr
    divergence: Divergence = field(default_factory=Divergence)


@dataclass
class FinetuneConfig(RunFields):
    model: ClsModel = field(default_factory=ClsModel)
    data: ClsData = field(default_factory=ClsData)
    aug: FinetuneAug = field(default_factory=FinetuneAug)
    optim: FinetuneOptim = field(default_factory=FinetuneOptim)


@dataclass
class LinprobeOptim:
    name: str = "lars"  # lars | sgd
    blr: float = 0.1
    lr: Optional[float] = None
    min_lr: float = 0.0
    weight_decay: float = 0.0
    momentum: float = 0.9
    warmup_epochs: float = 10

    checks: ClassVar[dict] = {"name": Check(choices=("lars", "sgd"))}


@dataclass
class LinprobeConfig(RunFields):
    model: ClsModel = field(default_factory=lambda: ClsModel(global_pool="token", drop_path_rate=0.0))
    data: ClsData = field(default_factory=ClsData)
    optim: LinprobeOptim = field(default_factory=LinprobeOptim)
    crop_pct: Optional[float] = None  # None = MAE's rule (0.875 at 224 px)
    epochs: int = 90
    batch_size: int = 512
    output_dir: str = "output/linprobe"
