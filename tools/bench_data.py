#!/usr/bin/env python
"""Pretraining input pipeline benchmark: images/s per worker process, classic vs fast, and bytes to the device.

    python tools/bench_data.py                       # writes an ImageNet-like JPEG set to /tmp, 1 thread
    python tools/bench_data.py --images 400 --repeats 9 --output bench_data.json

The data set is made from the photographs bundled in scikit-image and scikit-learn, cropped and
resized to ImageNet-like sizes (mostly 500 px on the long side, e.g. 500x375; a few 2000-2600 px) and
re-encoded as JPEG quality 90 (4:2:0), in the ImageFolder layout.

Both pipelines do what one DataLoader worker does (read, decode, augment, collate a batch) in this
process, on the same images, interleaved: every repeat times one pass of each, in alternating order,
and the speed-up is the per-repeat ratio (median [min-max]). 'classic' is the MAE / official CrossMAE
pipeline: torchvision ImageFolder + PIL + RandomResizedCrop(224, scale=(0.2, 1), bicubic) + flip +
ToTensor + Normalize (float32). 'fast' is crossmae.data.fast_rrc (reduced-scale JPEG decode, uint8).
PSNR compares the fast crop with the classic crop of the same box (full decode, crop, bicubic resize).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "cat")


def source_photos() -> list[np.ndarray]:
    """Colour photographs bundled in scikit-image and scikit-learn (uint8 RGB)."""
    import skimage.data
    from sklearn.datasets import load_sample_images
    photos = [getattr(skimage.data, n)()[..., :3] for n in PHOTOS]
    return photos + list(load_sample_images().images)


def imagenet_like_size(rng: np.random.Generator, large_fraction: float) -> tuple[int, int]:
    """(width, height): mostly 500 on the long side with ImageNet's common aspects, some 2000+ px."""
    aspect = rng.choice([4 / 3, 4 / 3, 4 / 3, 3 / 2, 1.0, 3 / 4])
    if rng.random() < large_fraction:
        long_side = int(rng.integers(2000, 2601))
    else:
        long_side = 500 if rng.random() < 0.8 else int(rng.integers(300, 500))
    return (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)


def make_jpeg_set(root: str | Path, n: int = 200, classes: int = 4, large_fraction: float = 0.05,
                  quality: int = 90, seed: int = 0) -> Path:
    """Write ``n`` JPEGs as ``root/<class>/<i>.jpg`` (random crops of the bundled photos, resized); returns root."""
    root = Path(root)
    done = root / f".complete-{n}-{classes}-{large_fraction}-{quality}-{seed}"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(p) for p in source_photos()]
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = imagenet_like_size(rng, large_fraction)
        pw, ph = photo.size
        cw = min(pw, round(ph * w / h))  # largest crop of the target aspect, then a random 60-100% of it
        ch = round(cw * h / w)
        f = rng.uniform(0.6, 1.0)
        cw, ch = max(16, int(cw * f)), max(16, int(ch * f))
        x, y = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        img = photo.resize((w, h), Image.BICUBIC, box=(x, y, x + cw, y + ch))
        d = root / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"{i:05d}.jpg", quality=quality)  # PIL's default subsampling at q90: 4:2:0, like ImageNet
    done.touch()
    return root


def classic_dataset(root: Path, size: int = 224, min_scale: float = 0.2):
    """The MAE / official CrossMAE pretraining data: torchvision ImageFolder and transforms, float32."""
    from torchvision import datasets, transforms

    from crossmae.data import IMAGENET_MEAN, IMAGENET_STD
    tf = transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return datasets.ImageFolder(str(root), transform=tf)


def fast_dataset(root: Path, size: int = 224, min_scale: float = 0.2, draft: bool = True):
    from crossmae.data.fast_rrc import FastPretrainFolder
    return FastPretrainFolder(root, size, min_scale, draft=draft)


def one_pass(dataset, indices: list[int], batch_size: int) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds) to produce the batches of ``indices`` as a worker would, and
    the bytes per image of the batch. With one thread the CPU time is the work done, even while other
    jobs share the cores; wall time also counts waiting for them."""
    from torch.utils.data import default_collate
    t0, c0 = time.perf_counter(), time.process_time()
    nbytes = 0
    for s in range(0, len(indices), batch_size):
        imgs, _ = default_collate([dataset[i] for i in indices[s:s + batch_size]])
        nbytes = imgs[0].numel() * imgs.element_size()
    return time.perf_counter() - t0, time.process_time() - c0, nbytes


def interleaved(pipelines: dict, indices: list[int], repeats: int, batch_size: int, warmup: int = 1) -> dict:
    """images/s of every pipeline per repeat, in an order rotated each repeat (drifts hit all alike)."""
    names = list(pipelines)
    rates: dict[str, list[float]] = {n: [] for n in names}
    cpu_rates: dict[str, list[float]] = {n: [] for n in names}
    nbytes = {}
    for rep in range(warmup + repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            torch.manual_seed(rep)  # the same crops for every pipeline in a repeat
            dt, cpu, nbytes[name] = one_pass(pipelines[name], indices, batch_size)
            if rep >= warmup:
                rates[name].append(len(indices) / dt)
                cpu_rates[name].append(len(indices) / cpu)
    return {"rates": rates, "cpu_rates": cpu_rates, "bytes_per_image": nbytes}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def crop_psnr(root: Path, n: int, size: int = 224, min_scale: float = 0.2, seed: int = 0) -> list[float]:
    """PSNR (dB, 8-bit) of the fast crop vs the classic crop of the same box, for ``n`` images."""
    from torchvision.datasets.folder import make_dataset

    from crossmae.data.fast_rrc import random_resized_crop_file, sample_box
    samples = make_dataset(str(root), {p.name: i for i, p in enumerate(sorted(root.iterdir())) if p.is_dir()},
                           extensions=(".jpg",))
    out = []
    for k, (path, _) in enumerate(samples[:n]):
        fast = random_resized_crop_file(path, size, (min_scale, 1.0), flip=False,
                                        generator=torch.Generator().manual_seed(seed + k)).numpy()
        with Image.open(path) as im:
            full = im.convert("RGB")
        top, left, h, w = sample_box(*full.size, (min_scale, 1.0), generator=torch.Generator().manual_seed(seed + k))
        ref = np.asarray(full.crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC))
        mse = float(((fast.transpose(1, 2, 0).astype(np.float64) - ref) ** 2).mean())
        out.append(float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/crossmae_bench_jpegs", help="where the JPEG set is written")
    p.add_argument("--images", type=int, default=200, help="images in the set (each pass reads all of them)")
    p.add_argument("--large-fraction", type=float, default=0.05, help="fraction of 2000-2600 px images")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--psnr-images", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker uses 1)")
    p.add_argument("--output", default=None, help="write the results as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    args = p.parse_args(argv)
    if args.output:  # a results file of the user's is replaced only with --overwrite
        from crossmae.userfiles import OutputExistsError, check_output_file
        try:
            check_output_file(args.output, args.overwrite)
        except OutputExistsError as e:
            print(f"bench_data: error: {e}", file=sys.stderr)
            return 2
    if args.images < 1 or args.repeats < 1:
        p.error("--images and --repeats must be >= 1")
    torch.set_num_threads(args.threads)
    root = make_jpeg_set(args.root, args.images, large_fraction=args.large_fraction)
    pipelines = {"classic": classic_dataset(root), "fast": fast_dataset(root)}
    indices = list(range(len(pipelines["classic"])))
    res = interleaved(pipelines, indices, args.repeats, args.batch_size)
    ratios = [f / c for f, c in zip(res["rates"]["fast"], res["rates"]["classic"])]
    cpu_ratios = [f / c for f, c in zip(res["cpu_rates"]["fast"], res["cpu_rates"]["classic"])]
    psnr = crop_psnr(root, min(args.psnr_images, args.images))
    finite = [v for v in psnr if np.isfinite(v)]
    sizes = [Image.open(path).size for path, _ in pipelines["classic"].samples]
    summary = {
        "images": len(indices), "threads": args.threads, "batch_size": args.batch_size, "repeats": args.repeats,
        "mean_file_kb": float(np.mean([Path(s).stat().st_size for s, _ in pipelines["classic"].samples]) / 1024),
        "median_size": [int(np.median([s[0] for s in sizes])), int(np.median([s[1] for s in sizes]))],
        "large_images": sum(max(s) >= 2000 for s in sizes),
        "images_per_s": {k: spread(v) for k, v in res["rates"].items()},
        "images_per_cpu_s": {k: spread(v) for k, v in res["cpu_rates"].items()},
        "speedup": spread(ratios), "speedup_cpu": spread(cpu_ratios), "bytes_per_image": res["bytes_per_image"],
        "psnr_db": {"mean": float(np.mean(finite)) if finite else float("inf"),
                    "min": min(psnr), "identical": len(psnr) - len(finite), "n": len(psnr)},
    }
    ips, sp = summary["images_per_s"], summary["speedup"]
    print(f"{summary['images']} JPEGs (median {summary['median_size'][0]}x{summary['median_size'][1]}, "
          f"{summary['large_images']} of 2000+ px, mean {summary['mean_file_kb']:.0f} KB), "
          f"{args.threads} thread, batch {args.batch_size}, {args.repeats} interleaved repeats")
    cps, spc = summary["images_per_cpu_s"], summary["speedup_cpu"]
    for k in ("classic", "fast"):
        print(f"  {k:8s} {ips[k]['median']:7.1f} img/s per process [{ips[k]['min']:.1f}-{ips[k]['max']:.1f}], "
              f"{cps[k]['median']:7.1f} img per CPU-second [{cps[k]['min']:.1f}-{cps[k]['max']:.1f}], "
              f"{summary['bytes_per_image'][k]:,} bytes/image to the device")
    print(f"  fast / classic: {sp['median']:.2f}x [{sp['min']:.2f}-{sp['max']:.2f}] wall, "
          f"{spc['median']:.2f}x [{spc['min']:.2f}-{spc['max']:.2f}] CPU time")
    ps = summary["psnr_db"]
    print(f"  PSNR fast vs classic, same box: mean {ps['mean']:.1f} dB, min {ps['min']:.1f} dB "
          f"({ps['identical']} of {ps['n']} bit-identical)")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
