#!/usr/bin/env python
"""Heatmap of a CrossMAE checkpoint's inter-block attention weights (decoder block x encoder feature map).

    python tools/plot_inter_block.py --checkpoint output/pretrain/checkpoint.pth --output out/inter_block.png

Existing output files are replaced only with ``--overwrite``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401

from crossmae.analysis import figures  # noqa: E402
from crossmae.analysis.inter_block import inter_block_weights  # noqa: E402
from crossmae.analysis.loading import add_model_args, load_from_args  # noqa: E402
from crossmae.userfiles import check_output_file  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--output", required=True, help="PNG path; the weights go beside it as .json")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = p.parse_args(argv)
    try:
        for path in (args.output, Path(args.output).with_suffix(".json")):
            check_output_file(path, args.overwrite)
        model, info = load_from_args(args)
        weight, names = inter_block_weights(model)
    except (ValueError, FileNotFoundError) as e:
        print(f"plot_inter_block: error: {e}", file=sys.stderr)
        return 2
    fig = figures.inter_block_figure(weight, names, args.output,
                                     title=f"{info['description']} ({Path(args.checkpoint).name}): inter-block weights")
    js = Path(args.output).with_suffix(".json")
    js.write_text(json.dumps({"checkpoint": info["path"], "model": info["model"],
                              "model_description": info["description"], "feature_maps": names,
                              "weights": weight.tolist()}, indent=2))
    print(f"wrote {fig} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
