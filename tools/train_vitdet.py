#!/usr/bin/env python
"""ViTDet Mask R-CNN on COCO: train, --resume, or --eval-only (same as ``python -m det.train``).

    torchrun --nproc_per_node 8 tools/train_vitdet.py --config configs/det/vitdet_b_100ep.yaml \
        data.root=/data/coco pretrained=/ckpt/crossmae_vit_base.pth output_dir=output/vitdet_b
    python tools/train_vitdet.py --config configs/det/vitdet_b_100ep.yaml --eval-only \
        data.root=/data/coco weights=output/vitdet_b/checkpoint.pth output_dir=output/vitdet_b_eval
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from det.train import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
