from .demo import make_demo_imagefolder
from .fast_rrc import FastPretrainFolder, normalize_uint8
from .folder import IMAGENET_MEAN, IMAGENET_STD, SafeImageFolder, build_loader, pretrain_transform, split_dir

__all__ = ["FastPretrainFolder", "IMAGENET_MEAN", "IMAGENET_STD", "SafeImageFolder", "build_loader",
           "make_demo_imagefolder", "normalize_uint8", "pretrain_transform", "split_dir"]
