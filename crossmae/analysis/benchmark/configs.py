"""The configurations the compute benchmark compares (MAE vs CrossMAE decoders) and their FLOPs and
parameter counts, counted on the meta device (no timing here: :mod:`.timing`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ...models.sizes import VIT_LETTERS, VIT_SIZES, vit_model_name
from ..flops import build_on, flops_table, model_flops, param_counts

SIZES = tuple(VIT_SIZES)  # what tools/ offer as --sizes


def size_label(size: str) -> str:
    return f"ViT-{VIT_LETTERS[size]}"


@dataclass(frozen=True)
class BenchConfig:
    key: str  # e.g. "mae-d8", "cross0.25-d12"
    decoder: str  # "mae" | "crossmae"
    decoder_depth: int
    pred_ratio: float | None = None
    family: str = "vit"  # the encoder: "vit" | "hiera"

    def model_name(self, size: str) -> str:
        return f"{self.decoder}_hiera_{size}_224" if self.family == "hiera" else vit_model_name(self.decoder, size)

    def kwargs(self, img_size: int) -> dict:
        kw = {"decoder_depth": self.decoder_depth, "img_size": img_size}
        if self.pred_ratio is not None:
            kw["pred_ratio"] = self.pred_ratio
        return kw

    @property
    def label(self) -> str:
        suffix = "-Hiera" if self.family == "hiera" else ""
        if self.decoder == "mae":
            return f"MAE{suffix} d{self.decoder_depth}"
        return f"CrossMAE{suffix} g{self.pred_ratio:g} d{self.decoder_depth}"


CONFIGS = {c.key: c for c in [
    BenchConfig("mae-d8", "mae", 8), BenchConfig("mae-d12", "mae", 12),
    BenchConfig("cross0.25-d8", "crossmae", 8, 0.25), BenchConfig("cross0.25-d12", "crossmae", 12, 0.25),
    BenchConfig("cross0.75-d8", "crossmae", 8, 0.75), BenchConfig("cross0.75-d12", "crossmae", 12, 0.75)]}

PAPER_CONFIGS = ("mae-d8", "cross0.25-d12", "cross0.75-d12")  # the paper's main comparison

# Hiera (crossmae/models/hiera*.py): MAE-Hiera's 8 x 512 decoder, CrossMAE-Hiera with the same at γ 0.25
HIERA_CONFIGS = {c.key: c for c in [BenchConfig("hiera-mae-d8", "mae", 8, family="hiera"),
                                    BenchConfig("hiera-cross0.25-d8", "crossmae", 8, 0.25, family="hiera")]}


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


def config_dicts(configs: list[BenchConfig]) -> list[dict]:
    return [asdict(c) for c in configs]
