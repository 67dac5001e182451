#!/usr/bin/env python
r"""UperNet on ADE20K (seg/): the same as ``crossmae seg`` and ``python -m seg.train``.

    torchrun --nproc_per_node 8 tools/train_seg.py --config configs/seg/upernet_vit_base_ade20k.yaml \
        pretrained=/ckpt/crossmae_vit_base.pth data.path=/data/ADEChallengeData2016 output_dir=out/seg_b
    python tools/train_seg.py --config configs/seg/upernet_vit_base_ade20k.yaml --eval-only \
        weights=out/seg_b/checkpoint.pth data.path=/data/ADEChallengeData2016 output_dir=out/seg_b_eval
    python tools/train_seg.py --config ... --resume out/seg_b/checkpoint.pth   # (default: <output_dir>/checkpoint.pth)
"""
import sys

if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401

from crossmae.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["seg", *sys.argv[1:]]))
