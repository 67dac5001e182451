"""Classification datasets: any ImageFolder tree (``<root>/{train,val}/<class>/<image>``), checked
against the configured number of classes before anything trains."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..data import SafeImageFolder, make_demo_imagefolder, split_dir

# (data config, split 'train' | 'val', transform) -> a dataset with a ``classes`` list
DatasetFn = Callable[[object, str, Callable], object]


def imagefolder_dataset(data_cfg, split: str, transform) -> SafeImageFolder:
    root = Path(data_cfg.path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.path {root} does not exist or is not a directory")
    if not (root / split).is_dir():  # split_dir would fall back to root for 'train'; classification needs both
        raise FileNotFoundError(f"data.path {root}: split {split!r} not found (expected {root / split}/<class>/...)")
    return SafeImageFolder(split_dir(root, split), transform=transform)


def check_classes(dataset, nb_classes: int, where: str) -> None:
    classes = getattr(dataset, "classes", None)
    if classes is None:
        raise TypeError(f"{where}: dataset {type(dataset).__name__} has no `classes` list")
    if len(classes) != nb_classes:
        raise ValueError(f"{where} has {len(classes)} classes but data.nb_classes={nb_classes}: set "
                         f"data.nb_classes={len(classes)} or point data.path at the right dataset")


def check_same_classes(train, val) -> None:
    if list(train.classes) != list(val.classes):
        only = sorted(set(train.classes) ^ set(val.classes))[:5]
        raise ValueError(f"train and val class lists differ (e.g. {only}): labels would not line up")


def resolve_demo(data_cfg, output_dir: Path, is_main: bool) -> None:
    """``data.path=demo``: write the bundled photo crops under <output_dir>/demo_data (rank 0 only)."""
    if data_cfg.path != "demo":
        return
    root = Path(output_dir) / "demo_data"
    if is_main:
        make_demo_imagefolder(root)
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()
    data_cfg.path = str(root)
    if not data_cfg.name:
        data_cfg.name = "demo"


def dataset_name(data_cfg) -> str:
    return data_cfg.name or Path(data_cfg.path).expanduser().resolve().name
