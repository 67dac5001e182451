#!/usr/bin/env python
"""ViTDet Mask R-CNN on COCO: train, --resume, or --eval-only (the same as ``crossmae det`` and ``python -m det.train``).

    torchrun --nproc_per_node 8 tools/train_vitdet.py --config configs/det/vitdet_b_100ep.yaml \
        data.root=/data/coco pretrained=/ckpt/crossmae_vit_base.pth output_dir=output/vitdet_b
    python tools/train_vitdet.py --config configs/det/vitdet_b_100ep.yaml --eval-only \
        data.root=/data/coco weights=output/vitdet_b/checkpoint.pth output_dir=output/vitdet_b_eval
"""
import sys

if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401

from crossmae.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["det", *sys.argv[1:]]))
