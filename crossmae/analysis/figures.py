"""Matplotlib figures for the analysis tools (Agg backend: files only, no display needed)."""
from __future__ import annotations

from pathlib import Path

import torch


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Written whole via a rename (atomic_write): a kill mid-write leaves the previous file, not half a PNG."""
    from ..files import atomic_write
    path = Path(path)
    try:
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=dpi,
                                                 bbox_inches="tight"))
    finally:
        _plt().close(fig)
    return path


def _image(ax, img: torch.Tensor, title: str = "") -> None:
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def attention_mass_figure(result: dict, path: str | Path, reference: dict | None = None, title: str = "") -> Path:
    """Left: per-block visible vs masked in the paper's normalisation (paper's values as markers when the
    block count matches). Right: where a mask token's attention goes (visible / masked / cls shares)."""
    plt = _plt()
    blocks = result["blocks"]
    n = len(blocks)
    x = list(range(1, n + 1))
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8))
    w = 0.38
    ax0.bar([i - w / 2 for i in x], [b["paper/visible"] for b in blocks], w, label="to visible", color="tab:blue")
    ax0.bar([i + w / 2 for i in x], [b["paper/masked"] for b in blocks], w, label="to masked", color="tab:orange")
    if reference and len(reference.get("visible", [])) == n:
        ax0.scatter([i - w / 2 for i in x], reference["visible"], marker="_", s=300, color="k", zorder=3,
                    label="paper (MAE-B)")
        ax0.scatter([i + w / 2 for i in x], reference["masked"], marker="_", s=300, color="k", zorder=3)
    s = result["sum_over_blocks"]
    ax0.set_title(f"mask-token attention, per key x heads (sum: visible {s['paper/visible']:.2f}, "
                  f"masked {s['paper/masked']:.2f})", fontsize=9)
    ax0.set_xlabel("decoder block")
    ax0.set_xticks(x)
    ax0.legend(fontsize=8)
    bottom = [0.0] * n
    for cls, color in (("visible", "tab:blue"), ("masked", "tab:orange"), ("cls", "tab:gray")):
        vals = [b[f"mass/{cls}"] for b in blocks]
        ax1.bar(x, vals, 0.7, bottom=bottom, label=cls, color=color)
        bottom = [a + b for a, b in zip(bottom, vals)]
    ax1.set_ylim(0, 1)
    ax1.set_title("share of a mask token's attention", fontsize=9)
    ax1.set_xlabel("decoder block")
    ax1.set_xticks(x)
    ax1.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97) if title else None)  # keep the title clear of the panel titles
    return _save(fig, path)


def query_maps_figure(images: torch.Tensor, visible: torch.Tensor, maps: torch.Tensor, query: int,
                      grid: tuple[int, int], path: str | Path, title: str = "") -> Path:
    """Rows: images. Columns: the image with hidden patches dimmed and the query patch boxed, then the
    head-averaged cross-attention of that query in each decoder block, over the visible patches."""
    import torch.nn.functional as F
    plt = _plt()
    from matplotlib.patches import Rectangle
    depth, b = maps.shape[:2]
    gh, gw = grid
    h, w = images.shape[-2:]
    ph, pw = h // gh, w // gw
    fig, axes = plt.subplots(b, depth + 1, figsize=(1.9 * (depth + 1), 1.9 * b), squeeze=False)
    qy, qx = divmod(query, gw)
    for i in range(b):
        vis = F.interpolate(visible[i].float().view(1, 1, gh, gw), size=(h, w), mode="nearest")[0]
        _image(axes[i][0], images[i] * (0.35 + 0.65 * vis), "input, query boxed" if i == 0 else "")
        for j in range(depth):
            ax = axes[i][j + 1]
            m = maps[j, i].clone()
            m = torch.nan_to_num(m / torch.nan_to_num(m, nan=0).max().clamp_min(1e-12), nan=0.0)
            heat = F.interpolate(m.view(1, 1, gh, gw), size=(h, w), mode="nearest")[0, 0]
            ax.imshow((images[i] * 0.35).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.imshow(heat.numpy(), cmap="inferno", alpha=0.75, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"block {j + 1}", fontsize=8)
        for ax in axes[i]:
            ax.add_patch(Rectangle((qx * pw - 0.5, qy * ph - 0.5), pw, ph, fill=False, edgecolor="cyan", lw=1.5))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97) if title else None)  # keep the title clear of the panel titles
    return _save(fig, path)


def reconstruction_figure(rec: dict, path: str | Path, title: str = "", max_images: int = 8) -> Path:
    """Rows: images. Columns: original, masked, reconstruction, reconstruction + visible, then every
    decoder block's readout (+ visible); PSNR on the predicted patches in each title."""
    plt = _plt()
    n = min(max_images, rec["original"].shape[0])
    blocks = rec["blocks"]
    cols = 4 + (len(blocks) if len(blocks) > 1 else 0)
    fig, axes = plt.subplots(n, cols, figsize=(1.8 * cols, 1.9 * n), squeeze=False)
    for i in range(n):
        psnr = float(rec["psnr"][i])
        panels = [("original", rec["original"][i]), ("masked", rec["masked"][i]),
                  (f"reconstruction\n{psnr:.1f} dB", rec["reconstruction"][i]), ("+ visible", rec["pasted"][i])]
        if len(blocks) > 1:
            panels += [(f"block {j + 1}\n{float(rec['psnr_blocks'][j, i]):.1f} dB", blocks[j][i])
                       for j in range(len(blocks))]
        for j, (name, img) in enumerate(panels):
            _image(axes[i][j], img, name)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97) if title else None)  # keep the title clear of the panel titles
    return _save(fig, path)


def inter_block_figure(weight: torch.Tensor, names: list[str], path: str | Path, title: str = "") -> Path:
    """Heatmap of W [decoder block, encoder feature map], diverging around 0, values written in."""
    plt = _plt()
    d, k = weight.shape
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.45 * d + 1.6))
    lim = float(weight.abs().max().clamp_min(1e-12))
    im = ax.imshow(weight.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(k))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(d))
    ax.set_yticklabels([f"dec {j + 1}" for j in range(d)], fontsize=8)
    ax.set_xlabel("encoder feature map")
    ax.set_ylabel("decoder block")
    if d * k <= 400:
        for j in range(d):
            for i in range(k):
                v = float(weight[j, i])
                ax.text(i, j, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(v) > 0.6 * lim else "black")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title(title or "inter-block attention weights", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def curves_figure(runs: dict[str, dict[str, tuple[list[float], list[float]]]], path: str | Path,
                  max_panels: int = 6) -> Path:
    """One panel per series name (train loss first, then the evaluation metrics most runs have), one
    line per run, x = epoch."""
    plt = _plt()
    counts: dict[str, int] = {}
    for series in runs.values():
        for name in series:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        raise ValueError("no training logs with numeric values to plot")
    names = sorted(counts, key=lambda s: (s != "train loss", -counts[s], s))[:max_panels]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    colors = {label: f"C{i % 10}" for i, label in enumerate(runs)}  # one colour per run in every panel
    for ax, name in zip(axes[0], names):
        for label, series in runs.items():
            if name in series:
                xs, ys = series[name]
                ax.plot(xs, ys, label=label, color=colors[label], lw=1.2, marker="o" if len(xs) < 30 else None,
                        ms=2.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if "loss" in name and all(v > 0 for s in runs.values() if name in s for v in s[name][1]):
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
