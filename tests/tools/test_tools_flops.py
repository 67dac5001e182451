"""FLOP counts against hand-computed ones, the paper's ViT-B decoder numbers, and the benchmark."""
from __future__ import annotations

import json

import pytest
import torch
from tools_fixtures import TINY, tiny_crossmae, tiny_mae

from crossmae.analysis import benchmark as B
from crossmae.analysis.flops import build_on, count_flops, meta_model_flops, model_flops, param_counts
from crossmae.models.blocks import Block


def block_flops(n: int, d: int) -> tuple[int, int]:
    """(total, attention) forward FLOPs of a ViT block on n tokens of width d, MLP ratio 4, 2 FLOPs per
    multiply-add: qkv 2n d 3d + proj 2n d d + MLP 2 (2n d 4d) = 24 n d^2; QK^T and AV 2 (2 n n d) = 4 n^2 d."""
    return 24 * n * d * d + 4 * n * n * d, 4 * n * n * d


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_single_block_matches_hand_count(device):
    n, d = 17, 64
    blk = Block(d, num_heads=4).to(device)
    x = torch.randn(2, n, d, device=device)
    counted = count_flops(blk, x)
    total, attention = block_flops(n, d)
    assert counted["total"] == 2 * total
    assert counted["attention"] == 2 * attention  # SDPA is counted (CPU op, or its bmm decomposition on meta)
    assert counted["linear"] == 2 * (total - attention)


def test_attention_backward_counted_on_cpu():
    """Forward + backward of SDPA on CPU: QK^T and AV (2 matmuls), then the fused backward's 5 (scores
    recomputed, dScores, dV, dQ, dK), each 2 n_q n_k d FLOPs summed over heads."""
    b, n, d = 2, 17, 64
    q, k, v = (torch.randn(b, 4, n, d // 4, requires_grad=True) for _ in range(3))

    def step():
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    counted = count_flops(step)
    assert counted["attention"] == b * 2 * n * n * d * (2 + 5)


def cross_decoder(t, de, dd, enc_depth, dec_depth, n_pred, patch_px):
    nf = enc_depth + 1  # inter-block feature maps: the encoder input + every block
    attention = 4 * n_pred * t * dd  # QK^T and AV
    per_block = (2 * nf * t * de  # mixing the feature maps
                 + 2 * n_pred * dd * dd + 2 * t * de * 2 * dd  # q, and kv from the encoder width
                 + attention + 2 * n_pred * dd * dd + 16 * n_pred * dd * dd)  # attention, proj, MLP
    return dec_depth * per_block + 2 * n_pred * dd * patch_px, dec_depth * attention


def mae_decoder(t, de, dd, dec_depth, n_tokens, n_pred, patch_px):
    """MAE's decoder: embed the t visible tokens to dd, dec_depth self-attention blocks over all n_tokens
    (cls + every patch), the head on the n_pred masked tokens only."""
    total, attention = block_flops(n_tokens, dd)
    return 2 * t * de * dd + dec_depth * total + 2 * n_pred * dd * patch_px, dec_depth * attention


def test_tiny_models_match_hand_count():
    p, c, grid, de, depth, dd = 4, 3, 64, 64, 2, 32
    k, t = 16, 17  # visible patches at mask ratio 0.75, plus cls
    encoder = 2 * grid * (p * p * c) * de + depth * block_flops(t, de)[0]  # patch embedding runs on every patch
    for pred_ratio, n_pred in ((0.25, 16), (0.75, 48)):
        flops = model_flops(tiny_crossmae(pred_ratio=pred_ratio))
        assert flops["encoder"]["total"] == encoder
        total, attention = cross_decoder(t, de, dd, depth, 2, n_pred, p * p * c)
        assert flops["decoder"]["total"] == total
        assert flops["decoder"]["attention"] == attention
    mae = model_flops(tiny_mae())  # 3 decoder blocks over all 1 + 64 tokens, head on the 48 masked
    assert mae["encoder"]["total"] == encoder
    assert mae["decoder"]["total"] == mae_decoder(t, de, dd, 3, 65, 48, p * p * c)[0]


def test_paper_vit_b_decoder_flops():
    """The paper (fvcore's convention: linear layers only, 2 FLOPs per multiply-add): MAE-B's 8-block decoder
    10.1 GFLOPs, CrossMAE-B's 12 blocks at gamma 0.25 4.1. Our counts equal the hand counts (ViT-B/16 at
    224 px: 49 visible + cls, 147 masked, 49 predicted) and the hand counts come within 1.5% of the paper."""
    mae, mae_params = meta_model_flops("mae_vit_base_patch16", train=False, decoder_depth=8)
    cross, _ = meta_model_flops("crossmae_vit_base_patch16", train=False, decoder_depth=12, pred_ratio=0.25)
    t, de, dd, px = 50, 768, 512, 16 * 16 * 3
    mae_total, mae_attention = mae_decoder(t, de, dd, 8, 197, 147, px)
    cross_total, cross_attention = cross_decoder(t, de, dd, 12, 12, 49, px)
    assert (mae["decoder"]["total"], mae["decoder"]["attention"]) == (mae_total, mae_attention)
    assert (cross["decoder"]["total"], cross["decoder"]["attention"]) == (cross_total, cross_attention)
    assert (mae_total - mae_attention) / 1e9 == pytest.approx(10.1, rel=0.01)
    assert (cross_total - cross_attention) / 1e9 == pytest.approx(4.1, rel=0.015)
    assert mae["encoder"]["total"] == cross["encoder"]["total"]
    assert mae_params["encoder"] == pytest.approx(85.6e6, rel=0.01)  # ViT-B/16 without its head


def test_param_counts_split():
    model = tiny_crossmae()
    counts = param_counts(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["encoder"] == sum(p.numel() for n, p in model.named_parameters()
                                    if n.startswith(("patch_embed", "blocks", "cls_token")) and p.requires_grad)
    assert build_on("meta", "mae_vit_small_patch16").cls_token.is_meta


def test_interleaved_timing_and_report(monkeypatch):
    def build_on_oom_for_depth_12(device, name, **kwargs):
        model = build_on(device, name, **kwargs)
        if kwargs["decoder_depth"] == 12:  # mae-d12 runs out of memory at its first training step
            calls = iter(range(100))
            forward = model.forward

            def maybe_oom(*a, **k):
                if next(calls) >= 1:  # the first call measures activations
                    raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
                return forward(*a, **k)
            model.forward = maybe_oom
        return model

    monkeypatch.setattr(B.timing, "build_on", build_on_oom_for_depth_12)  # what default_builder builds with
    configs = B.parse_configs(["mae-d8", "cross0.25-d8", "mae-d12"])
    small = {k: v for k, v in TINY.items() if k != "img_size"}
    timed = B.time_configs("small", configs, batch_size=2, repeats=2, warmup=1, img_size=32, progress=False,
                           overrides=small)
    assert [t["config"] for t in timed] == ["mae-d8", "cross0.25-d8", "mae-d12"]
    assert timed[2]["oom"] and "step_s_median" not in timed[2] and not timed[0]["oom"]
    assert timed[2]["oom_message"] == "CUDA out of memory (simulated)" and "oom_message" not in timed[0]
    timed_ok = timed[:2]
    for t in timed_ok:
        assert t["repeats"] == 2 and 0 < t["step_s_min"] <= t["step_s_median"] <= t["step_s_max"]
        assert t["images_per_s"] == pytest.approx(2 / t["step_s_median"])
    # CrossMAE's decoder keeps fewer activations: 16 predicted queries vs MAE's 1 + 64 tokens, 8 blocks
    assert timed[1]["activations_mb"] < timed[0]["activations_mb"]
    counted = B.count_all(["small"], configs[:2], img_size=32, overrides=small)
    B.add_mfu(timed, counted, peak=100.0)
    assert all(t["mfu"] == pytest.approx(t["achieved_tflops"] / 100.0) for t in timed_ok)
    report = B.format_report(counted, timed, B.decoder_ratios(counted))
    assert "CrossMAE g0.25 d8" in report and "time / MAE d8" in report and "| OOM" in report
    with pytest.raises(ValueError, match="unknown configurations"):
        B.parse_configs(["mae-d9"])
    assert B.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4 and B.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert B.peak_tflops("NVIDIA L40S") == 362.0 and B.peak_tflops("Some GPU") is None


@pytest.mark.parametrize("make", [tiny_crossmae, tiny_mae])
def test_activation_count_frees_its_forward(make):
    """Measuring activations must not keep the forward's graph alive: it did (a saved output packed with
    its own grad_fn is a cycle through C++ autograd nodes), and on an H200 the leaked activations of the
    configurations measured before ran torch.compile at batch 512 out of memory."""
    import gc
    import weakref
    model = make()
    kept = []
    for m in model.modules():
        m.register_forward_hook(lambda mod, inp, out: kept.append(weakref.ref(out)) if torch.is_tensor(out) else None)
    n = B.saved_activation_bytes(model, torch.randn(2, 3, 32, 32), "fp32")
    gc.collect()
    assert n > 0 and len(kept) > 10 and all(ref() is None for ref in kept)


def test_bench_tool_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    from tools import bench_pretrain
    rc = bench_pretrain.main(["--flop-sizes", "small", "--sizes", "small", "--img-size", "32",
                              "--configs", "mae-d8", "cross0.75-d12", "--batch-size", "2",
                              "--repeats", "1", "--warmup", "0", "--output", str(out),
                              "--model-kwargs", json.dumps({k: v for k, v in TINY.items() if k != "img_size"})])
    assert rc == 0
    assert torch.get_num_threads() == threads  # the tool's single CPU thread is given back
    data = json.loads(out.read_text())
    assert data["threads"] == 1
    assert len(data["flops"]) == len(B.CONFIGS) and [t["config"] for t in data["timing"]] == ["mae-d8", "cross0.75-d12"]
    assert "MAE d8" in capsys.readouterr().out


def test_compile_mode_reaches_torch_compile(monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: seen.append(kw) or model)
    small = {k: v for k, v in TINY.items() if k != "img_size"}
    for compile in (True, "reduce-overhead"):
        timed = B.time_configs("small", B.parse_configs(["cross0.25-d8"]), batch_size=2, repeats=1, img_size=32,
                               progress=False, overrides=small, compile=compile)
        assert timed[0]["compile"] == compile and timed[0]["repeats"] == 1
    assert seen == [{}, {"mode": "reduce-overhead"}]


def demo_model_section(name: str) -> dict:
    """The ``model:`` section of a Hiera demo config, as tools/toy_preset.py passes it to meta_model_flops."""
    import yaml

    from tools_fixtures import REPO
    return yaml.safe_load((REPO / "configs" / "pretrain" / name).read_text())["model"]


def test_tiny_hiera_decoders_match_hand_count():
    """The demo geometry (configs/pretrain/*_hiera_demo.yaml), worked by hand: 32 px, stride-2 patches (16 x 16
    tokens), mask units of 4 x 4 tokens (16 units), one q-pool, widths 32-64-128, a unit's tokens per side
    4-2-2: the last stage has 2 x 2 tokens per unit = 4 px prediction patches, an 8 x 8 grid of 64. Mask 0.6:
    int(16 * 0.4) = 6 visible units -> t = 24 last-stage tokens; 40 masked patches."""
    t, de, dd, depth, px = 24, 128, 96, 2, 4 * 4 * 3
    cross_kw, mae_kw = demo_model_section("crossmae_hiera_demo.yaml"), demo_model_section("mae_hiera_demo.yaml")
    assert (cross_kw["decoder_embed_dim"], cross_kw["decoder_depth"], cross_kw["mask_ratio"]) == (dd, depth, 0.6)
    # CrossMAE-Hiera mixes the 3 stages, each brought to width 128 on the 2 x 2 grid per unit: stage 1 by a
    # 2x2 / stride-2 convolution (32 channels x 4 taps in per output token), stage 2 by a 1x1 one (64 in),
    # stage 3 as it is
    fuse = 2 * t * (32 * 4) * de + 2 * t * 64 * de
    mix = 2 * depth * 3 * t * de  # W [depth, 3] times the 3 stacked maps
    kwargs = {k: v for k, v in cross_kw.items() if k != "name"}
    for pred_ratio, n_pred in ((0.6, 40), (0.25, 40 - int(64 * (0.6 - 0.25)))):
        attention = 4 * n_pred * t * dd  # QK^T and AV: the predicted queries against the visible tokens only
        per_block = (2 * n_pred * dd * dd + 2 * t * de * 2 * dd  # q; k and v from the encoder width
                     + attention + 2 * n_pred * dd * dd + 16 * n_pred * dd * dd)  # attention, proj, MLP
        total = fuse + mix + depth * per_block + 2 * n_pred * dd * px  # + the head on the predicted patches
        flops, _ = meta_model_flops(cross_kw["name"], train=False, **{**kwargs, "pred_ratio": pred_ratio})
        assert (flops["decoder"]["total"], flops["decoder"]["attention"]) == (total, depth * attention), pred_ratio
    # MAE-Hiera: stage 1's fusion head (the 2x2 / stride-2 convolution) + stage 3 (identity), decoder_embed
    # on the visible tokens, 2 self-attention blocks over all 64 patches (no cls token), the head on the 40 masked
    mae_total = 2 * t * (32 * 4) * de + 2 * t * de * dd + depth * block_flops(64, dd)[0] + 2 * 40 * dd * px
    mae, _ = meta_model_flops(mae_kw["name"], train=False, **{k: v for k, v in mae_kw.items() if k != "name"})
    assert mae["decoder"]["total"] == mae_total
    assert mae["encoder"]["total"] == flops["encoder"]["total"] > 0


def test_crossmae_hiera_decoder_cheaper_than_mae_hiera():
    """At γ = 0.25 (the paper's ViT setting) CrossMAE-Hiera's decoder costs less than MAE-Hiera's at the same
    encoder and decoder size, forward and training step alike."""
    kwargs = {k: v for k, v in demo_model_section("crossmae_hiera_demo.yaml").items() if k not in ("name", "pred_ratio")}
    mae_kwargs = {k: v for k, v in kwargs.items() if k != "inter_block"}
    cross, _ = meta_model_flops("crossmae_hiera_tiny_224", pred_ratio=0.25, **kwargs)
    mae, _ = meta_model_flops("mae_hiera_tiny_224", **mae_kwargs)
    assert cross["decoder"]["total"] < mae["decoder"]["total"]
    assert cross["train_step"]["total"] < mae["train_step"]["total"]
    assert cross["encoder"] == mae["encoder"]
