"""Before / after: the same configurations built by two implementations (e.g. an earlier commit and this one),
timed in the same interleaved rounds (:func:`.timing.time_configs` with ``builders``): paired speed-ups, and
whether the two compute the same loss and gradients."""
from __future__ import annotations

import statistics

import torch

from ..tables import markdown_table
from .configs import BenchConfig, size_label
from .timing import Builder


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
    loss_of = {(x["size"], x["config"]): x for x in losses or []}
    rows = []
    for p in pairs:
        x = loss_of.get((p["size"], p["config"]))
        rows.append([size_label(p["size"]), p["label"], f"{p['before_s']:.3f}", f"{p['after_s']:.3f}",
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
