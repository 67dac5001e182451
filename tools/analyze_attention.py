#!/usr/bin/env python
"""Decoder attention analysis of a pretrained checkpoint.

MAE: the attention mass mask-token queries put on visible vs other mask tokens, per decoder block,
over a dataset (the paper's Figure 1; definitions in crossmae/analysis/attention.py, docs/tools.md).
CrossMAE: the cross-attention maps of one query patch in every decoder block.

    python tools/analyze_attention.py --checkpoint mae_pretrain.pth --model mae_vit_base_patch16 \\
        --data /data/imagenet --max-images 5000 --output-dir out/attention

The output directory must be new or empty; ``--overwrite`` replaces the files this tool writes there.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401

import torch  # noqa: E402

from crossmae.analysis import attention as A  # noqa: E402
from crossmae.analysis import figures  # noqa: E402
from crossmae.analysis.collect import load_references  # noqa: E402
from crossmae.analysis.loading import (add_model_args, image_folder, image_size, load_from_args, loader,  # noqa: E402
                                       move_masks, spread_batch)
from crossmae.analysis.reconstruction import denormalize_batch  # noqa: E402
from crossmae.models import MAE  # noqa: E402
from crossmae.userfiles import check_output_dir  # noqa: E402

WRITTEN = ("attention_mass.png", "query_maps_q<query>.png", "attention.json")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", required=True, help="ImageFolder root (its val/ split if present)")
    p.add_argument("--max-images", type=int, default=1000, help="a fixed random subset of this many images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--mask-ratio", type=float, default=None, help="MAE: default the model's own")
    p.add_argument("--query", type=int, default=None, help="CrossMAE: query patch index (default: the centre)")
    p.add_argument("--num-vis", type=int, default=4, help="CrossMAE: images in the figure, spread over the classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", required=True, help="new or empty directory, unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --output-dir: replace the files this tool writes there "
                        f"({', '.join(WRITTEN)}), keep every other file")
    args = p.parse_args(argv)
    try:
        check_output_dir(args.output_dir, WRITTEN, args.overwrite)
        model, info = load_from_args(args)
        data = image_folder(args.data, image_size(model), args.max_images, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"analyze_attention: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.checkpoint).parent.name + "/" + Path(args.checkpoint).name
    if isinstance(model, MAE):
        result = A.dataset_attention_mass(model, loader(data, args.batch_size, args.num_workers), args.mask_ratio,
                                          args.seed)
        ref = load_references().get("attention_mass")
        fig = figures.attention_mass_figure(result, out / "attention_mass.png", ref,
                                            title=f"{info['description']}: {name}")
        s, m = result["sum_over_blocks"], result["mean_over_blocks"]
        print(f"{result['num_images']} images, mask ratio {result['mask_ratio']}: sum over "
              f"{len(result['blocks'])} blocks, visible {s['paper/visible']:.3f} vs masked {s['paper/masked']:.3f} "
              f"(paper, MAE-B: {ref['sum_visible']} vs {ref['sum_masked']}); share of attention per block: visible "
              f"{m['mass/visible']:.3f}, masked {m['mass/masked']:.3f}, cls {m['mass/cls']:.3f}")
        result.update(checkpoint=info["path"], model=info["model"], model_description=info["description"],
                      reference=ref)
    else:
        query = args.query if args.query is not None else (model.grid_size[0] // 2) * model.grid_size[1] + \
            model.grid_size[1] // 2
        result = A.dataset_query_maps(model, loader(data, args.batch_size, args.num_workers), query, args.seed)
        vis = spread_batch(data, args.num_vis).to(next(model.parameters()).device)
        g = torch.Generator().manual_seed(args.seed)
        masks = move_masks(A.masks_with_query(vis.shape[0], model.num_patches, model.mask_ratio, model.pred_ratio,
                                              query, generator=g), vis.device)
        maps = A.crossmae_query_maps(model, vis, masks, query).cpu()
        fig = figures.query_maps_figure(denormalize_batch(vis), masks.visible_mask.cpu(), maps, query,
                                        model.grid_size, out / f"query_maps_q{query}.png",
                                        title=f"{info['description']}: cross-attention of patch {query}")
        result["figure_maps"] = maps.nan_to_num(nan=-1.0).tolist()  # [block][image][row][col]; -1: masked, not a key
        print(f"{result['num_images']} images, query patch {query}: attention-weighted distance to the visible "
              f"patches per block " + ", ".join(f"{d:.2f}" for d in result["mean_distance"]))
        result.update(checkpoint=info["path"], model=info["model"], model_description=info["description"])
    (out / "attention.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {fig} and {out / 'attention.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
