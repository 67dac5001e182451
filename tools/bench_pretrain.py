#!/usr/bin/env python
"""Pretraining compute: MAE vs CrossMAE FLOPs, parameters, step time, memory, images/s and MFU.

    python tools/bench_pretrain.py                                   # CPU: FLOPs for S/B/L/H, timing for ViT-S
    python tools/bench_pretrain.py --sizes small base large huge --batch-size 128 --output bench.json   # GPU

FLOPs and parameters are counted on the meta device for every size in --flop-sizes (seconds);
timing runs every configuration in --configs at every size in --sizes, interleaved.

    python tools/bench_pretrain.py --before 2e3ab29^ --sizes small base --configs cross0.25-d12 cross0.75-d12 mae-d8

times the crossmae package of an earlier commit ("before", extracted with git archive into a temporary
directory and imported as its own package) against the working tree ("after") in the same interleaved
rounds, and checks that both give the same loss and gradients on the same weights, images and masks.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401

import torch  # noqa: E402

from crossmae.analysis import benchmark as B  # noqa: E402


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="*", choices=list(B.SIZES), default=None,
                   help="sizes to time (default: small on CPU, all on GPU; none: FLOPs only)")
    p.add_argument("--flop-sizes", nargs="+", choices=list(B.SIZES), default=list(B.SIZES))
    p.add_argument("--configs", nargs="+", default=list(B.CONFIGS) if cuda else list(B.PAPER_CONFIGS),
                   help=f"configurations to time, from {', '.join(B.CONFIGS)} (default: all on GPU, "
                        f"{' '.join(B.PAPER_CONFIGS)} on CPU); FLOPs are counted for all of them")
    p.add_argument("--batch-size", type=int, default=64 if cuda else 4)
    p.add_argument("--repeats", type=int, default=10 if cuda else 3, help="timed rounds per configuration")
    p.add_argument("--warmup", type=int, default=2 if cuda else 1, help="untimed rounds first")
    p.add_argument("--steps-per-repeat", type=int, default=5 if cuda else 1)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (CPU device only). 1 by default: then the process CPU time is the work done, "
                        "even with other jobs on the machine; more threads measure throughput instead")
    p.add_argument("--precision", default="auto", help="auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "flash"])
    p.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s for MFU (default: by GPU name)")
    p.add_argument("--model-kwargs", default="{}",
                   help='JSON model keyword arguments applied to every configuration, '
                        'e.g. \'{"decoder_embed_dim": 768}\'')
    p.add_argument("--before", default=None, metavar="REV",
                   help="also time the crossmae package at this git revision, paired with the working tree")
    p.add_argument("--compile", action="store_true", help="time torch.compile(model)")
    p.add_argument("--compare-compile", action="store_true",
                   help="time eager and torch.compile(model) side by side in the same interleaved rounds")
    p.add_argument("--master-weights", action="store_true",
                   help="time autocast vs bf16 weights with fp32 master copies in the optimizer, interleaved")
    p.add_argument("--output", default=None, help="write everything as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    args = p.parse_args(argv)
    if args.output:  # a results file of the user's is replaced only with --overwrite
        from crossmae.userfiles import OutputExistsError, check_output_file
        try:
            check_output_file(args.output, args.overwrite)
        except OutputExistsError as e:
            print(f"bench_pretrain: error: {e}", file=sys.stderr)
            return 2
    try:
        configs = B.parse_configs(args.configs)
    except ValueError as e:
        p.error(str(e))
    try:
        overrides = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        p.error(f"--model-kwargs is not valid JSON: {e}")
    sizes = args.sizes if args.sizes is not None else (list(B.SIZES) if args.device.startswith("cuda") else ["small"])

    threads_before = torch.get_num_threads()
    if not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    try:
        run(args, configs, sizes, overrides)
    finally:
        torch.set_num_threads(threads_before)
    return 0


def package_at(rev: str, name: str = "crossmae_before"):
    """Import the ``crossmae`` package as it was at git revision ``rev`` under the name ``name``
    (its imports are relative, so the copy is self-contained)."""
    import importlib
    import io
    import subprocess
    import tarfile
    import tempfile
    repo = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="crossmae_rev_"))
    try:
        blob = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", rev, "crossmae"], check=True,
                              capture_output=True).stdout
    except subprocess.CalledProcessError as e:
        raise ValueError(f"--before {rev}: git archive failed: {e.stderr.decode().strip()}") from None
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(tmp)
    (tmp / "crossmae").rename(tmp / name)
    sys.path.insert(0, str(tmp))
    return importlib.import_module(name)


def package_builder(pkg):
    """(model name, kwargs) -> (model, optimizer) with ``pkg``'s own build_model and build_adamw."""
    import importlib
    models, optim = (importlib.import_module(f"{pkg.__name__}.{m}") for m in ("models", "engine.optim"))

    def build(name, kwargs):
        model = models.build_model(name, **kwargs)
        return model, optim.build_adamw(model, 1e-4, 0.05, betas=(0.9, 0.95))
    return build


def run(args, configs, sizes, overrides) -> None:
    from crossmae.models.blocks import set_backend
    set_backend(args.attention)
    builders, tags = None, ("before", "after")
    if args.compare_compile:
        def compiled(name, kwargs):
            model, optimizer = B.default_builder(name, kwargs)
            return torch.compile(model), optimizer
        builders, tags = {"eager": B.default_builder, "compiled": compiled}, ("eager", "compiled")
    elif args.master_weights:
        builders, tags = {"autocast": B.default_builder, "master": B.master_weights_builder}, ("autocast", "master")
    elif args.before:
        old = package_at(args.before)
        import importlib
        importlib.import_module(old.__name__ + ".models.blocks").set_backend(args.attention)
        builders = {"before": package_builder(old), "after": B.default_builder}
    all_configs = list(B.CONFIGS.values())
    counted = B.count_all(args.flop_sizes, all_configs, args.img_size, overrides)
    ratios = B.decoder_ratios(counted)
    timed = []
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    peak = args.peak_tflops or (B.peak_tflops(device_name) if args.device.startswith("cuda") else None)
    for size in sizes:
        if size not in args.flop_sizes:
            counted += B.count_all([size], all_configs, args.img_size, overrides)
        timed += B.time_configs(size, configs, args.batch_size, args.repeats, args.warmup, args.steps_per_repeat,
                                args.img_size, args.device, args.precision, overrides=overrides, builders=builders,
                                compile=args.compile)
    B.add_mfu(timed, counted, peak)
    print(f"device: {device_name}" + (f", peak {peak} TFLOP/s bf16" if peak else "")
          + ("" if args.device.startswith("cuda") else f", {torch.get_num_threads()} thread(s)"))
    print(B.format_report(counted, [t for t in timed if t["impl"] in ("", tags[1])], ratios))
    pairs, losses = [], []
    if builders:
        pairs = B.paired_ratios(timed, *tags)
        if args.before and not (args.compare_compile or args.master_weights):
            for size in sizes:
                losses += B.compare_steps(size, configs, builders, img_size=args.img_size, overrides=overrides)
        what = ("eager vs torch.compile" if args.compare_compile else
                "autocast vs bf16 weights + fp32 masters" if args.master_weights else
                f"before ({args.before}) vs after (working tree)")
        print(f"\n{what}, batch {args.batch_size}, {args.repeats} interleaved repeats"
              + ("; losses/gradients on the same weights, images and masks" if losses else "") + ":\n")
        print(B.format_before_after(pairs, losses, tags))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(
            {"device": device_name, "threads": torch.get_num_threads(), "peak_tflops": peak, "args": vars(args),
             "configs": B.config_dicts(configs), "flops": counted, "decoder_ratios": ratios, "timing": timed,
             "before_after": pairs, "step_equality": losses,
             "paper": {"decoder_gflops_vit_b": B.PAPER_DECODER_GFLOPS, "ratio_range": B.PAPER_RATIO_RANGE}},
            indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
