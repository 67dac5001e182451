#!/usr/bin/env python
"""One-command GPU acceptance (about 10 minutes on one GPU): writes gpu_check.json and gpu_check.md.

    python tools/gpu_check.py --output-dir output/gpu_check
    python tools/gpu_check.py --sections step sdpa --sizes base      # a subset

Sections (each reports ok / failed / skipped with its reason; a failure does not stop the others):
  environment  torch / CUDA / GPU / optional packages
  step         bf16 training step (forward + backward + fused AdamW) of ViT-B and ViT-L, CrossMAE g0.25 and
               g0.75 (decoder depth 12) and MAE (depth 8): images/s, MFU, peak memory; torch.compile on and
               off (compile for --compile-sizes only, to stay within the time budget; --compile-modes); and
               Hiera-B (--hiera-sizes), CrossMAE-Hiera g0.25 and MAE-Hiera (decoder depth 8), eager
  profile      where a ViT-B g0.25 eager step's GPU time goes, at batch 128 and --batch-size: the share of the
               wall time the GPU is busy (low = launch-bound), kernels per step, the top kernels
  sdpa         which scaled_dot_product_attention kernels actually ran in a training step (fails on the
               math fallback)
  flash_attn   attention=flash (the flash-attn package) vs SDPA on the same weights and masks, if installed
  loader       images/s of the fast CPU pipeline with --workers DataLoader workers, of device decode
               (batched decode_jpeg on the GPU), and of data.pipeline=nvimgcodec (the hardware JPEG decoder, if
               nvImageCodec is installed) at 8 and 16 workers, against the model's images/s: is the GPU starved?
  loop         `crossmae pretrain` itself (torchrun, one process: the DDP wrapper and no_sync over NCCL; compile;
               accumulation 2) on synthetic uint8 images for --loop-steps steps: steady-state images/s against the
               step section's ViT-B g0.25 figure (the loop's overhead: logging, schedule, accumulation, DDP)
  dense        ViTDet-B Mask R-CNN at 1024 px and UperNet ViT-B at 512 px (tools/bench_dense.py): training images/s,
               peak memory, MFU at the recipes' per-GPU batch, then at batch 2 under a --dense-mem-cap-gb cap (does
               the recipe fit a 24 GB card?), activation checkpointing of the backbone off and on
  tasks        tiny pretraining, fine-tuning, detection and segmentation runs on CUDA through their
               normal entry points (demo configs, a few iterations)
  ddp          two-process pretraining over NCCL (torchrun), when there are >= 2 GPUs

MFU convention: 3 x the forward FLOPs of the step as the model runs it (2 FLOPs per multiply-add; only
the visible tokens in the encoder and the predicted queries in the CrossMAE decoder; attention matmuls
included) x images/s, over the GPU's dense bf16 peak (crossmae/analysis/benchmark.py PEAK_BF16_TFLOPS).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401

import torch  # noqa: E402

SECTIONS = ("environment", "step", "profile", "sdpa", "flash_attn", "loader", "loop", "dense", "tasks", "ddp")

# SDPA kernels as they appear as aten ops in the profiler; the math fallback is what we must not see
FUSED_SDPA = {"_scaled_dot_product_flash_attention": "flash", "_scaled_dot_product_efficient_attention": "efficient",
              "_scaled_dot_product_cudnn_attention": "cudnn", "_scaled_dot_product_flash_attention_for_cpu": "cpu-flash",
              "_scaled_dot_product_fused_attention_overrideable": "fused-overrideable"}
MATH_SDPA = "_scaled_dot_product_attention_math"


class Skip(Exception):
    """A section that cannot run here; its message is the reason written in the report."""


def need_cuda(min_gpus: int = 1) -> None:
    if not torch.cuda.is_available():
        raise Skip("no CUDA device")
    if torch.cuda.device_count() < min_gpus:
        raise Skip(f"needs >= {min_gpus} GPUs, found {torch.cuda.device_count()}")


# ---------------------------------------------------------------------------------------------- sections
def environment(args) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
            "cpu_count": os.cpu_count()}
    import torchvision
    info["torchvision"] = torchvision.__version__
    if torch.cuda.is_available():
        from crossmae.analysis.benchmark import peak_tflops
        name = torch.cuda.get_device_name(0)
        info.update(gpu=name, gpu_count=torch.cuda.device_count(), cuda=torch.version.cuda,
                    bf16=torch.cuda.is_bf16_supported(), peak_bf16_tflops=args.peak_tflops or peak_tflops(name),
                    memory_gb=torch.cuda.get_device_properties(0).total_memory / 2 ** 30)
    for pkg in ("flash_attn", "timm"):
        try:
            info[pkg] = __import__(pkg).__version__
        except ImportError:
            info[pkg] = None
    return {"data": info}


def step(args) -> dict:
    need_cuda()
    from crossmae.analysis import benchmark as B
    peak = args.peak_tflops or B.peak_tflops(torch.cuda.get_device_name(0))
    rows = step_rows(args, args.sizes, B.parse_configs(args.configs), peak)
    rows += step_rows(args, args.hiera_sizes, list(B.HIERA_CONFIGS.values()), peak, compile_sizes=())
    return {"data": {"peak_bf16_tflops": peak, "rows": rows}, "table": step_table(rows)}


def step_rows(args, sizes: list[str], configs: list, peak: float | None, compile_sizes=None, device: str = "cuda",
              precision: str = "bf16", img_size: int = 224, overrides: dict | None = None) -> list[dict]:
    """Timed training steps of ``configs`` at every size, with MFU from their meta-device FLOPs; with
    ``args.master_weights`` each configuration twice in the same interleaved rounds: bf16 autocast ("autocast")
    and bf16 weights with fp32 master copies ("master", issue 18's candidate)."""
    from crossmae.analysis import benchmark as B
    compile_sizes = args.compile_sizes if compile_sizes is None else compile_sizes
    builders = ({"autocast": B.default_builder, "master": B.master_weights_builder}
                if getattr(args, "master_weights", False) else None)
    counted = B.count_all(sizes, configs, img_size=img_size, overrides=overrides)
    rows = []
    for size in sizes:
        for compile in (False, *args.compile_modes) if size in compile_sizes else (False,):
            timed = B.time_configs(size, configs, args.batch_size, args.repeats, warmup=2, steps_per_repeat=5,
                                   img_size=img_size, device=device, precision=precision, compile=compile,
                                   progress=False, overrides=overrides, builders=builders)
            B.add_mfu(timed, counted, peak)
            for pair in B.paired_ratios(timed, "autocast", "master") if builders else ():  # same repeats
                row = next(t for t in timed if t["impl"] == "master" and t["config"] == pair["config"])
                row["speedup_vs_autocast"] = pair["speedup_median"]
            rows += timed
    for r in rows:  # the per-repeat lists are for paired ratios, not for the report
        r.pop("step_s_all", None)
        r.pop("cpu_s_all", None)
    return rows


def step_table(rows: list[dict]) -> list[dict]:
    return [{"size": r["size"], "config": r["label"],
             **({"weights": r["precision"], "vs autocast": _f(r.get("speedup_vs_autocast"), 2)} if r["impl"] else {}),
             "compile": r["compile"], "fused AdamW": r["fused_adamw"],
             "img/s": _f(r.get("images_per_s"), 0), "MFU": _pct(r.get("mfu")),
             "TFLOP/s": _f(r.get("achieved_tflops"), 1), "peak mem GB": _f(_gb(r.get("peak_memory_mb")), 1),
             "OOM": r["oom"]} for r in rows]


def kernel_summary(kernels: list[tuple[str, float]], steps: int, wall_s: float, top: int = 8) -> dict:
    """``kernels``: (name, microseconds) of every GPU kernel / copy recorded over ``steps`` steps that took
    ``wall_s`` seconds in all. Busy share of the wall time, kernels per step and the top kernels by time.
    Only kernel events count: the profiler also gives each aten op the device time of its kernels, and summing
    ops and kernels counts that time twice."""
    per_name: dict[str, float] = {}
    for name, us in kernels:
        per_name[name] = per_name.get(name, 0.0) + us
    busy_ms = sum(per_name.values()) / 1e3 / steps
    wall_ms = wall_s * 1e3 / steps
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1])[:top]
    return {"wall_ms_per_step": wall_ms, "gpu_busy_ms_per_step": busy_ms, "gpu_busy_share": busy_ms / wall_ms,
            "kernels_per_step": len(kernels) / steps,
            "top": [{"kernel": n[:80], "ms/step": round(us / 1e3 / steps, 2), "share of busy": f"{100 * us / 1e3 / steps / busy_ms:.1f}%"}
                    for n, us in ranked]}


def profile_step(args) -> dict:
    need_cuda()
    rows, tops = [], {}
    for batch in sorted({128, args.batch_size}):
        summary = _profile_batch(batch)
        tops[batch] = summary.pop("top")
        rows.append({"batch": batch, **{k: round(v, 3) for k, v in summary.items()},
                     "top kernels": "; ".join(f"{t['kernel'][:40]} {t['share of busy']}" for t in tops[batch][:3])})
        torch.cuda.empty_cache()
    return {"data": {"rows": rows, "top": tops}, "table": rows}


def _profile_batch(batch: int, steps: int = 5) -> dict:
    """kernel_summary of ``steps`` eager bf16 training steps (fused AdamW) of ViT-B CrossMAE g0.25: kernel times
    from a profiled run, wall time from an unprofiled one."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from crossmae.analysis import benchmark as B
    cfg = B.CONFIGS["cross0.25-d12"]
    torch.manual_seed(0)
    model, optimizer = B.default_builder(cfg.model_name("base"), cfg.kwargs(224))
    model = model.cuda().train()
    step = training_step_fn(model, torch.randn(batch, 3, 224, 224, device="cuda"), "bf16", optimizer)
    for _ in range(3):
        step()
    _sync()
    t0 = time.perf_counter()  # the wall time without the profiler, whose per-op overhead would inflate it
    for _ in range(steps):
        step()
    _sync()
    wall = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        _sync()
    kernels = [(e.name, e.time_range.elapsed_us()) for e in prof.events() if e.device_type == DeviceType.CUDA]
    return kernel_summary(kernels, steps, wall)


def sdpa_kernels(fn) -> dict[str, int]:
    """aten SDPA kernels called while running ``fn()`` (profiler op names -> counts)."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        fn()
    names = {}
    for e in prof.events():
        short = e.name.split("::")[-1]
        if short in FUSED_SDPA or short == MATH_SDPA:
            names[short] = names.get(short, 0) + 1
    return names


def training_step_fn(model, imgs, precision: str, optimizer=None):
    """One training step as a closure: forward, backward, and the optimizer's step if one is given."""
    from crossmae.engine.loop import autocast

    def run():
        with autocast(precision, imgs.device):
            loss = model(imgs).loss
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)
    return run


def classify_sdpa(kernels: dict[str, int]) -> tuple[bool, list[str]]:
    """(only fused kernels ran, the backends that ran)."""
    used = sorted({FUSED_SDPA.get(k, "math") for k in kernels})
    return bool(kernels) and MATH_SDPA not in kernels, used


def sdpa(args) -> dict:
    need_cuda()
    from crossmae.models import build_model
    rows, ok = [], True
    for name in ("crossmae_vit_base_patch16", "mae_vit_base_patch16"):
        model = build_model(name, pred_ratio=0.25) if name.startswith("crossmae") else build_model(name)
        model = model.cuda().train()
        imgs = torch.randn(8, 3, 224, 224, device="cuda")
        kernels = sdpa_kernels(training_step_fn(model, imgs, "bf16"))
        fused, used = classify_sdpa(kernels)
        ok &= fused
        rows.append({"model": name, "backends": ", ".join(used), "kernels": kernels, "fused only": fused})
        del model
    out = {"data": rows, "table": [{k: v for k, v in r.items() if k != "kernels"} for r in rows]}
    if not ok:
        out["error"] = "the math SDPA fallback ran (see backends): attention is not using a fused kernel"
    return out


def flash_attn(args) -> dict:
    need_cuda()
    try:
        import flash_attn as _  # noqa: F401
    except ImportError:
        raise Skip("flash-attn is not installed (optional extra)") from None
    from crossmae.models import build_model
    from crossmae.models.blocks import set_backend
    torch.manual_seed(0)
    model = build_model("crossmae_vit_base_patch16", pred_ratio=0.25).cuda().eval()
    imgs = torch.randn(4, 3, 224, 224, device="cuda")
    masks = model.sample_masks(imgs, generator=torch.Generator("cuda").manual_seed(0))
    out = {}
    try:
        for backend in ("sdpa", "flash"):
            set_backend(backend)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                out[backend] = model(imgs, masks).pred.float()
    finally:
        set_backend(args.attention)
    diff = float((out["sdpa"] - out["flash"]).abs().max() / out["sdpa"].abs().max())
    res = {"data": {"max_rel_diff_pred": diff}, "table": [{"max |flash - sdpa| / max |sdpa|": f"{diff:.2e}"}]}
    if diff > 2e-2:  # bf16 kernels differ in accumulation order; a wrong layout differs by O(1)
        res["error"] = f"flash-attn and SDPA predictions differ by {diff:.3f} (relative)"
    return res


def loader(args) -> dict:
    from torch.utils.data import DataLoader, RandomSampler

    from crossmae.data.fast_rrc import FastPretrainFolder
    from tools import bench_data
    root = bench_data.make_jpeg_set(Path(args.output_dir) / "jpegs", args.loader_images)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []

    def measure(name, ds, collate=None, on_device=None, workers=None):
        """Steady-state images/s: one epoch of --loader-batches-per-worker batches per worker, drawn with
        replacement from the JPEG set (files in the page cache), timed from the batch after the first
        round of workers has delivered (worker start and pipeline fill excluded) to the last."""
        workers = args.workers if workers is None else workers
        n_batches = max(workers, 1) * args.loader_batches_per_worker + max(workers, 1)
        sampler = RandomSampler(ds, replacement=True, num_samples=n_batches * args.loader_batch)
        dl = DataLoader(ds, batch_size=args.loader_batch, sampler=sampler, num_workers=workers,
                        pin_memory=dev == "cuda", collate_fn=collate, drop_last=True)
        n, t0 = 0, None
        for i, batch in enumerate(dl):
            x = on_device(batch) if on_device else batch[0].to(dev, non_blocking=True)
            if i == max(workers, 1) - 1:
                _sync()
                t0 = time.perf_counter()
            elif t0 is not None:
                n += x.shape[0]
        _sync()
        ips = n / (time.perf_counter() - t0)
        rows.append({"pipeline": name, "workers": workers, "img/s": round(ips, 1),
                     "img/s per worker": round(ips / max(workers, 1), 1)})

    measure("fast (CPU workers, uint8)", FastPretrainFolder(root, 224, 0.2))
    reason = None
    if torch.cuda.is_available():
        from crossmae.data.fast_device import EncodedCropFolder, collate_encoded, decode_crops
        encoded = EncodedCropFolder(root, 224, 0.2)
        measure("device decode (nvJPEG)", encoded, collate_encoded,
                lambda b: decode_crops(b[0], b[1], b[2], b[3], 224, "cuda")[0])
        rows[-1]["PSNR vs CPU decode, same boxes (dB)"] = round(decode_psnr(encoded, "cuda"), 1)
    else:
        reason = "device decode skipped: no CUDA device"
    hardware_decode_rows(root, measure, rows)
    model_ips = _model_ips()
    for r in rows:
        if model_ips and isinstance(r["img/s"], float):
            r["model img/s (ViT-B g0.25 bf16)"] = round(model_ips, 1)
            r["keeps up"] = r["img/s"] >= model_ips
    out = {"data": {"rows": rows, "model_images_per_s": model_ips, "images": args.loader_images}, "table": rows}
    if reason:
        out["note"] = reason
    for r in rows:
        psnr = r.get("PSNR vs CPU decode, same boxes (dB)")
        if psnr is not None and psnr < 30:  # measured 54-60 dB for libjpeg vs PIL's pipeline; a wrong crop is < 20
            what = r["pipeline"].split(" (")[0]
            out["error"] = f"{what} differs from the CPU decode of the same boxes: PSNR {psnr} dB"
    return out


def hardware_decode_rows(root: Path, measure, rows: list) -> None:
    """data.pipeline=nvimgcodec (the GPU's hardware JPEG decoder, region of interest = the crop box) at 8 and 16
    workers, appended to ``rows`` by ``measure``; without nvImageCodec or CUDA, one row saying why it was skipped."""
    from crossmae.data import hw_decode
    from crossmae.data.fast_device import EncodedCropFolder
    name = "nvImageCodec (hardware decoder, ROI)"
    reason = hw_decode.unavailable_reason("cuda")
    if reason:
        rows.append({"pipeline": name, "workers": "-", "img/s": f"skipped: {reason}"})
        return
    encoded, decode = EncodedCropFolder(root, 224, 0.2), hw_decode.HardwareCropDecoder(224, "cuda")
    psnr = round(decode_psnr(encoded, "cuda", decode=decode), 1)
    for workers in (8, 16):
        measure(name, encoded, hw_decode.collate_bytes, decode, workers)
        rows[-1]["PSNR vs CPU decode, same boxes (dB)"] = psnr


def decode_psnr(encoded, device: str, n: int = 16, decode=None) -> float:
    """PSNR (dB) between ``decode_crops`` on ``device`` (or ``decode(batch)``: another decoder) and on the CPU
    (libjpeg) for the same ``n`` samples (bytes, boxes, flips) of an EncodedCropFolder: nvJPEG must give the
    crops the CPU path gives."""
    import math

    from crossmae.data.fast_device import collate_encoded, decode_crops
    data, boxes, flips, jpeg, _ = collate_encoded([encoded[i] for i in range(min(n, len(encoded)))])
    if decode is not None:
        a = decode((data, boxes, flips, jpeg)).cpu().float()
    else:
        a = decode_crops(data, boxes, flips, jpeg, 224, device)[0].cpu().float()
    b = decode_crops(data, boxes, flips, jpeg, 224, "cpu")[0].float()
    mse = float((a - b).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def tasks(args) -> dict:
    if args.task_device != "cpu":  # --task-device cpu: check the command lines on a machine without a GPU
        need_cuda()
    dev = f"device={args.task_device}"
    out_dir = Path(args.output_dir) / "tasks"
    ckpt = out_dir / "pretrain" / "checkpoint.pth"
    tiny = {  # task -> its tiny run (every task is a crossmae command: crossmae/tasks.py)
        "pretrain": ["--config", "configs/pretrain/demo.yaml", "epochs=1", "num_vis=0"],
        "finetune": ["--config", "configs/finetune/demo.yaml", f"pretrained={ckpt}", "epochs=1"],
        "det": ["--config", "configs/det/tiny_cpu.yaml", f"pretrained={ckpt}", "epochs=1", "eval_every=1"],
        "seg": ["--config", "configs/seg/demo.yaml", f"pretrained={ckpt}", "max_iters=20", "iters_per_epoch=10",
                "eval_every=2", "optim.warmup_iters=5"],
    }
    runs = [(task, [sys.executable, "-m", "crossmae.cli", task, *extra, f"output_dir={out_dir / task}", dev])
            for task, extra in tiny.items()]
    return _run_commands(runs, out_dir, args.task_timeout)


def ddp(args) -> dict:
    need_cuda(min_gpus=2)
    out_dir = Path(args.output_dir) / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "crossmae.cli",
           "pretrain", "--config", "configs/pretrain/demo.yaml", f"output_dir={out_dir / 'pretrain'}", "epochs=1",
           "device=cuda", "num_vis=0"]
    return _run_commands([("pretrain x2 (NCCL)", cmd)], out_dir, args.task_timeout)


# ---------------------------------------------------------------------------------------------- helpers
def _run_commands(runs, out_dir: Path, timeout: float) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    for name, cmd in runs:
        log = out_dir / f"{name.split()[0]}.log"
        t0 = time.time()
        try:
            with open(log, "w") as fh:
                rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        rows.append({"run": name, "exit": rc, "seconds": round(time.time() - t0, 1), "log": str(log)})
        if rc != 0:
            failed.append(f"{name} (exit {rc}; last lines of {log}: {_tail(log)})")
    res = {"data": rows, "table": rows}
    if failed:
        res["error"] = "; ".join(failed)
    return res


def _tail(path: Path, n: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def _model_ips() -> float | None:
    step_rows = RESULTS.get("step", {}).get("data", {}).get("rows", [])
    rows = [r for r in step_rows if r["size"] == "base" and r["config"] == "cross0.25-d12" and "images_per_s" in r]
    return max((r["images_per_s"] for r in rows), default=None)


def steady_images_per_s(records: list[dict], images_per_step: int) -> float | None:
    """Images/s between the middle and the last record of the last epoch in ``records`` (train_log.jsonl lines:
    optimizer ``step``, ``epoch`` in (e, e + 1] during epoch e, ``epoch_elapsed_s``), so compilation and warm-up
    at the epoch's start are left out."""
    timed = [r for r in records if "epoch_elapsed_s" in r]
    if not timed:
        return None
    last = [r for r in timed if math.ceil(r["epoch"]) == math.ceil(timed[-1]["epoch"])]
    a, b = last[(len(last) - 1) // 2], last[-1]
    if b["epoch_elapsed_s"] <= a["epoch_elapsed_s"]:
        return None
    return (b["step"] - a["step"]) * images_per_step / (b["epoch_elapsed_s"] - a["epoch_elapsed_s"])


def loop(args) -> dict:
    if args.task_device != "cpu":
        need_cuda()
    out_dir = Path(args.output_dir) / "loop"
    run_dir = out_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # ours: a rerun measures afresh instead of resuming a finished run
    batch, accum = args.loop_batch_size, 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "crossmae.cli",
           "pretrain", "--config", args.loop_config, "data.path=synthetic",
           f"data.synthetic_images={args.loop_steps * batch * accum}", f"data.num_workers={args.workers}",
           f"batch_size={batch}", f"global_batch_size={batch * accum}", "epochs=1", "model.pred_ratio=0.25",
           f"compile={'true' if args.task_device != 'cpu' else 'false'}", f"device={args.task_device}", "num_vis=0",
           f"log_every={max(1, args.loop_steps // 20)}", "save_every=1", f"output_dir={run_dir}", *args.loop_overrides]
    res = _run_commands([("pretrain loop", cmd)], out_dir, args.task_timeout)
    log = run_dir / "train_log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    ips = steady_images_per_s(records, batch * accum)
    step_ips = _model_ips()
    row = {"steps": records[-1]["step"] if records else 0, "batch": batch, "accum": accum, "loop img/s": _f(ips, 0),
           "step section img/s": _f(step_ips, 0),
           "loop / step": _f(ips / step_ips, 2) if ips and step_ips else "-"}
    res["data"] = {"runs": res["data"], "images_per_s": ips, "step_images_per_s": step_ips}
    res["table"] = [row]
    return res


def dense(args) -> dict:
    need_cuda()
    from tools import bench_dense as bench
    device = torch.device("cuda")
    timing = dict(repeats=args.dense_repeats, steps_per_repeat=3, warmup=2)
    rows = []
    for task, batch in (("det", args.dense_det_batch), ("seg", args.dense_seg_batch)):  # the recipes' batch per GPU
        rows += bench.dense_rows([task], batch, device, "bf16", (False, True), **timing)
    if args.dense_mem_cap_gb:
        rows += bench.dense_rows(["det", "seg"], 2, device, "bf16", (False, True), args.dense_mem_cap_gb, **timing)
    from crossmae.analysis.benchmark import peak_tflops
    bench.add_mfu(rows, args.peak_tflops or peak_tflops(torch.cuda.get_device_name(0)))
    return {"data": {"rows": rows}, "table": bench.table(rows)}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _f(v, digits):
    return None if v is None else round(v, digits)


def _gb(mb):
    return None if mb is None else mb / 1024


def _pct(v):
    return None if v is None else f"{100 * v:.1f}%"


RESULTS: dict[str, dict] = {}


def run_section(name: str, fn, args) -> dict:
    t0 = time.time()
    try:
        res = fn(args)
        status = "failed" if res.get("error") else "ok"
    except Skip as e:
        res, status = {"reason": str(e)}, "skipped"
    except Exception as e:  # a broken section is reported, and the others still run
        res, status = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}, "failed"
    res.update(status=status, seconds=round(time.time() - t0, 1))
    RESULTS[name] = res
    return res


def markdown(report: dict) -> str:
    from crossmae.analysis.tables import markdown_table
    env = report["sections"].get("environment", {}).get("data", {})
    lines = ["# GPU acceptance report", "",
             f"{env.get('gpu', 'no GPU')}, torch {env.get('torch')}, {report['started']} UTC, "
             f"{report['seconds']:.0f} s in total", "",
             "MFU: 3 x forward FLOPs as run (2 FLOPs per multiply-add, masked tokens excluded, attention "
             "included) x images/s / dense bf16 peak.", ""]
    lines.append(markdown_table(["section", "status", "seconds", "reason / error"],
                                [[k, v["status"], v["seconds"], v.get("reason") or v.get("error") or v.get("note")]
                                 for k, v in report["sections"].items()]))
    for name, sec in report["sections"].items():
        table = sec.get("table")
        if not table:
            continue
        cols = list(dict.fromkeys(k for row in table for k in row))
        lines += ["", f"## {name}", "", markdown_table(cols, [[row.get(c) for c in cols] for row in table])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from crossmae.analysis import benchmark as B
    from crossmae.files import atomic_write
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="output/gpu_check")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--sizes", nargs="+", choices=list(B.SIZES), default=["base", "large"])
    p.add_argument("--compile-sizes", nargs="*", choices=list(B.SIZES), default=["base"],
                   help="sizes also timed with torch.compile (compiling costs ~1 min per model)")
    p.add_argument("--compile-modes", nargs="+", default=["default"],
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="torch.compile modes timed for --compile-sizes (reduce-overhead: CUDA graphs, against "
                        "the launch overhead of small per-GPU batches)")
    p.add_argument("--configs", nargs="+", default=list(B.PAPER_CONFIGS))
    p.add_argument("--hiera-sizes", nargs="*", choices=["tiny", "small", "base", "base_plus", "large"],
                   default=["base"], help="step section: CrossMAE-Hiera g0.25 and MAE-Hiera rows (none: skip them)")
    p.add_argument("--master-weights", action="store_true",
                   help="step section: also time bf16 weights with fp32 master copies against autocast (paired rows)")
    p.add_argument("--batch-size", type=int, default=256, help="per-GPU batch of the ViT-B/L pretraining recipes")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: by GPU name)")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "flash"])
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="loader worker processes")
    p.add_argument("--loader-images", type=int, default=1024)
    p.add_argument("--loader-batch", type=int, default=64)
    p.add_argument("--loader-batches-per-worker", type=int, default=6, help="timed batches per loader worker")
    p.add_argument("--loop-steps", type=int, default=300, help="optimizer steps of the loop section's run")
    p.add_argument("--loop-batch-size", type=int, default=256)
    p.add_argument("--loop-config", default="configs/pretrain/crossmae_vit_base.yaml")
    p.add_argument("--loop-overrides", nargs="*", default=[], help="more key=value overrides of the loop's run")
    p.add_argument("--dense-det-batch", type=int, default=8, help="ViTDet images per GPU (the recipe: 8)")
    p.add_argument("--dense-seg-batch", type=int, default=2, help="UperNet images per GPU (the recipe: 2)")
    p.add_argument("--dense-mem-cap-gb", type=float, default=24, help="memory cap of the batch-2 rows (0: none)")
    p.add_argument("--dense-repeats", type=int, default=3)
    p.add_argument("--task-timeout", type=float, default=240, help="seconds per tiny task run")
    p.add_argument("--task-device", default="cuda", help="device of the tiny task runs (cpu: check them without a GPU)")
    args = p.parse_args(argv)
    if min(args.batch_size, args.repeats, args.loader_images, args.loader_batch, args.loader_batches_per_worker) < 1 \
            or args.workers < 0:
        p.error("--batch-size, --repeats, --loader-images, --loader-batch and --loader-batches-per-worker must be "
                ">= 1, --workers >= 0")
    try:
        B.parse_configs(args.configs)
    except ValueError as e:
        p.error(str(e))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    RESULTS.clear()
    t0 = time.time()
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    fns = {"environment": environment, "step": step, "profile": profile_step, "sdpa": sdpa, "flash_attn": flash_attn,
           "loader": loader, "loop": loop, "dense": dense, "tasks": tasks, "ddp": ddp}
    for name in SECTIONS:  # fixed order: the loader compares against the step's images/s
        if name in args.sections:
            res = run_section(name, fns[name], args)
            print(f"{name}: {res['status']} ({res['seconds']} s)"
                  + (f": {res.get('reason') or res.get('error')}" if res["status"] != "ok" else ""), flush=True)
            # rewritten after every section, so a run killed at its time limit still leaves what it measured
            # (atomically: a kill mid-write leaves the previous report, not a cut one)
            report = {"started": started, "seconds": time.time() - t0, "args": vars(args), "sections": dict(RESULTS)}
            text = json.dumps(report, indent=2, default=str)
            atomic_write(out / "gpu_check.json", lambda f: f.write(text), binary=False)
            atomic_write(out / "gpu_check.md", lambda f: f.write(markdown(report)), binary=False)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 1 if any(s["status"] == "failed" for s in RESULTS.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
