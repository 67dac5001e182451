"""Pretraining compute benchmark: MAE vs CrossMAE, FLOPs, parameters, step time, memory, MFU.

Timing is interleaved: every repeat runs one timed round of every configuration, in an order rotated
from repeat to repeat, so slow drifts of the machine (clocks, other jobs) hit every configuration
alike and their ratios stay stable; we report medians over repeats.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from ..engine.loop import autocast, resolve_precision
from ..models.sizes import VIT_SIZES, vit_model_name
from .flops import build_on, flops_table, model_flops, param_counts

SIZES = tuple(VIT_SIZES)  # what tools/ offer as --sizes

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), matched against torch.cuda.get_device_name()
# in this order (first match wins); --peak-tflops overrides
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.4), ("H200", 989.4), ("H100", 989.4),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("A6000", 154.8), ("RTX 4090", 165.2), ("RTX 3090", 71.0), ("A10", 125.0),
)


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


@dataclass(frozen=True)
class BenchConfig:
    key: str  # e.g. "mae-d8", "cross0.25-d12"
    decoder: str  # "mae" | "crossmae"
    decoder_depth: int
    pred_ratio: float | None = None

    def model_name(self, size: str) -> str:
        return vit_model_name(self.decoder, size)

    def kwargs(self, img_size: int) -> dict:
        kw = {"decoder_depth": self.decoder_depth, "img_size": img_size}
        if self.pred_ratio is not None:
            kw["pred_ratio"] = self.pred_ratio
        return kw

    @property
    def label(self) -> str:
        if self.decoder == "mae":
            return f"MAE d{self.decoder_depth}"
        return f"CrossMAE g{self.pred_ratio:g} d{self.decoder_depth}"


CONFIGS = {c.key: c for c in [
    BenchConfig("mae-d8", "mae", 8), BenchConfig("mae-d12", "mae", 12),
    BenchConfig("cross0.25-d8", "crossmae", 8, 0.25), BenchConfig("cross0.25-d12", "crossmae", 12, 0.25),
    BenchConfig("cross0.75-d8", "crossmae", 8, 0.75), BenchConfig("cross0.75-d12", "crossmae", 12, 0.75)]}

PAPER_CONFIGS = ("mae-d8", "cross0.25-d12", "cross0.75-d12")  # the paper's main comparison


def parse_configs(keys: list[str]) -> list[BenchConfig]:
    bad = [k for k in keys if k not in CONFIGS]
    if bad:
        raise ValueError(f"unknown configurations {bad}; choose from {', '.join(CONFIGS)}")
    return [CONFIGS[k] for k in keys]


def count_all(sizes: list[str], configs: list[BenchConfig], img_size: int = 224,
              overrides: dict | None = None) -> list[dict]:
    """FLOPs per image and parameter counts for every (size, config), on the meta device.
    ``overrides``: extra model keyword arguments (e.g. a smaller width), applied to every configuration."""
    rows = []
    for size in sizes:
        for cfg in configs:
            model = build_on("meta", cfg.model_name(size), **{**cfg.kwargs(img_size), **(overrides or {})})
            flops = model_flops(model, device="meta")  # forward only: counting backward too costs ~3x the time
            rows.append({"size": size, "config": cfg.key, "label": cfg.label, **flops_table(flops),
                         **{f"params_{k}_m": v / 1e6 for k, v in param_counts(model).items()}})
    return rows


def decoder_ratios(rows: list[dict], baseline: str = "mae-d8") -> list[dict]:
    """Decoder FLOPs of the baseline / each configuration, per size (with and without attention)."""
    out = []
    for row in rows:
        base = next((r for r in rows if r["size"] == row["size"] and r["config"] == baseline), None)
        if base is None or row["config"] == baseline:
            continue
        out.append({"size": row["size"], "config": row["config"], "baseline": baseline,
                    "decoder_ratio": base["decoder_gflops"] / row["decoder_gflops"],
                    "decoder_linear_ratio": base["decoder_linear_gflops"] / row["decoder_linear_gflops"]})
    return out


Builder = Callable[[str, dict], "tuple[nn.Module, torch.optim.Optimizer]"]


def default_builder(name: str, kwargs: dict) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The toolkit's own model and optimizer (``build_adamw``: fused where supported), on the CPU."""
    from ..engine.optim import build_adamw
    model = build_on("cpu", name, **kwargs)
    return model, build_adamw(model, 1e-4, 0.05, betas=(0.9, 0.95))


@dataclass
class _Runner:
    cfg: BenchConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    imgs: torch.Tensor
    impl: str = ""
    step_model: nn.Module | None = None  # the compiled wrapper when timing torch.compile
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    peak_bytes: list[int] = field(default_factory=list)
    oom: bool = False
    oom_message: str = ""


def _compiled(model: nn.Module, compile: bool | str) -> nn.Module:
    return torch.compile(model, mode=compile) if isinstance(compile, str) else torch.compile(model)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    for st in optimizer.state.values():
        n += sum(v.numel() * v.element_size() for v in st.values() if isinstance(v, torch.Tensor))
    return n


def saved_activation_bytes(model: nn.Module, imgs: torch.Tensor, precision: str) -> int:
    """Bytes of the tensors autograd keeps for backward in one forward (parameters excluded,
    shared storages counted once): device-independent activation memory."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        # detached: a saved output packed with its own grad_fn is a reference cycle through the autograd
        # graph that Python's GC cannot break, which kept every measured forward's activations alive
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(precision, imgs.device):
        loss = model(imgs).loss
    del loss
    return sum(seen.values())


def time_configs(size: str, configs: list[BenchConfig], batch_size: int, repeats: int, warmup: int = 1,
                 steps_per_repeat: int = 1, img_size: int = 224, device: str | torch.device = "cpu",
                 precision: str = "auto", seed: int = 0, progress: bool = True,
                 overrides: dict | None = None, builders: dict[str, Builder] | None = None,
                 compile: bool | str = False) -> list[dict]:
    """Measured training steps (forward, backward, AdamW step) of every configuration, interleaved.

    Returns one dict per configuration: wall-clock step time (median / min / max over repeats, seconds),
    images/s, the process CPU time of a step (median; on a CPU device the measure that survives other
    jobs sharing the cores), saved-activation MB, and on CUDA the peak memory of a step when run alone
    (the peak allocated during the step, minus what the other configurations' resident state occupies).
    A configuration that runs out of GPU memory is reported with ``oom: True``.

    ``builders`` maps an implementation tag to ``(model name, kwargs) -> (model, optimizer)``; every
    (tag, configuration) pair is timed in the same interleaved rounds, so e.g. the code of an earlier
    commit ("before") and the current one ("after") meet the same machine conditions. Each result
    carries its tag as ``impl`` and its per-repeat times, for paired ratios. ``compile`` times
    ``torch.compile(model)``, or with that ``mode`` if it is a string such as "reduce-overhead" (CUDA graphs);
    the first, untimed warmup round compiles."""
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    builders = builders or {"": default_builder}
    runners = []
    for impl, build in builders.items():
        for cfg in configs:
            torch.manual_seed(seed)
            model, optimizer = build(cfg.model_name(size), {**cfg.kwargs(img_size), **(overrides or {})})
            model = model.to(device).train()
            imgs = torch.randn(batch_size, 3, img_size, img_size, device=device,
                               generator=torch.Generator(device).manual_seed(seed))
            runners.append(_Runner(cfg, model, optimizer, imgs, impl,
                                   _compiled(model, compile) if compile else model))
    activations = {}
    for r in runners:
        try:
            activations[(r.impl, r.cfg.key)] = saved_activation_bytes(r.model, r.imgs, precision)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()

    def step(r: _Runner) -> None:
        with autocast(precision, device):
            loss = r.step_model(r.imgs).loss
        loss.backward()
        r.optimizer.step()
        r.optimizer.zero_grad(set_to_none=True)

    from tqdm import tqdm
    total = (warmup + repeats) * len(runners)
    bar = tqdm(total=total, desc=f"timing ViT-{size}", disable=not progress, leave=False)
    for rep in range(warmup + repeats):
        shift = rep % len(runners)
        for r in runners[shift:] + runners[:shift]:
            if r.oom:
                bar.update(1)
                continue
            if device.type == "cuda":
                _sync(device)
                resident = torch.cuda.memory_allocated(device) - _state_bytes(r.model, r.optimizer)
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                for _ in range(steps_per_repeat):
                    step(r)
                _sync(device)
            except torch.OutOfMemoryError as e:  # reported like the paper's "OOM" entries; the others go on
                r.oom, r.oom_message = True, str(e).split("\n")[0][:300]
                r.optimizer.zero_grad(set_to_none=True)
                r.optimizer.state.clear()
                torch.cuda.empty_cache()
                bar.update(1)
                continue
            dt = (time.perf_counter() - t0) / steps_per_repeat
            if rep >= warmup:
                r.times.append(dt)
                r.cpu_times.append((time.process_time() - c0) / steps_per_repeat)
                if device.type == "cuda":
                    r.peak_bytes.append(torch.cuda.max_memory_allocated(device) - resident)
            bar.update(1)
    bar.close()
    results = []
    for r in runners:
        key = (r.impl, r.cfg.key)
        res = {"size": size, "config": r.cfg.key, "label": r.cfg.label, "batch_size": batch_size, "device": device.type,
               "precision": precision, "oom": r.oom, "repeats": len(r.times), "impl": r.impl, "compile": compile,
               "fused_adamw": bool(r.optimizer.defaults.get("fused")),
               "activations_mb": activations[key] / 2 ** 20 if key in activations else None}
        if r.oom:
            res["oom_message"] = r.oom_message
        if r.times and not r.oom:
            med = statistics.median(r.times)
            res.update(step_s_median=med, step_s_min=min(r.times), step_s_max=max(r.times),
                       images_per_s=batch_size / med, cpu_s_median=statistics.median(r.cpu_times),
                       step_s_all=list(r.times), cpu_s_all=list(r.cpu_times))
        if r.peak_bytes:
            res["peak_memory_mb"] = max(r.peak_bytes) / 2 ** 20
        results.append(res)
    for r in runners:  # free device memory before the next size
        del r.model, r.optimizer, r.imgs, r.step_model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def add_mfu(timed: list[dict], counted: list[dict], peak: float | None) -> None:
    """Model FLOPs utilisation: 3 x forward FLOPs per image (forward + backward, the usual MFU
    convention) x images/s over the peak; achieved TFLOP/s is always filled in."""
    for t in timed:
        if "images_per_s" not in t:
            continue
        c = next(c for c in counted if c["size"] == t["size"] and c["config"] == t["config"])
        achieved = 3 * c["total_gflops"] * 1e9 * t["images_per_s"] / 1e12
        t["achieved_tflops"] = achieved
        t["mfu"] = achieved / peak if peak else None


def config_dicts(configs: list[BenchConfig]) -> list[dict]:
    return [asdict(c) for c in configs]


# the paper's ViT-B claim (v1 Figure 1): decoder GFLOPs per image, 2 FLOPs per multiply-add
PAPER_DECODER_GFLOPS = {"mae-d8": 10.1, "cross0.25-d12": 4.1}
PAPER_RATIO_RANGE = (2.5, 3.7)


def format_report(counted: list[dict], timed: list[dict], ratios: list[dict]) -> str:
    from .tables import fmt, markdown_table
    lines = ["FLOPs per image at 224 px (2 FLOPs per multiply-add; /2 for MACs); 'dec w/o attn' leaves out "
             "the attention matmuls QK^T and AV; ratio = MAE d8 decoder / this decoder", ""]
    ratio_of = {(r["size"], r["config"]): r for r in ratios}
    rows = []
    for c in counted:
        r = ratio_of.get((c["size"], c["config"]))
        rows.append([f"ViT-{c['size'][0].upper()}", c["label"], fmt(c["params_encoder_m"]), fmt(c["params_decoder_m"]),
                     fmt(c["encoder_gflops"], 2), fmt(c["decoder_gflops"], 2), fmt(c["decoder_linear_gflops"], 2),
                     f"{r['decoder_ratio']:.2f}x ({r['decoder_linear_ratio']:.2f}x)" if r else "1 (baseline)"
                     if c["config"] == "mae-d8" else None, fmt(c["total_gflops"], 2)])
    lines.append(markdown_table(["size", "config", "enc params M", "dec params M", "enc GFLOPs", "dec GFLOPs",
                                 "dec w/o attn", "dec ratio (w/o attn)", "total GFLOPs"], rows))
    base = {c["config"]: c for c in counted if c["size"] == "base"}
    if "mae-d8" in base and "cross0.25-d12" in base:
        m, x = base["mae-d8"], base["cross0.25-d12"]
        lines += ["", f"ViT-B decoder: MAE d8 {m['decoder_gflops']:.2f} GFLOPs ({m['decoder_linear_gflops']:.2f} w/o "
                  f"attention) vs CrossMAE g0.25 d12 {x['decoder_gflops']:.2f} ({x['decoder_linear_gflops']:.2f}): "
                  f"{m['decoder_gflops'] / x['decoder_gflops']:.2f}x "
                  f"({m['decoder_linear_gflops'] / x['decoder_linear_gflops']:.2f}x). "
                  f"Paper: {PAPER_DECODER_GFLOPS['mae-d8']} vs {PAPER_DECODER_GFLOPS['cross0.25-d12']} "
                  f"({PAPER_DECODER_GFLOPS['mae-d8'] / PAPER_DECODER_GFLOPS['cross0.25-d12']:.2f}x); "
                  f"claimed range {PAPER_RATIO_RANGE[0]}-{PAPER_RATIO_RANGE[1]}x."]
    for size in dict.fromkeys(c["size"] for c in counted):
        r = {x["config"]: x for x in ratios if x["size"] == size}
        if "cross0.25-d12" in r and "cross0.25-d8" in r:
            lo, hi = r["cross0.25-d12"], r["cross0.25-d8"]
            lines.append(f"ViT-{size[0].upper()}: MAE d8 / CrossMAE g0.25 decoder compute, depth 12 to 8: "
                         f"{lo['decoder_ratio']:.2f}x to {hi['decoder_ratio']:.2f}x ({lo['decoder_linear_ratio']:.2f}x "
                         f"to {hi['decoder_linear_ratio']:.2f}x w/o attention); paper: "
                         f"{PAPER_RATIO_RANGE[0]}x to {PAPER_RATIO_RANGE[1]}x")
    if timed:
        lines += ["", f"Measured training step (forward + backward + AdamW), batch {timed[0]['batch_size']}, "
                  f"{timed[0]['precision']}, median of the interleaved repeats; on CPU 'time / MAE d8' compares "
                  f"process CPU time (robust to other jobs on the machine), on GPU wall time", ""]
        rows = []
        for t in timed:
            if "step_s_median" not in t:
                rows.append([f"ViT-{t['size'][0].upper()}", t["label"], "OOM" if t["oom"] else None, None, None,
                             None, fmt(t["activations_mb"], 0), None, None, None])
                continue
            base_t = next((b for b in timed if b["size"] == t["size"] and b["config"] == "mae-d8"
                           and "step_s_median" in b), None)
            key = "cpu_s_median" if t["device"] == "cpu" else "step_s_median"
            rel = f"{t[key] / base_t[key]:.2f}" if base_t else None
            rows.append([f"ViT-{t['size'][0].upper()}", t["label"],
                         f"{t['step_s_median']:.3f} [{t['step_s_min']:.3f}-{t['step_s_max']:.3f}]",
                         fmt(t["cpu_s_median"], 3) if t["device"] == "cpu" else None, rel,
                         fmt(t["images_per_s"], 1), fmt(t["activations_mb"], 0), fmt(t.get("peak_memory_mb"), 0),
                         fmt(t.get("achieved_tflops"), 3),
                         f"{100 * t['mfu']:.1f}%" if t.get("mfu") is not None else None])
        lines.append(markdown_table(["size", "config", "step s median [min-max]", "CPU s", "time / MAE d8", "img/s",
                                     "saved activations MB", "peak mem MB", "TFLOP/s", "MFU"], rows))
    return "\n".join(lines)


def paired_ratios(timed: list[dict], before: str = "before", after: str = "after") -> list[dict]:
    """before / after step time per (size, config) from the same interleaved repeats: the median and
    range of the per-repeat ratios (CPU time on a CPU device, wall time on a GPU)."""
    out = []
    for a in timed:
        if a.get("impl") != after or "step_s_all" not in a:
            continue
        b = next((t for t in timed if t.get("impl") == before and t["size"] == a["size"]
                  and t["config"] == a["config"] and "step_s_all" in t), None)
        if b is None:
            continue
        key = "cpu_s_all" if a["device"] == "cpu" else "step_s_all"
        r = [x / y for x, y in zip(b[key], a[key])]
        out.append({"size": a["size"], "config": a["config"], "label": a["label"], "measure": key[:-4],
                    "before_s": statistics.median(b[key]), "after_s": statistics.median(a[key]),
                    "speedup_median": statistics.median(r), "speedup_min": min(r), "speedup_max": max(r),
                    "repeats": len(r)})
    return out


def format_before_after(pairs: list[dict], losses: list[dict] | None = None,
                        tags: tuple[str, str] = ("before", "after")) -> str:
    from .tables import markdown_table
    loss_of = {(x["size"], x["config"]): x for x in losses or []}
    rows = []
    for p in pairs:
        x = loss_of.get((p["size"], p["config"]))
        rows.append([f"ViT-{p['size'][0].upper()}", p["label"], f"{p['before_s']:.3f}", f"{p['after_s']:.3f}",
                     f"{p['speedup_median']:.2f}x [{p['speedup_min']:.2f}-{p['speedup_max']:.2f}]",
                     f"{x['loss_' + tags[0]]:.6f} / {x['loss_' + tags[1]]:.6f}" if x else None,
                     f"{x['max_grad_rel_diff']:.1e}" if x else None])
    measure = pairs[0]["measure"].replace("_s", " s").replace("step", "wall") if pairs else ""
    a, b = tags
    return markdown_table(["size", "config", f"{a} ({measure})", f"{b} ({measure})",
                           f"{a} / {b}, median [min-max] of paired repeats", f"loss {a} / {b}",
                           "max rel. grad diff"], rows)


def compare_steps(size: str, configs: list[BenchConfig], builders: dict[str, Builder], batch_size: int = 2,
                  img_size: int = 224, seed: int = 0, overrides: dict | None = None) -> list[dict]:
    """Loss and gradients of the first two builders' models on the same weights, images and masks
    (each model draws its masks from an identically seeded generator): are the steps the same?"""
    (tag_a, build_a), (tag_b, build_b) = list(builders.items())[:2]
    out = []
    for cfg in configs:
        kwargs = {**cfg.kwargs(img_size), **(overrides or {})}
        torch.manual_seed(seed)
        model_a, _ = build_a(cfg.model_name(size), kwargs)
        model_b, _ = build_b(cfg.model_name(size), kwargs)
        model_b.load_state_dict(model_a.state_dict())
        imgs = torch.randn(batch_size, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed))
        results = []
        for model in (model_a, model_b):
            masks = model.sample_masks(imgs, generator=torch.Generator().manual_seed(seed + 1))
            loss = model(imgs, masks).loss
            loss.backward()
            results.append((float(loss.detach()), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
        (la, ga), (lb, gb) = results
        rel = max(float((ga[n] - gb[n]).abs().max() / ga[n].abs().max().clamp_min(1e-30)) for n in ga)
        out.append({"size": size, "config": cfg.key, "loss_" + tag_a: la, "loss_" + tag_b: lb,
                    "same_grad_names": sorted(ga) == sorted(gb), "max_grad_rel_diff": rel})
    return out
