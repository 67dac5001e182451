"""Configs: a typed schema (dataclasses) <- a YAML recipe <- ``key=value`` command-line overrides.

Unknown keys, wrong types and out-of-range values are errors that name the field and where its
value came from (the file, the command line or the schema default), raised by :func:`load_config`
before anything runs. Value ranges are declared once, by field name, in :data:`CHECKS` (a schema
class can refine them with a ``checks`` class variable); every numeric field of every task schema
must have one (tests/test_faults_config.py walks the schemas). The ``model`` section of
pretraining holds the keyword arguments of a registered model factory and is checked by building
the model (and by :data:`CHECKS` for the names it shares).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import WorkerSafe


class ConfigError(WorkerSafe, ValueError):
    pass


# ------------------------------------------------------------------ value checks
INT64_MAX = 2 ** 63 - 1  # torch's and numpy's integers: a larger Python int overflows in them, naming nothing


@dataclass(frozen=True)
class Check:
    """What a field may hold: a number (or, for a list field, each of its numbers) in a range,
    optionally a list of a fixed length or in non-decreasing order; or one of some strings.
    ``None`` always passes (the schema's Optional already says whether it is allowed). An integer
    check without an upper bound gets :data:`INT64_MAX`."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    length: int | None = None
    ordered: bool = False
    choices: tuple[str, ...] = ()
    casefold: bool = False  # choices match in any case (a YAML true reaches a str field as "True")

    def __post_init__(self):
        if self.integer and self.hi is None:
            object.__setattr__(self, "hi", INT64_MAX)

    def _bound(self, x: float) -> str:
        return str(int(x)) if self.integer else f"{x:g}"  # integers exactly (2**32 - 1, not 4.29497e+09)

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        kind = "an integer" if self.integer else "a number"
        lo, hi = (None if b is None else self._bound(b) for b in (self.lo, self.hi))
        if lo is not None and hi is not None:
            rng = f" in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        elif lo is not None:
            rng = f" {'>' if self.lo_open else '>='} {lo}"
        elif hi is not None:
            rng = f" {'<' if self.hi_open else '<='} {hi}"
        else:
            rng = ""
        if self.length is not None:
            return f"a list of {self.length} {'integers' if self.integer else 'numbers'}{rng}" + \
                (", in increasing order" if self.ordered else "")
        return kind + rng + (" (or a list of them in increasing order)" if self.ordered else "")

    def _number_ok(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if isinstance(v, float) and not math.isfinite(v):  # nan / inf parse as floats; no field takes them
            return False
        if self.integer and isinstance(v, float) and not v.is_integer():
            return False
        # int-float comparisons are exact in Python: no float() of a huge int (which would overflow)
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def ok(self, value) -> bool:
        if value is None:
            return True
        if self.choices:
            return (str(value).lower() if self.casefold else value) in self.choices
        if isinstance(value, (list, tuple)):
            if self.length is not None and len(value) != self.length:
                return False
            if self.ordered and any(a > b for a, b in zip(value, value[1:]) if self._number_ok(a) and self._number_ok(b)):
                return False
            return all(self._number_ok(v) for v in value)
        return self.length is None and self._number_ok(value)


ANY = Check()  # a number with no constraint (declared, so that no field is forgotten)
POS_INT = Check(lo=1, integer=True)  # integer checks are capped at INT64_MAX
NONNEG_INT = Check(lo=0, integer=True)
SEED = Check(lo=0, hi=2 ** 32 - 1, integer=True)  # numpy's seed range; seed * 1_000_003 + i still fits int64
NUM_WORKERS = Check(lo=0, hi=256, integer=True)  # worker processes per rank: more than any machine has cores
NONNEG = Check(lo=0)
POSITIVE = Check(lo=0, lo_open=True)
PROB = Check(lo=0, hi=1)  # [0, 1]
RATE = Check(lo=0, hi=1, hi_open=True)  # [0, 1)
FRACTION = Check(lo=0, hi=1, lo_open=True)  # (0, 1]
BETAS = Check(lo=0, hi=1, hi_open=True, length=2)

# Field name -> its check, for the names the task schemas (crossmae/config.py, crossmae/classification/config.py,
# cls_transfer/config.py, seg/config.py, det/config.py) and the model keyword arguments share; a name only one
# task uses has its check in that task's schema class (``checks``).
CHECKS: dict[str, Check] = {
    # run length, batching, cadence
    "epochs": POS_INT, "batch_size": POS_INT,
    "global_batch_size": POS_INT, "accum_iter": POS_INT, "eval_batch_size": POS_INT,
    "save_every": POS_INT, "log_every": POS_INT, "eval_every": POS_INT, "keep_every": NONNEG_INT,
    "num_vis": NONNEG_INT, "seed": SEED, "num_workers": NUM_WORKERS,
    "precision": Check(choices=("auto", "bf16", "fp16", "fp32")),
    "compile": Check(choices=("auto", "true", "false"), casefold=True),  # bool in the task schemas: passes
    "attention": Check(choices=("sdpa", "flash")),
    # optimisation (milestones, gamma, warmup_factor: crossmae.engine.optim.warmup_step's)
    "lr": NONNEG, "blr": NONNEG, "min_lr": NONNEG, "weight_decay": NONNEG, "betas": BETAS, "momentum": RATE,
    "layer_decay": FRACTION, "warmup_epochs": NONNEG, "warmup_iters": NONNEG_INT,
    "warmup_factor": PROB, "clip_grad": POSITIVE, "gamma": POSITIVE,
    "milestones": Check(lo=0, hi=1, ordered=True),  # fractions of the run
    # models (also the keyword arguments in pretraining's model:, seg's model.backbone: and det's model.hiera:)
    **{k: POS_INT for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "decoder_embed_dim",
                            "decoder_depth", "decoder_num_heads", "pretrain_img_size", "nb_classes")},
    "window_size": NONNEG_INT,  # 0 = global attention
    "global_attn_indexes": NONNEG_INT,
    "mlp_ratio": POSITIVE, "drop_path_rate": RATE,
    "mask_ratio": RATE, "pred_ratio": Check(lo=0, hi=1, lo_open=True, hi_open=True),
    "global_pool": Check(choices=("avg", "token")),
    # data and augmentation
    "synthetic_train": POS_INT, "synthetic_val": POS_INT,
    "synthetic_size": POS_INT, "color_jitter": NONNEG, "reprob": PROB, "recount": POS_INT, "mixup": NONNEG,
    "cutmix": NONNEG, "cutmix_minmax": Check(lo=0, hi=1, length=2, ordered=True), "mixup_prob": PROB,
    "mixup_switch_prob": PROB, "mixup_mode": Check(choices=("batch", "pair", "elem")),
    "remode": Check(choices=("const", "rand", "pixel")), "smoothing": RATE, "crop_pct": FRACTION,
    # divergence (crossmae/engine/loop.py: DivergencePolicy)
    "on_divergence": Check(choices=("stop", "rollback")), "max_retries": NONNEG_INT, "lr_factor": FRACTION,
}


def check_for(owner: type | None, name: str) -> Check | None:
    """The check of field ``name`` of schema class ``owner``: the class's own ``checks`` first
    (searched along its bases), then :data:`CHECKS`."""
    for cls in getattr(owner, "__mro__", ()):
        own = cls.__dict__.get("checks")
        if isinstance(own, dict) and name in own:
            return own[name]
    return CHECKS.get(name)


def _leaves(node, prefix: str = "", owner: type | None = None, sources=()):
    """(dotted key, plain value, owning schema class) of every leaf; lists are leaves."""
    for key in node:
        dotted = f"{prefix}{key}"
        try:
            value = node[key]
        except OmegaConfBaseException as e:  # e.g. a ${...} interpolation that names no field
            raise ConfigError(f"{dotted} (from {_source_of(dotted, list(sources))}): "
                              f"{str(e).splitlines()[0]}") from e
        if isinstance(value, DictConfig):
            sub = OmegaConf.get_type(value)
            yield from _leaves(value, dotted + ".", sub if sub not in (dict, None) else None, sources)
        elif isinstance(value, ListConfig):
            yield dotted, OmegaConf.to_container(value, resolve=True), owner
        else:
            yield dotted, value, owner


_UNSET = object()


def _source_of(key: str, sources: list[tuple[str, DictConfig]]) -> str:
    for where, src in reversed(sources):
        node = OmegaConf.to_container(src, resolve=False)  # unresolved: a broken ${...} is still found
        for part in key.split("."):
            node = node.get(part, _UNSET) if isinstance(node, dict) else _UNSET
        if node is not _UNSET:
            return where
    return "the schema default"


def validate(cfg: DictConfig, sources: list[tuple[str, DictConfig]] = ()) -> None:
    """Raise :class:`ConfigError` naming the first field whose value fails its :class:`Check`,
    and where that value came from."""
    for key, value, owner in _leaves(cfg, owner=OmegaConf.get_type(cfg), sources=sources):
        check = check_for(owner, key.rsplit(".", 1)[-1])
        if check is not None and not check.ok(value):
            raise ConfigError(f"{key}={value!r} (from {_source_of(key, list(sources))}): "
                              f"must be {check.describe()}")


# ------------------------------------------------------------------ loading
def load_config(schema, path: str | Path | None = None, overrides: list[str] | tuple = ()) -> DictConfig:
    """Merge schema defaults, the YAML file at ``path`` (if any) and dotted overrides, then
    :func:`validate` the result."""
    cfg = OmegaConf.structured(schema)
    sources = []
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            sources.append((str(path), OmegaConf.load(path)))
        except Exception as e:  # YAML syntax errors come in several classes; one line names the file
            raise ConfigError(f"{path}: not a readable YAML config: {str(e).splitlines()[0]}") from e
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    for override in overrides:  # one at a time, to name the one that does not parse
        try:
            OmegaConf.from_dotlist([override])
        except Exception as e:  # OmegaConf's grammar errors and YAML's (e.g. an unclosed '[')
            raise ConfigError(f"command line: cannot parse {override!r}: {str(e).splitlines()[0]}") from e
    if overrides:
        sources.append(("command line", OmegaConf.from_dotlist(list(overrides))))
    for where, src in sources:
        if not isinstance(src, DictConfig):
            raise ConfigError(f"{where}: expected a mapping of fields, got a {type(src).__name__}")
        try:
            cfg = OmegaConf.merge(cfg, src)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{where}: {e}".splitlines()[0] + f" (field: {getattr(e, 'full_key', '?')})") from e
    validate(cfg, sources)
    return cfg


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Written atomically: a kill or a full disk mid-write leaves the previous config.yaml (or none),
    never a truncated one."""
    from .files import atomic_write
    text = OmegaConf.to_yaml(cfg)
    atomic_write(path, lambda f: f.write(text), binary=False)


@dataclass
class PretrainData:
    path: str = ""  # ImageFolder root (<path>/train/<class>/*.JPEG, or <path>/<class>/...); "demo" = bundled photos;
    # "synthetic" = random uint8 images (synthetic_images per epoch): the loop's speed without reading data
    num_workers: int = 8
    pin_memory: bool = True
    min_scale: float = 0.2  # RandomResizedCrop scale range (min_scale, 1)
    # fast: reduced-scale JPEG decode, uint8 batches normalised on the device (crossmae/data/fast_rrc.py);
    # classic: torchvision transforms, float32 batches (MAE's pipeline); nvimgcodec: the GPU's hardware JPEG
    # decoder decodes each crop's region (crossmae/data/hw_decode.py; optional package, CUDA). Same crop distribution.
    pipeline: str = "fast"
    synthetic_images: int = 51200  # data.path=synthetic: random images per epoch (speed without data loading)

    checks: ClassVar[dict] = {"min_scale": FRACTION, "pipeline": Check(choices=("fast", "classic", "nvimgcodec")),
                              "synthetic_images": POS_INT}


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
class PretrainKnn:
    """Periodic kNN top-1 monitor (crossmae/knn.py) on a labelled ImageFolder with train/ and val/."""
    path: str = ""  # "" = off; "demo" = the bundled photos (the demo data)
    every: int = 0  # epochs between evaluations (0 = off; the last epoch is always evaluated when on)
    train_images: int = 5000  # memory-bank images (a fixed random subset of train/; 0 = all)
    val_images: int = 1000  # query images (a fixed random subset of val/; 0 = all)
    k: int = 20
    temperature: float = 0.07
    pool: str = "avg"  # avg (mean patch token) | cls
    batch_size: int = 128
    num_workers: int = 2

    checks: ClassVar[dict] = {"every": NONNEG_INT, "train_images": NONNEG_INT, "val_images": NONNEG_INT,
                              "k": POS_INT, "temperature": POSITIVE, "pool": Check(choices=("avg", "cls"))}


@dataclass
class Divergence:
    """``on_divergence: rollback``: how often, and with how much lower an lr (crossmae/engine/loop.py)."""
    max_retries: int = 3  # rollbacks in the whole run before giving up
    lr_factor: float = 0.5  # the lr is multiplied by this at every rollback, for the rest of the run


@dataclass
class PretrainConfig:
    model: Dict[str, Any] = field(default_factory=lambda: {"name": "crossmae_vit_base_patch16"})
    data: PretrainData = field(default_factory=PretrainData)
    optim: PretrainOptim = field(default_factory=PretrainOptim)
    knn: PretrainKnn = field(default_factory=PretrainKnn)
    epochs: int = 800
    batch_size: int = 64  # per process
    global_batch_size: Optional[int] = None  # if set, accum_iter = global / (batch_size * processes)
    accum_iter: int = 1
    precision: str = "auto"  # auto (bf16 on capable GPUs, fp32 on CPU) | bf16 | fp16 | fp32
    compile: str = "auto"  # auto (torch.compile on CUDA, where it is faster; eager on CPU) | true | false
    attention: str = "sdpa"  # sdpa | flash (the flash-attn package)
    device: str = "auto"
    seed: int = 0
    output_dir: str = "output/pretrain"
    resume: str = ""  # a checkpoint to resume; empty = <output_dir>/checkpoint.pth if present
    save_every: int = 20  # epochs between writes of checkpoint.pth (and always at the end)
    keep_every: int = 100  # epochs between kept snapshots checkpoint-XXXX.pth (0 = none)
    log_every: int = 20  # iterations between train_log.jsonl lines
    num_vis: int = 8  # images in the reconstruction figure and the fixed-batch loss (0 = none)
    eval_only: bool = False  # evaluate `resume` (default <output_dir>/checkpoint.pth) and stop: no training
    # a non-finite loss, weights or evaluation loss: stop (naming the last good checkpoint) | rollback (restore
    # it, lower the lr by divergence.lr_factor, go on; at most divergence.max_retries times)
    on_divergence: str = "stop"
    divergence: Divergence = field(default_factory=Divergence)
