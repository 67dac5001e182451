#!/usr/bin/env python
"""Reconstructions of a pretrained checkpoint, every decoder block's readout, and PSNR on the predicted patches.

    python tools/reconstruct.py --checkpoint output/pretrain/checkpoint.pth --data /data/imagenet \\
        --num-vis 8 --max-images 5000 --output-dir out/recon

The output directory must be new or empty; ``--overwrite`` replaces the files this tool writes there.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401

from crossmae.analysis import figures  # noqa: E402
import torch  # noqa: E402

from crossmae.analysis.loading import (add_model_args, image_folder, image_size, load_from_args, loader,  # noqa: E402
                                       move_masks, spread_batch)
from crossmae.analysis.reconstruction import dataset_psnr, reconstruct  # noqa: E402
from crossmae.userfiles import check_output_dir  # noqa: E402

WRITTEN = ("reconstruction.png", "psnr.json")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", required=True, help="ImageFolder root (its val/ split if present)")
    p.add_argument("--max-images", type=int, default=1000, help="PSNR over a fixed random subset of this many")
    p.add_argument("--num-vis", type=int, default=8, help="images in the figure, spread over the classes")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", required=True, help="new or empty directory, unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help=f"write into a non-empty --output-dir: replace {', '.join(WRITTEN)}, keep every other file")
    args = p.parse_args(argv)
    try:
        check_output_dir(args.output_dir, WRITTEN, args.overwrite)
        model, info = load_from_args(args)
        data = image_folder(args.data, image_size(model), args.max_images, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"reconstruct: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = dataset_psnr(model, loader(data, args.batch_size, args.num_workers), args.seed)
    vis = spread_batch(data, args.num_vis).to(next(model.parameters()).device)
    g = torch.Generator().manual_seed(args.seed)
    rec = reconstruct(model, vis, move_masks(model.sample_masks(vis.cpu(), generator=g), vis.device))
    fig = figures.reconstruction_figure(rec, out / "reconstruction.png", max_images=args.num_vis,
                                        title=f"{info['description']} ({Path(args.checkpoint).name}): mean PSNR "
                                              f"on predicted patches {result['psnr']:.2f} dB over {result['num_images']} images")
    result.update(checkpoint=info["path"], model=info["model"], model_description=info["description"],
                  mask_ratio=model.mask_ratio, pred_ratio=model.pred_ratio)
    (out / "psnr.json").write_text(json.dumps(result, indent=2))
    print(f"PSNR on predicted patches over {result['num_images']} images: {result['psnr']:.2f} dB; per decoder block "
          + ", ".join(f"{v:.2f}" for v in result["psnr_blocks"]))
    print(f"wrote {fig} and {out / 'psnr.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
