#!/usr/bin/env python
r"""UperNet on ADE20K (seg/): a thin launcher for ``python -m seg.train``.

    torchrun --nproc_per_node 8 tools/train_seg.py --config configs/seg/upernet_vit_base_ade20k.yaml \
        pretrained=/ckpt/crossmae_vit_base.pth data.path=/data/ADEChallengeData2016 output_dir=out/seg_b
    python tools/train_seg.py --config configs/seg/upernet_vit_base_ade20k.yaml --eval-only \
        weights=out/seg_b/checkpoint.pth data.path=/data/ADEChallengeData2016 output_dir=out/seg_b_eval
    python tools/train_seg.py --config ... --resume out/seg_b/checkpoint.pth   # (default: <output_dir>/checkpoint.pth)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from seg.train import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
