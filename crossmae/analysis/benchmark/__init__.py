"""Pretraining compute benchmark: MAE vs CrossMAE, FLOPs, parameters, step time, memory, MFU.

configs   the configurations compared, their FLOPs and parameter counts (meta device)
timing    the interleaved timing harness, device peaks and MFU
report    the FLOPs / timing tables against the paper's claim
compare   before / after: paired speed-ups and loss / gradient equality of two implementations

The names below are what tools/bench_pretrain.py and tools/gpu_check.py read as ``benchmark.<name>``.
"""
from __future__ import annotations

from .compare import compare_steps, format_before_after, paired_ratios
from .configs import (CONFIGS, HIERA_CONFIGS, PAPER_CONFIGS, SIZES, BenchConfig, config_dicts, count_all, decoder_ratios,
                      parse_configs)
from .report import PAPER_DECODER_GFLOPS, PAPER_RATIO_RANGE, format_report
from .timing import (MASTER_WEIGHTS_PRECISION, PEAK_BF16_TFLOPS, Builder, add_mfu, default_builder,
                     master_weights_builder, peak_tflops, saved_activation_bytes, time_configs)

__all__ = ["CONFIGS", "HIERA_CONFIGS", "MASTER_WEIGHTS_PRECISION", "PAPER_CONFIGS", "PAPER_DECODER_GFLOPS", "PAPER_RATIO_RANGE", "PEAK_BF16_TFLOPS", "SIZES",
           "BenchConfig", "Builder", "add_mfu", "compare_steps", "config_dicts", "count_all", "decoder_ratios",
           "default_builder", "format_before_after", "format_report", "master_weights_builder", "paired_ratios", "parse_configs",
           "peak_tflops", "saved_activation_bytes", "time_configs"]
