from .demo import make_demo_imagefolder
from .folder import IMAGENET_MEAN, IMAGENET_STD, SafeImageFolder, build_loader, pretrain_transform, split_dir

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SafeImageFolder", "build_loader", "make_demo_imagefolder",
           "pretrain_transform", "split_dir"]
