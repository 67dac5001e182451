"""The benchmark's report: FLOPs and parameter tables against the paper's ViT-B claim, and the measured
steps."""
from __future__ import annotations

from ..tables import fmt, markdown_table
from .configs import size_label

# the paper's ViT-B claim (v1 Figure 1): decoder GFLOPs per image, 2 FLOPs per multiply-add
PAPER_DECODER_GFLOPS = {"mae-d8": 10.1, "cross0.25-d12": 4.1}
PAPER_RATIO_RANGE = (2.5, 3.7)


def format_report(counted: list[dict], timed: list[dict], ratios: list[dict]) -> str:
    lines = ["FLOPs per image at 224 px (2 FLOPs per multiply-add; /2 for MACs); 'dec w/o attn' leaves out "
             "the attention matmuls QK^T and AV; ratio = MAE d8 decoder / this decoder", ""]
    ratio_of = {(r["size"], r["config"]): r for r in ratios}
    rows = []
    for c in counted:
        r = ratio_of.get((c["size"], c["config"]))
        rows.append([size_label(c["size"]), c["label"], fmt(c["params_encoder_m"]), fmt(c["params_decoder_m"]),
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
            lines.append(f"{size_label(size)}: MAE d8 / CrossMAE g0.25 decoder compute, depth 12 to 8: "
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
                rows.append([size_label(t["size"]), t["label"], "OOM" if t["oom"] else None, None, None,
                             None, fmt(t["activations_mb"], 0), None, None, None])
                continue
            base_t = next((b for b in timed if b["size"] == t["size"] and b["config"] == "mae-d8"
                           and "step_s_median" in b), None)
            key = "cpu_s_median" if t["device"] == "cpu" else "step_s_median"
            rel = f"{t[key] / base_t[key]:.2f}" if base_t else None
            rows.append([size_label(t["size"]), t["label"],
                         f"{t['step_s_median']:.3f} [{t['step_s_min']:.3f}-{t['step_s_max']:.3f}]",
                         fmt(t["cpu_s_median"], 3) if t["device"] == "cpu" else None, rel,
                         fmt(t["images_per_s"], 1), fmt(t["activations_mb"], 0), fmt(t.get("peak_memory_mb"), 0),
                         fmt(t.get("achieved_tflops"), 3),
                         f"{100 * t['mfu']:.1f}%" if t.get("mfu") is not None else None])
        lines.append(markdown_table(["size", "config", "step s median [min-max]", "CPU s", "time / MAE d8", "img/s",
                                     "saved activations MB", "peak mem MB", "TFLOP/s", "MFU"], rows))
    return "\n".join(lines)
