#!/usr/bin/env python
"""Training speed and memory of the dense-prediction recipes at their real sizes, on synthetic batches:
ViTDet Mask R-CNN (configs/det/vitdet_b_100ep.yaml: 1024 px) and UperNet (configs/seg/upernet_vit_base_ade20k.yaml:
512 px), with activation checkpointing of the backbone blocks off and on, optionally under a GPU memory cap
(e.g. --mem-cap-gb 24: does the recipe fit a 24 GB card?).

    python tools/bench_dense.py --tasks det seg --batch-size 2 --mem-cap-gb 24 --output dense.json

Per row: images/s (median over repeats), peak memory, forward GFLOPs per image as the step runs (torch's
counter; Mask R-CNN's heads included, so the count depends on the proposals of that step) and MFU = 3 x forward
FLOPs x images/s over the GPU's dense bf16 peak. Each batch holds COCO-like targets (7 boxes with masks per
image) or ADE20K-like label maps (150 classes). tools/gpu_check.py runs this as its `dense` section.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401

import torch  # noqa: E402

RECIPES = {"det": ROOT / "configs" / "det" / "vitdet_b_100ep.yaml",
           "seg": ROOT / "configs" / "seg" / "upernet_vit_base_ade20k.yaml"}
OBJECTS_PER_IMAGE = 7  # COCO train2017 averages 7.3 instances per image


def build_task(task: str, overrides: list[str], act_ckpt: bool):
    """(model, image_size, make_batch(n, device, generator), loss(model, batch) -> scalar) for a recipe."""
    from crossmae.config import load_config
    if task == "det":
        from det.train import DetConfig, build_detector, det_loss
        cfg = load_config(DetConfig, RECIPES["det"], [*overrides, f"model.use_act_checkpoint={act_ckpt}"])
        num_classes = 80
        model, size = build_detector(cfg, num_classes), cfg.image_size

        def make_batch(n, device, gen):
            images, targets = [], []
            for _ in range(n):
                wh = torch.randint(size // 16, size // 2, (OBJECTS_PER_IMAGE, 2), generator=gen)
                xy = (torch.rand(OBJECTS_PER_IMAGE, 2, generator=gen) * (size - wh)).floor()
                boxes = torch.cat([xy, xy + wh], 1).float()
                masks = torch.zeros(OBJECTS_PER_IMAGE, size, size, dtype=torch.uint8)
                for m, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
                    m[y0:y1, x0:x1] = 1
                images.append(torch.rand(3, size, size, generator=gen).to(device))
                targets.append({"boxes": boxes.to(device), "masks": masks.to(device),
                                "labels": torch.randint(1, num_classes + 1, (OBJECTS_PER_IMAGE,), generator=gen).to(device)})
            return images, targets
        return model, size, make_batch, lambda model, batch: det_loss(model, batch)[0]
    if task == "seg":
        from seg.config import SegConfig
        from seg.model import seg_loss
        from seg.train import build_model
        cfg = load_config(SegConfig, RECIPES["seg"], [*overrides, f"model.backbone.use_act_checkpoint={act_ckpt}"])
        size, num_classes = cfg.data.crop_size, cfg.model.num_classes

        def make_batch(n, device, gen):
            img = torch.randn(n, 3, size, size, generator=gen)
            label = torch.randint(0, num_classes, (n, size, size), generator=gen)
            return img.to(device), label.to(device)
        return build_model(cfg), size, make_batch, lambda model, batch: seg_loss(model, *batch)[0]
    raise ValueError(f"unknown task {task!r}; one of {sorted(RECIPES)}")


def forward_flops(model, loss_fn, batch) -> int:
    from crossmae.analysis.flops import count_flops
    return count_flops(lambda: loss_fn(model, batch))["total"]


def time_task(task: str, overrides: list[str], act_ckpt: bool, batch_size: int, device: torch.device,
              precision: str, repeats: int = 3, steps_per_repeat: int = 3, warmup: int = 2) -> dict:
    """One row: a training step (forward, backward, AdamW) timed on one fixed synthetic batch."""
    from crossmae.engine.loop import autocast
    torch.manual_seed(0)
    model, size, make_batch, loss_fn = build_task(task, overrides, act_ckpt)
    model.to(device).train()
    batch = make_batch(batch_size, device, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    row = {"task": task, "image_size": size, "batch_size": batch_size, "act_ckpt": act_ckpt, "precision": precision,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "oom": False}

    def step():
        with autocast(precision, device):
            loss = loss_fn(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(warmup):
            row["loss"] = float(step().detach())
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(steps_per_repeat):
                step()
            sync()
            times.append((time.perf_counter() - t0) / steps_per_repeat)
        with autocast(precision, device):
            row["gflops_per_image"] = forward_flops(model, loss_fn, batch) / batch_size / 1e9
        opt.zero_grad(set_to_none=True)
    except torch.cuda.OutOfMemoryError as e:
        row.update(oom=True, error=str(e).splitlines()[0])
        return row
    finally:
        if device.type == "cuda":
            row["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
            del opt, model, batch
            torch.cuda.empty_cache()
    row["step_s"] = statistics.median(times)
    row["images_per_s"] = batch_size / row["step_s"]
    return row


def add_mfu(rows: list[dict], peak_tflops: float | None) -> None:
    for r in rows:
        if peak_tflops and r.get("images_per_s"):
            r["mfu"] = 3 * r["gflops_per_image"] * 1e9 * r["images_per_s"] / (peak_tflops * 1e12)


def dense_rows(tasks, batch_size: int, device: torch.device, precision: str, act_ckpt=(False, True),
               mem_cap_gb: float | None = None, overrides: dict | None = None, **timing) -> list[dict]:
    """Rows for every task x checkpointing setting; with ``mem_cap_gb`` the process may use only that much of the
    GPU (torch.cuda.set_per_process_memory_fraction), so an OOM row means "does not fit a card of that size"."""
    if mem_cap_gb is not None:
        if device.type != "cuda":
            raise ValueError("--mem-cap-gb needs a CUDA device")
        total = torch.cuda.get_device_properties(device).total_memory / 2 ** 30
        torch.cuda.set_per_process_memory_fraction(min(1.0, mem_cap_gb / total), device)
    rows = []
    try:
        for task in tasks:
            for ckpt in act_ckpt:
                row = time_task(task, (overrides or {}).get(task, []), ckpt, batch_size, device, precision, **timing)
                rows.append({**row, "mem_cap_gb": mem_cap_gb})
    finally:
        if mem_cap_gb is not None:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    return rows


def table(rows: list[dict]) -> list[dict]:
    def f(v, nd):
        return "-" if v is None else f"{v:.{nd}f}"
    return [{"task": r["task"], "px": r["image_size"], "batch": r["batch_size"], "act. ckpt": r["act_ckpt"],
             "mem cap GB": r.get("mem_cap_gb") or "-", "img/s": f(r.get("images_per_s"), 1),
             "s/iter": f(r.get("step_s"), 3), "GFLOPs/img": f(r.get("gflops_per_image"), 0),
             "MFU": "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%",
             "peak mem GB": f(r.get("peak_memory_gb"), 1), "OOM": r["oom"]} for r in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["det", "seg"], choices=sorted(RECIPES))
    p.add_argument("--batch-size", type=int, default=2, help="images per GPU (ViTDet recipe: 8; mmseg: 2)")
    p.add_argument("--act-ckpt", choices=["off", "on", "both"], default="both")
    p.add_argument("--mem-cap-gb", type=float, help="cap this process's GPU memory (e.g. 24)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps-per-repeat", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, help="dense bf16 peak (default: from the GPU's name)")
    p.add_argument("--output", help="write the rows as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    a = p.parse_args(argv)
    if a.output:  # a results file of the user's is replaced only with --overwrite
        from crossmae.userfiles import OutputExistsError, check_output_file
        try:
            check_output_file(a.output, a.overwrite)
        except OutputExistsError as e:
            print(f"bench_dense: error: {e}", file=sys.stderr)
            return 2
    from crossmae.engine.distributed import resolve_device
    from crossmae.engine.loop import resolve_precision
    device = resolve_device(a.device)
    precision = resolve_precision(a.precision, device)
    ckpt = {"off": (False,), "on": (True,), "both": (False, True)}[a.act_ckpt]
    rows = dense_rows(a.tasks, a.batch_size, device, precision, ckpt, a.mem_cap_gb, repeats=a.repeats,
                      steps_per_repeat=a.steps_per_repeat)
    if device.type == "cuda":
        from crossmae.analysis.benchmark import peak_tflops
        add_mfu(rows, a.peak_tflops or peak_tflops(torch.cuda.get_device_name(device)))
    from crossmae.analysis.tables import markdown_table
    shown = table(rows)
    print(markdown_table(list(shown[0]), [list(r.values()) for r in shown]))
    if a.output:
        Path(a.output).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
