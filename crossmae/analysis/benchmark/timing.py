"""The timing harness: measured training steps (forward, backward, AdamW step) of benchmark configurations,
interleaved, with memory, images/s and model FLOPs utilisation.

Every repeat runs one timed round of every configuration, in an order rotated from repeat to repeat, so slow
drifts of the machine (clocks, other jobs) hit every configuration alike and their ratios stay stable; we
report medians over repeats.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from ...engine.loop import autocast, resolve_precision
from ...engine.master_weights import MasterWeights
from ..flops import build_on
from .configs import BenchConfig

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


Builder = Callable[[str, dict], "tuple[nn.Module, torch.optim.Optimizer]"]


def default_builder(name: str, kwargs: dict) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The toolkit's own model and optimizer (``build_adamw``: fused where supported), on the CPU."""
    from ...engine.optim import build_adamw
    model = build_on("cpu", name, **kwargs)
    return model, build_adamw(model, 1e-4, 0.05, betas=(0.9, 0.95))


def master_weights_builder(name: str, kwargs: dict) -> tuple[nn.Module, MasterWeights]:
    """The same model and AdamW, with bf16 weights and the optimizer on fp32 master copies (timed without
    autocast, on bf16 images): the issue-18 candidate against autocast's per-step weight casts."""
    from ...engine.optim import build_adamw
    model = build_on("cpu", name, **kwargs)
    return model, MasterWeights(model, lambda m: build_adamw(m, 1e-4, 0.05, betas=(0.9, 0.95)))


# the precision a configuration timed with bf16 weights reports (it runs without autocast)
MASTER_WEIGHTS_PRECISION = "bf16 weights + fp32 masters"


@dataclass
class _Runner:
    cfg: BenchConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    imgs: torch.Tensor
    impl: str = ""
    precision: str = "fp32"  # what the step's autocast runs in; MASTER_WEIGHTS_PRECISION: none, bf16 weights
    step_model: nn.Module | None = None  # the compiled wrapper when timing torch.compile
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    peak_bytes: list[int] = field(default_factory=list)
    oom: bool = False
    oom_message: str = ""


def _autocast_precision(r: _Runner) -> str:
    return "fp32" if r.precision == MASTER_WEIGHTS_PRECISION else r.precision


def _compiled(model: nn.Module, compile: bool | str) -> nn.Module:
    return torch.compile(model, mode=compile) if isinstance(compile, str) else torch.compile(model)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    for st in optimizer.state.values():
        n += sum(v.numel() * v.element_size() for v in st.values() if isinstance(v, torch.Tensor))
    if isinstance(optimizer, MasterWeights):
        n += sum(p.numel() * p.element_size() for p in optimizer.master.parameters())
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
            run_precision = precision
            if isinstance(optimizer, MasterWeights):  # bf16 weights: bf16 images, no autocast
                optimizer.to(device)
                imgs, run_precision = imgs.bfloat16(), MASTER_WEIGHTS_PRECISION
            runners.append(_Runner(cfg, model, optimizer, imgs, impl, run_precision,
                                   _compiled(model, compile) if compile else model))
    activations = {}
    for r in runners:
        try:
            activations[(r.impl, r.cfg.key)] = saved_activation_bytes(r.model, r.imgs, _autocast_precision(r))
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()

    def step(r: _Runner) -> None:
        with autocast(_autocast_precision(r), device):
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
               "precision": r.precision, "oom": r.oom, "repeats": len(r.times), "impl": r.impl, "compile": compile,
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
