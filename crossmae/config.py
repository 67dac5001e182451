"""Configs: a typed schema (dataclasses) <- a YAML recipe <- ``key=value`` command-line overrides.

Unknown keys and wrong types are errors that name the field and the file, raised before anything
runs. The ``model`` section holds the keyword arguments of a registered model factory and is
checked by building the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    pass


def load_config(schema, path: str | Path | None = None, overrides: list[str] | tuple = ()) -> DictConfig:
    """Merge schema defaults, the YAML file at ``path`` (if any) and dotted overrides."""
    cfg = OmegaConf.structured(schema)
    sources = []
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        sources.append((str(path), OmegaConf.load(path)))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    if overrides:
        sources.append(("command line", OmegaConf.from_dotlist(list(overrides))))
    for where, src in sources:
        try:
            cfg = OmegaConf.merge(cfg, src)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{where}: {e}".splitlines()[0] + f" (field: {getattr(e, 'full_key', '?')})") from e
    return cfg


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path)


@dataclass
class PretrainData:
    path: str = ""  # ImageFolder root (<path>/train/<class>/*.JPEG, or <path>/<class>/...); "demo" = bundled photos
    num_workers: int = 8
    pin_memory: bool = True
    min_scale: float = 0.2  # RandomResizedCrop scale range (min_scale, 1)


@dataclass
class PretrainOptim:
    blr: float = 1.5e-4  # lr = blr * effective batch / 256
    lr: Optional[float] = None  # absolute lr; takes precedence over blr
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_epochs: float = 40
    clip_grad: Optional[float] = None
    pred_ratio_lr_scale: bool = False  # the official script's default: lr *= pred_ratio / mask_ratio


@dataclass
class PretrainConfig:
    model: Dict[str, Any] = field(default_factory=lambda: {"name": "crossmae_vit_base_patch16"})
    data: PretrainData = field(default_factory=PretrainData)
    optim: PretrainOptim = field(default_factory=PretrainOptim)
    epochs: int = 800
    batch_size: int = 64  # per process
    global_batch_size: Optional[int] = None  # if set, accum_iter = global / (batch_size * processes)
    accum_iter: int = 1
    precision: str = "auto"  # auto (bf16 on capable GPUs, fp32 on CPU) | bf16 | fp16 | fp32
    compile: bool = False
    attention: str = "sdpa"  # sdpa | flash (the flash-attn package)
    device: str = "auto"
    seed: int = 0
    output_dir: str = "output/pretrain"
    resume: str = ""  # a checkpoint to resume; empty = <output_dir>/checkpoint.pth if present
    save_every: int = 20  # epochs between writes of checkpoint.pth (and always at the end)
    keep_every: int = 100  # epochs between kept snapshots checkpoint-XXXX.pth (0 = none)
    log_every: int = 20  # iterations between train_log.jsonl lines
    num_vis: int = 8  # images in the reconstruction figure and the fixed-batch loss (0 = none)
