"""The cheaper pretraining step (issue 10 section 2): same losses and gradients as the formulations it
replaced, the official mask rounding, fused AdamW with its fallback, and the bf16 / fp16 / compile paths
run on CPU so a GPU user never meets them untested."""
import json
import math

import pytest
import torch

from crossmae.engine import DistInfo, Trainer, build_adamw, warmup_cosine
from crossmae.engine.loop import resolve_compile, resolve_precision
from crossmae.masking import Masks, gather_tokens, mask_counts, random_masking
from crossmae.models.pos_embed import patchify

from tiny import TINY_CROSSMAE, tiny_model

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


# (patches, mask ratio, pred ratio) -> (visible, predicted) by the release's rule, worked out by hand:
# visible = int(L * (1 - mask)), masked-but-not-predicted = int(L * (mask - pred)), predicted = the rest.
# The float products matter: 196 * (1 - 0.7) = 58.800000000000004 -> 58, 196 * (0.7 - 0.2) = 97.99999999999999 -> 97.
OFFICIAL_COUNTS = {
    (196, 0.75, 0.25): (49, 49),    # 49 + 98 masked only
    (196, 0.75, 0.75): (49, 147),   # every masked patch predicted
    (64, 0.75, 0.25): (16, 16),     # 16 + 32
    (196, 0.70, 0.20): (58, 41),    # 58 + 97: both products round down below the exact 58.8 / 98
    (256, 0.90, 0.10): (25, 27),    # 256 * 0.09999999999999998 = 25.6 -> 25; 204.8 -> 204
    (64, 0.60, 0.30): (25, 20),     # 25.6 -> 25; 19.2 -> 19
    (196, 0.85, 0.55): (29, 109),   # 29.400000000000006 -> 29; 58.79999999999999 -> 58
    (49, 0.75, 0.50): (12, 25),     # 12.25 -> 12 twice
}


def test_mask_counts_match_the_official_rounding():
    for (n, m, p), expected in OFFICIAL_COUNTS.items():
        assert mask_counts(n, m, p) == expected, (n, m, p)


def test_dense_masks_are_built_only_on_demand_and_are_right():
    m = random_masking(3, 64, 0.75, 0.25, generator=torch.Generator().manual_seed(0))
    assert m._pred_mask is None and m._visible_mask is None  # nothing built during training
    pred, vis = m.pred_mask, m.visible_mask
    for i in range(3):
        assert set(pred[i].nonzero().flatten().tolist()) == set(m.ids_pred[i].tolist())
        assert set(vis[i].nonzero().flatten().tolist()) == set(m.ids_keep[i].tolist())
    assert pred.dtype == torch.float32 and vis.dtype == torch.bool
    given = torch.ones(3, 64)
    assert Masks(m.ids_keep, m.ids_pred, m.ids_restore, given).pred_mask is given


def old_crossmae_memory(model, imgs, masks):
    """The replaced inter-block mix: one tensordot per decoder block."""
    feats = model.forward_features(imgs, masks.ids_keep, collect=True)
    stacked = torch.stack(feats if model.use_input else feats[1:])
    return [norm(torch.tensordot(model.wfm.linear.weight[j], stacked, dims=1))
            for j, norm in enumerate(model.dec_norms)]


def old_mae_readout(model, x, masks):
    """The replaced MAE readout: normalise every token, then pick the predicted ones."""
    return model.decoder_pred(gather_tokens(model.decoder_norm(x)[:, 1:], masks.ids_pred))


def loss_and_grads(model, imgs, masks, old: bool):
    model.zero_grad()
    if not old:
        loss = model(imgs, masks).loss
    else:
        if hasattr(model, "wfm"):
            pred = model.forward_decoder(old_crossmae_memory(model, imgs, masks), masks)
        else:
            x = model.decoder_tokens(model.forward_features(imgs, masks.ids_keep), masks)
            for blk in model.decoder_blocks:
                x = blk(x)
            pred = old_mae_readout(model, x, masks)
        target = gather_tokens(patchify(imgs, model.patch_size), masks.ids_pred)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        loss = ((pred - (target - mean) / (var + 1e-6) ** 0.5) ** 2).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name,pred_ratio", [("crossmae_vit_small_patch16", 0.25),
                                             ("crossmae_vit_small_patch16", 0.75),
                                             ("mae_vit_small_patch16", None)])
def test_loss_and_gradients_equal_the_old_formulation(name, pred_ratio):
    torch.manual_seed(0)
    kw = {"name": name} if pred_ratio is None else {"name": name, "pred_ratio": pred_ratio}
    model = tiny_model(**kw)
    imgs = torch.randn(4, 3, 32, 32)
    masks = model.sample_masks(imgs, generator=torch.Generator().manual_seed(1))
    new_loss, new_grads = loss_and_grads(model, imgs, masks, old=False)
    old_loss, old_grads = loss_and_grads(model, imgs, masks, old=True)
    assert torch.allclose(new_loss, old_loss, rtol=1e-6, atol=0), (new_loss, old_loss)
    assert new_grads.keys() == old_grads.keys()
    for n in new_grads:
        assert torch.allclose(new_grads[n], old_grads[n], rtol=1e-5, atol=1e-7), n


def test_batched_mix_equals_per_block_mix():
    model = tiny_model()
    stacked = torch.randn(model.wfm.linear.weight.shape[1], 2, 5, 64)
    mixed = model.wfm(stacked)
    w = model.wfm.linear.weight
    for j in range(mixed.shape[0]):  # block j's mix by its definition, sum_i W[j, i] * F_i
        assert torch.allclose(mixed[j], sum(w[j, i] * stacked[i] for i in range(w.shape[1])), atol=1e-6)


def run_steps(optimizer_fn, steps=5):
    torch.manual_seed(0)
    model = tiny_model()
    opt = optimizer_fn(model)
    imgs = torch.randn(4, 3, 32, 32)
    masks = random_masking(4, 64, 0.75, 0.25, generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        opt.zero_grad()
        model(imgs, masks).loss.backward()
        opt.step()
    return model, opt


def test_build_adamw_fuses_where_supported_and_matches_foreach():
    # one step: the gradients going in are then identical, so only the update rule can differ (over
    # more steps Adam turns rounding-level gradient differences of near-zero gradients into full steps)
    fused_model, opt = run_steps(lambda m: build_adamw(m, 1e-3, 0.05, betas=(0.9, 0.95)), steps=1)
    plain_model, _ = run_steps(lambda m: build_adamw(m, 1e-3, 0.05, betas=(0.9, 0.95), fused=False), steps=1)
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
        cpu_fused = True
    except RuntimeError:  # a torch without fused CPU kernels: build_adamw must have fallen back
        cpu_fused = False
    assert bool(opt.defaults.get("fused")) == cpu_fused
    for (n, a), b in zip(fused_model.named_parameters(), plain_model.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), n


def test_build_adamw_falls_back_cleanly_where_fused_is_unsupported(monkeypatch):
    real = torch.optim.AdamW

    def no_fused(params, **kw):
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                               "supported devices")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    opt = build_adamw(tiny_model(), 1e-3, 0.05)
    assert not opt.defaults.get("fused")
    with pytest.raises(ValueError, match="fused AdamW is not supported"):
        build_adamw(tiny_model(), 1e-3, 0.05, fused=True)


class FixedImages(torch.utils.data.Dataset):
    def __init__(self, n=8):
        self.x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)).cumsum(-1) / 8

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0


def train_tiny(tmp_path, precision, compile=False, epochs=3):
    torch.manual_seed(0)
    model = tiny_model()
    loader = torch.utils.data.DataLoader(FixedImages(), batch_size=4, shuffle=False)
    opt = build_adamw(model, 1e-3, 0.05, betas=(0.9, 0.95))
    trainer = Trainer(model=model, optimizer=opt, train_loader=loader, lr_schedule=warmup_cosine(1e-3, 0, 10, 1),
                      loss_fn=lambda m, b: m(b[0], random_masking(4, 64, 0.75, 0.25,
                                                                  generator=torch.Generator().manual_seed(0))).loss,
                      epochs=epochs, output_dir=tmp_path / precision, dist=CPU, precision=precision,
                      compile=compile, tensorboard=False, allow_cpu_autocast=True, save_every=100)
    assert trainer.precision == precision
    trainer.fit()
    return trainer


def final_loss(trainer):
    lines = (trainer.output_dir / "epoch_log.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["train_loss"]


def test_cpu_autocast_needs_an_explicit_override():
    assert resolve_precision("bf16", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu"), allow_cpu=True) == "bf16"
    assert resolve_precision("auto", torch.device("cpu"), allow_cpu=True) == "fp32"


def test_compile_auto_means_cuda_only_and_the_config_accepts_yaml_booleans(tmp_path, monkeypatch, caplog):
    from crossmae.config import ConfigError, PretrainConfig, load_config
    from crossmae.engine import loop
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(loop, "compiler_available", lambda: True)
    assert resolve_compile("auto", cuda) and not resolve_compile("auto", cpu)
    monkeypatch.setattr(loop, "compiler_available", lambda: False)  # e.g. a CUDA torch without Triton
    assert not resolve_compile("auto", cuda) and "training eager" in caplog.text
    assert resolve_compile("true", cuda)  # asked for explicitly: torch.compile's own error, if any, is the answer
    assert resolve_compile(True, cpu) and resolve_compile("True", cpu) and not resolve_compile(False, cuda)
    with pytest.raises(ValueError, match="compile must be auto, true or false"):
        resolve_compile("yes", cpu)
    assert load_config(PretrainConfig).compile == "auto"
    assert resolve_compile(load_config(PretrainConfig, overrides=["compile=true"]).compile, cpu)
    (tmp_path / "c.yaml").write_text("compile: false\n")
    assert not resolve_compile(load_config(PretrainConfig, tmp_path / "c.yaml").compile, cuda)
    with pytest.raises(ConfigError, match="compile='sometimes'.*one of auto, true, false"):
        load_config(PretrainConfig, overrides=["compile=sometimes"])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_run_and_stay_close_to_fp32(tmp_path, precision):
    ref = final_loss(train_tiny(tmp_path, "fp32"))
    trainer = train_tiny(tmp_path, precision)
    loss = final_loss(trainer)
    assert math.isfinite(loss)
    # measured (mean loss of epoch 3): fp32 1.2171, bf16 1.2175, fp16 1.2170; bf16 has 8 mantissa bits
    assert abs(loss - ref) < 0.02 * abs(ref), (precision, loss, ref)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    if precision == "fp16":
        assert trainer.scaler.get_scale() > 0


@pytest.mark.slow  # ~40 s with a cold inductor cache, ~7 s warm
def test_compiled_model_trains_like_eager(tmp_path):
    pytest.importorskip("torch._dynamo")
    ref = final_loss(train_tiny(tmp_path, "fp32", epochs=1))
    try:
        loss = final_loss(train_tiny(tmp_path / "c", "fp32", compile=True, epochs=1))
    except Exception as e:  # no C++ compiler for inductor on this machine: not our bug
        if "compiler" in str(e).lower() or "InductorError" in type(e).__name__:
            pytest.skip(f"torch.compile unavailable here: {type(e).__name__}")
        raise
    assert abs(loss - ref) < 1e-3 * abs(ref), (loss, ref)


def test_before_after_timing_interleaves_and_pairs_by_config():
    from crossmae.analysis import benchmark as B
    from crossmae.analysis.flops import build_on
    small = {k: v for k, v in TINY_CROSSMAE.items() if k not in ("name", "img_size")}

    def foreach(name, kwargs):
        model = build_on("cpu", name, **kwargs)
        return model, build_adamw(model, 1e-4, 0.05, fused=False)

    builders = {"before": foreach, "after": B.default_builder}
    configs = B.parse_configs(["cross0.25-d8", "mae-d8"])
    timed = B.time_configs("small", configs, batch_size=2, repeats=3, warmup=0, img_size=32, progress=False,
                           overrides=small, builders=builders)
    assert [(t["impl"], t["config"]) for t in timed] == [("before", "cross0.25-d8"), ("before", "mae-d8"),
                                                        ("after", "cross0.25-d8"), ("after", "mae-d8")]
    assert not timed[0]["fused_adamw"]
    assert all(len(t["cpu_s_all"]) == 3 and min(t["cpu_s_all"]) > 0 for t in timed)


def test_paired_ratios_on_hand_made_timings():
    from crossmae.analysis import benchmark as B

    def row(impl, config, times):
        return {"impl": impl, "size": "small", "config": config, "label": config, "device": "cpu",
                "cpu_s_all": times, "step_s_all": [99.0] * len(times)}  # wall times must be ignored on CPU
    timed = [row("before", "a", [2.0, 4.0, 6.0]), row("before", "b", [1.0, 1.0, 1.0]),
             row("after", "b", [2.0, 4.0, 1.0]), row("after", "a", [1.0, 2.0, 2.0])]
    pairs = {p["config"]: p for p in B.paired_ratios(timed)}
    # a: 2/1, 4/2, 6/2 = 2, 2, 3; b: 1/2, 1/4, 1/1 = 0.5, 0.25, 1
    assert (pairs["a"]["speedup_median"], pairs["a"]["speedup_min"], pairs["a"]["speedup_max"]) == (2, 2, 3)
    assert (pairs["b"]["speedup_median"], pairs["b"]["speedup_min"], pairs["b"]["speedup_max"]) == (0.5, 0.25, 1)
    assert (pairs["a"]["before_s"], pairs["a"]["after_s"], pairs["a"]["repeats"]) == (4, 2, 3)
    table = B.format_before_after(list(pairs.values()))
    assert "before / after" in table


def test_compare_steps_tells_equal_steps_from_different_ones():
    from crossmae.analysis import benchmark as B
    from crossmae.analysis.flops import build_on
    small = {k: v for k, v in TINY_CROSSMAE.items() if k not in ("name", "img_size")}

    def plain(name, kwargs):
        return build_on("cpu", name, **{**kwargs, "norm_pix_loss": True}), None

    def raw_pixel_target(name, kwargs):  # another loss on the same weights: the comparison must see it
        return build_on("cpu", name, **{**kwargs, "norm_pix_loss": False}), None

    configs = B.parse_configs(["cross0.25-d8"])
    same = B.compare_steps("small", configs, {"a": plain, "b": plain}, img_size=32, overrides=small)
    assert same[0]["loss_a"] == same[0]["loss_b"] and same[0]["max_grad_rel_diff"] == 0
    other = B.compare_steps("small", configs, {"a": plain, "b": raw_pixel_target}, img_size=32, overrides=small)
    assert other[0]["loss_a"] != other[0]["loss_b"] and other[0]["max_grad_rel_diff"] > 1e-3
