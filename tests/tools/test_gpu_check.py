"""tools/gpu_check.py on CPU: the report machinery runs, GPU sections are skipped with their reason,
the SDPA backend detection tells fused kernels from the math fallback, and a broken section is reported."""
from __future__ import annotations

import json

import pytest
import torch

from tiny import tiny_model
from tools import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only report")
def test_cpu_report_skips_gpu_sections_with_reasons(tmp_path):
    rc = gpu_check.main(["--output-dir", str(tmp_path), "--workers", "0", "--loader-images", "6",
                         "--loader-batch", "3", "--loader-batches-per-worker", "2"])
    assert rc == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == list(gpu_check.SECTIONS)
    for name in ("step", "profile", "sdpa", "flash_attn", "dense", "tasks", "ddp"):
        assert sections[name]["status"] == "skipped" and sections[name]["reason"] == "no CUDA device", name
    assert sections["environment"]["status"] == "ok" and sections["environment"]["data"]["cuda_available"] is False
    loader = sections["loader"]
    assert loader["status"] == "ok" and loader["data"]["rows"][0]["img/s"] > 0
    assert "device decode skipped" in loader["note"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("# GPU acceptance report") and "| step " in md and "no CUDA device" in md
    assert "## loader" in md


def test_sdpa_detection_tells_fused_from_math():
    model = tiny_model().train()
    imgs = torch.randn(2, 3, 32, 32)
    fused_kernels = gpu_check.sdpa_kernels(gpu_check.training_step_fn(model, imgs, "fp32"))
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.MATH):
        math_kernels = gpu_check.sdpa_kernels(gpu_check.training_step_fn(model, imgs, "fp32"))
    ok, used = gpu_check.classify_sdpa(math_kernels)
    assert not ok and "math" in used, math_kernels
    assert fused_kernels, "no SDPA call seen in a training step"
    # on CPU, float32 normally takes the fused CPU flash kernel; either way the classification is consistent
    ok, used = gpu_check.classify_sdpa(fused_kernels)
    assert ok == (gpu_check.MATH_SDPA not in fused_kernels)


def test_a_broken_section_is_reported_and_the_rest_still_run(tmp_path, monkeypatch):
    def boom(args):
        raise RuntimeError("kaput")
    monkeypatch.setattr(gpu_check, "environment", boom)
    rc = gpu_check.main(["--output-dir", str(tmp_path), "--sections", "environment", "ddp"])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rc == 1
    assert report["sections"]["environment"]["status"] == "failed"
    assert "RuntimeError: kaput" in report["sections"]["environment"]["error"]
    ddp = report["sections"]["ddp"]  # the sections after a broken one still run: here, skipped for its own reason
    expected = "skipped" if torch.cuda.device_count() < 2 else "ok"
    assert ddp["status"] == expected, ddp
    assert "kaput" in (tmp_path / "gpu_check.md").read_text()


def test_kernel_summary_counts_kernels_once_and_ranks_them():
    kernels = [("gemm", 300.0), ("copy", 100.0), ("gemm", 300.0), ("ln_bwd", 200.0)] * 2  # 2 steps
    out = gpu_check.kernel_summary(kernels, steps=2, wall_s=0.004, top=2)
    assert out["gpu_busy_ms_per_step"] == pytest.approx(0.9) and out["wall_ms_per_step"] == pytest.approx(2.0)
    assert out["gpu_busy_share"] == pytest.approx(0.45) and out["kernels_per_step"] == 4
    assert [t["kernel"] for t in out["top"]] == ["gemm", "ln_bwd"] and out["top"][0]["share of busy"] == "66.7%"


def test_device_decode_psnr_against_the_cpu_path(tmp_path, monkeypatch):
    import math

    from crossmae.data import fast_device
    from crossmae.data.fast_device import EncodedCropFolder
    from tools import bench_data
    root = bench_data.make_jpeg_set(tmp_path / "jpegs", 6)
    torch.manual_seed(0)
    encoded = EncodedCropFolder(root, 224, 0.2)

    def constant_decoder(cpu_level, device_level):  # uint8 crops of one grey level per path
        def decode(data, boxes, flips, jpeg, size, device):
            level = cpu_level if str(device) == "cpu" else device_level
            return torch.full((len(data), 3, size, size), level, dtype=torch.uint8), 0
        return decode
    monkeypatch.setattr(fast_device, "decode_crops", constant_decoder(100, 100))
    assert gpu_check.decode_psnr(encoded, "fake", n=4) == math.inf
    # every pixel 10 levels off: MSE 100, PSNR = 10 log10(255^2 / 100) = 20 log10(25.5) = 28.13 dB
    monkeypatch.setattr(fast_device, "decode_crops", constant_decoder(100, 110))
    assert gpu_check.decode_psnr(encoded, "fake", n=4) == pytest.approx(28.13, abs=0.01)


def test_steady_images_per_s_uses_the_second_half_of_the_last_epoch():
    # epoch 0 (slow: compilation), then epoch 1 logged every 2 steps; 512 images per optimizer step
    records = [{"step": 5, "epoch": 0.5, "epoch_elapsed_s": 60.0}, {"step": 10, "epoch": 1.0, "epoch_elapsed_s": 65.0},
               {"step": 12, "epoch": 1.2, "epoch_elapsed_s": 9.0}, {"step": 14, "epoch": 1.4, "epoch_elapsed_s": 10.0},
               {"step": 16, "epoch": 1.6, "epoch_elapsed_s": 11.0}, {"step": 18, "epoch": 1.8, "epoch_elapsed_s": 11.5},
               {"step": 20, "epoch": 2.0, "epoch_elapsed_s": 12.0}]
    # middle of epoch 1's five records: step 16 at 11.0 s; last: step 20 at 12.0 s -> 4 steps x 512 / 1 s
    assert gpu_check.steady_images_per_s(records, 512) == 2048
    assert gpu_check.steady_images_per_s(records[:1], 512) is None  # one record: no interval
    assert gpu_check.steady_images_per_s([{"step": 1, "epoch": 1.0, "img_per_s": 3.0}], 512) is None  # old logs


@pytest.mark.slow
def test_loop_section_runs_the_real_command_on_cpu(tmp_path):
    rc = gpu_check.main(["--output-dir", str(tmp_path), "--sections", "loop", "--task-device", "cpu",
                         "--loop-config", "configs/pretrain/demo.yaml", "--loop-steps", "4", "--loop-batch-size", "4",
                         "--workers", "0", "--loop-overrides", "knn.every=0"])
    loop = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["loop"]
    assert rc == 0 and loop["status"] == "ok", loop
    assert loop["table"][0]["steps"] == 4 and loop["data"]["images_per_s"] > 0
    records = [json.loads(line) for line in (tmp_path / "loop" / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][-1] == 4 and all("epoch_elapsed_s" in r for r in records)


def test_step_rows_include_hiera_on_cpu():
    """The step section's Hiera rows, on CPU at the demo geometry of configs/pretrain/crossmae_hiera_demo.yaml
    (structure only: the numbers of a CPU are not the GPU's)."""
    import argparse

    import yaml

    from crossmae.analysis import benchmark as B
    from tiny import REPO
    demo = yaml.safe_load((REPO / "configs" / "pretrain" / "crossmae_hiera_demo.yaml").read_text())["model"]
    geometry = {k: v for k, v in demo.items() if k not in ("name", "decoder_depth", "pred_ratio", "mask_ratio",
                                                           "inter_block", "norm_pix_loss")}
    args = argparse.Namespace(batch_size=2, repeats=1, compile_sizes=[], compile_modes=[])
    rows = gpu_check.step_rows(args, ["base"], list(B.HIERA_CONFIGS.values()), peak=100.0, device="cpu",
                               precision="fp32", img_size=32, overrides=geometry)
    assert [r["label"] for r in rows] == ["MAE-Hiera d8", "CrossMAE-Hiera g0.25 d8"]
    for r in rows:
        assert r["size"] == "base" and not r["oom"] and r["images_per_s"] > 0
        assert r["mfu"] == pytest.approx(r["achieved_tflops"] / 100.0) and r["mfu"] > 0
        assert "step_s_all" not in r
    table = gpu_check.step_table(rows)
    assert [t["config"] for t in table] == ["MAE-Hiera d8", "CrossMAE-Hiera g0.25 d8"]
    assert set(table[0]) == {"size", "config", "compile", "fused AdamW", "img/s", "MFU", "TFLOP/s", "peak mem GB", "OOM"}
    assert B.parse_configs(["mae-d8"])[0].model_name("base") == "mae_vit_base_patch16"
    assert [c.model_name("base") for c in B.HIERA_CONFIGS.values()] == ["mae_hiera_base_224", "crossmae_hiera_base_224"]


@pytest.mark.parametrize("package,reason", [(False, "pip install nvidia-nvimgcodec-cu"), (True, "no CUDA device")])
def test_hardware_decoder_rows_say_why_they_were_skipped(tmp_path, monkeypatch, package, reason):
    import sys
    import types
    if package:
        monkeypatch.setitem(sys.modules, "nvidia", sys.modules.get("nvidia") or types.ModuleType("nvidia"))
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", types.ModuleType("nvidia.nvimgcodec") if package else None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = gpu_check.main(["--output-dir", str(tmp_path), "--sections", "loader", "--workers", "0",
                         "--loader-images", "4", "--loader-batch", "2", "--loader-batches-per-worker", "1"])
    assert rc == 0
    loader = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["loader"]
    fast, hw = loader["data"]["rows"]
    assert fast["img/s"] > 0 and "error" not in loader
    assert hw["pipeline"].startswith("nvImageCodec") and hw["img/s"].startswith("skipped: ") and reason in hw["img/s"]
    assert hw["img/s"] in (tmp_path / "gpu_check.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only report")
def test_master_weights_rows_pair_autocast_with_bf16_weights_on_cpu():
    """--master-weights: every configuration timed with autocast and with bf16 weights + fp32 masters in the same
    rounds, the candidate's row carrying its paired speed-up (structure only: CPU numbers are not the GPU's)."""
    import argparse

    from crossmae.analysis import benchmark as B
    tiny = dict(patch_size=4, embed_dim=64, depth=4, num_heads=4, decoder_embed_dim=32, decoder_num_heads=4)
    args = argparse.Namespace(batch_size=2, repeats=2, compile_sizes=[], compile_modes=[], master_weights=True)
    rows = gpu_check.step_rows(args, ["small"], B.parse_configs(["cross0.25-d8"]), peak=100.0, device="cpu",
                               precision="bf16", img_size=32, overrides=tiny)
    # on a CPU the autocast row's bf16 resolves to fp32 (resolve_precision); the candidate runs bf16 regardless
    assert [(r["impl"], r["precision"]) for r in rows] == [("autocast", "fp32"),
                                                          ("master", "bf16 weights + fp32 masters")]
    assert all(not r["oom"] and r["images_per_s"] > 0 for r in rows)
    assert rows[1]["speedup_vs_autocast"] > 0 and "speedup_vs_autocast" not in rows[0]
    table = gpu_check.step_table(rows)
    assert [t["weights"] for t in table] == ["fp32", "bf16 weights + fp32 masters"] and table[0]["vs autocast"] is None
