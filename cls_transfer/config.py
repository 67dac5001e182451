"""The transfer config: crossmae's fine-tuning config with a dataset choice."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from crossmae.classification.config import ClsData, FinetuneConfig
from crossmae.config import Check


@dataclass
class TransferData(ClsData):
    dataset: str = "imagefolder"  # inat2019 | places365 | imagefolder (<path>/train, <path>/val)
    small: bool = True  # Places365: the 256x256 images (val_256, data_256*) rather than the full-resolution ones
    variant: str = "standard"  # Places365 training list: standard (1.8M images) | challenge (8M)
    verify_md5: bool = True  # Places365: check the file lists against their published md5

    # value ranges beyond crossmae.config.CHECKS and ClsData's (checked by load_config)
    checks: ClassVar[dict] = {"dataset": Check(choices=("inat2019", "places365", "imagefolder")),
                              "variant": Check(choices=("standard", "challenge"))}


@dataclass
class TransferConfig(FinetuneConfig):
    data: TransferData = field(default_factory=TransferData)
    output_dir: str = "output/cls_transfer"
