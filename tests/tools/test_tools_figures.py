"""PSNR and reconstructions with known answers, checkpoint loading, figures, and the analysis tools end to end."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from tools_fixtures import TINY, check_png, tiny_crossmae, tiny_mae

from crossmae.analysis import figures
from crossmae.analysis.inter_block import inter_block_weights
from crossmae.analysis.loading import load_pretrained, model_spec_from_checkpoint
from crossmae.analysis.reconstruction import masked_psnr, reconstruct
from crossmae.data.folder import IMAGENET_MEAN, IMAGENET_STD
from crossmae.engine.checkpoint import CheckpointError, save_checkpoint
from crossmae.masking import gather_tokens, random_masking
from crossmae.models.pos_embed import patchify

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_masked_psnr_known_answer():
    torch.manual_seed(0)
    target = 0.2 + 0.6 * torch.rand(2, 3, 16, 16)
    patch_mask = torch.zeros(2, 16)
    patch_mask[:, :5] = 1
    p = patchify(target, 4)
    wrong = p + 0.1 * patch_mask.unsqueeze(-1) + 0.5 * (1 - patch_mask.unsqueeze(-1))  # 0.1 off where measured
    from crossmae.models.pos_embed import unpatchify
    recon = unpatchify(wrong, 4, 4, 4)
    # 10 log10(1 / 0.1^2) = 20 dB exactly
    assert masked_psnr(target, recon, patch_mask, 4).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    assert masked_psnr(target, target, patch_mask, 4).isinf().all()


class OffsetModel(torch.nn.Module):
    """A stand-in decoder whose prediction is the true patch + ``offset`` in [0, 1] pixel units (norm_pix_loss
    off), or exactly the normalised target (norm_pix_loss on): known PSNRs through the whole pixel chain."""

    patch_size, grid_size = 4, (4, 4)

    def __init__(self, pixels: torch.Tensor, offset: float, norm_pix_loss: bool):
        super().__init__()
        self.pixels, self.offset, self.norm_pix_loss = pixels, offset, norm_pix_loss

    def decoder_memory(self, imgs, masks):
        return imgs

    def forward_decoder(self, imgs, masks, every_block=False):
        if self.norm_pix_loss:
            t = gather_tokens(patchify(imgs, 4), masks.ids_pred)
            pred = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
        else:
            pred = gather_tokens(patchify((self.pixels + self.offset - MEAN) / STD, 4), masks.ids_pred)
        return [pred * 0, pred]  # block 1 predicts 0, block 2 the answer


def test_reconstruct_psnr_known_answer():
    torch.manual_seed(0)
    pixels = 0.2 + 0.6 * torch.rand(3, 3, 16, 16)
    imgs = (pixels - MEAN) / STD
    masks = random_masking(3, 16, 0.75, 0.5, generator=torch.Generator().manual_seed(0))
    rec = reconstruct(OffsetModel(pixels, 0.1, False), imgs, masks)
    assert rec["psnr"].tolist() == pytest.approx([20.0] * 3, abs=1e-3)
    assert rec["psnr_blocks"].shape == (2, 3) and bool((rec["psnr_blocks"][0] < 15).all())
    assert torch.allclose(rec["original"], pixels, atol=1e-6)
    vis = masks.visible_mask.unsqueeze(-1)
    assert torch.allclose(patchify(rec["pasted"], 4) * vis, patchify(pixels, 4) * vis, atol=1e-6)
    # masked but not predicted patches stay grey in the reconstruction
    unpredicted = ~masks.visible_mask & (masks.pred_mask == 0)
    assert bool((patchify(rec["pasted"], 4)[unpredicted] == 0.5).all())
    exact = reconstruct(OffsetModel(pixels, 0.0, True), imgs, masks)
    assert bool((exact["psnr"] > 60).all())


def test_reconstruct_real_model_and_figure(tmp_path):
    torch.manual_seed(0)
    model = tiny_crossmae(norm_pix_loss=False).eval()
    imgs = torch.randn(3, 3, 32, 32)
    masks = model.sample_masks(imgs)
    rec = reconstruct(model, imgs, masks)
    assert len(rec["blocks"]) == 2
    # the final PSNR by hand from the training forward's prediction (normalised pixels, channel last per patch)
    with torch.no_grad():
        pred = model(imgs, masks).pred.reshape(3, -1, 16, 3)
    pred_px = (pred * STD.view(3) + MEAN.view(3)).clamp(0, 1)
    true_px = gather_tokens(patchify((imgs * STD + MEAN).clamp(0, 1), 4), masks.ids_pred).reshape(pred_px.shape)
    mse = (pred_px - true_px).pow(2).flatten(1).mean(1)
    assert rec["psnr"].tolist() == pytest.approx((10 * torch.log10(1 / mse)).tolist(), abs=1e-3)
    check_png(figures.reconstruction_figure(rec, tmp_path / "rec.png", title="tiny"))
    mae = tiny_mae().eval()
    assert len(reconstruct(mae, imgs, mae.sample_masks(imgs))["blocks"]) == 3


@pytest.mark.parametrize("name", ["crossmae_vit", "mae_vit", "crossmae_hiera_tiny_224", "mae_hiera_tiny_224"])
def test_block_readouts_end_in_the_training_prediction(name):
    # every pretraining model (CrossMAE and MAE, on ViT and on Hiera) reads out through the same path
    from crossmae.analysis.reconstruction import block_readouts
    from crossmae.models import build_model
    from tiny import TINY_CROSSMAE_HIERA
    torch.manual_seed(0)
    if name == "crossmae_vit":
        model = tiny_crossmae()
    elif name == "mae_vit":
        model = tiny_mae()
    else:
        model = build_model(name, **{k: v for k, v in TINY_CROSSMAE_HIERA.items() if k != "name"})
    model.eval()
    imgs = torch.randn(2, 3, 32, 32)
    masks = model.sample_masks(imgs, generator=torch.Generator().manual_seed(0))
    readouts = block_readouts(model, imgs, masks)
    with torch.no_grad():
        pred = model(imgs, masks).pred
    assert len(readouts) == len(model.decoder_blocks)
    assert torch.equal(readouts[-1], pred)


def test_inter_block_weights_and_heatmap(tmp_path):
    model = tiny_crossmae(decoder_depth=3)
    rows = [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.0, 1.0, 0.0]]  # decoder block j (row) reads feature map i (column)
    with torch.no_grad():
        model.wfm.linear.weight.copy_(torch.tensor(rows))
    w, names = inter_block_weights(model)
    assert torch.allclose(w, torch.tensor(rows)) and names == ["input", "block 1", "block 2"]
    assert inter_block_weights(tiny_crossmae(use_input=False))[1] == ["block 1", "block 2"]
    with pytest.raises(ValueError, match="no inter-block"):
        inter_block_weights(tiny_mae())
    check_png(figures.inter_block_figure(w, names, tmp_path / "w.png"), min_bytes=3000)


def test_attention_figures(tmp_path):
    blocks = [{f"{n}/{c}": v for n in ("mass", "paper", "per_key") for c, v in
               zip(("visible", "masked", "cls"), (0.55 + 0.02 * i, 0.4 - 0.02 * i, 0.05))} for i in range(8)]
    result = {"blocks": blocks, "sum_over_blocks": {k: sum(b[k] for b in blocks) for k in blocks[0]}}
    ref = {"visible": [0.2] * 8, "masked": [0.05] * 8}
    check_png(figures.attention_mass_figure(result, tmp_path / "mass.png", ref))
    maps = torch.rand(2, 2, 8, 8)
    visible = torch.rand(2, 64) > 0.75
    maps.flatten(2)[:, ~visible] = float("nan")
    check_png(figures.query_maps_figure(torch.rand(2, 3, 32, 32), visible, maps, 27, (8, 8), tmp_path / "q.png"))


def test_load_pretrained_and_official_args(tmp_path, tiny_checkpoint):
    model, info = load_pretrained(tiny_checkpoint)
    saved = torch.load(tiny_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert info["decoder"] == "CrossMAE" and not model.training
    with pytest.raises(CheckpointError, match="does not match"):
        load_pretrained(tiny_checkpoint, model_kwargs={"decoder_depth": 3})
    bare = tmp_path / "bare.pth"
    torch.save({"model": saved}, bare)
    with pytest.raises(CheckpointError, match="pass the model name"):
        load_pretrained(bare)
    name, kwargs = model_spec_from_checkpoint(torch.load(tiny_checkpoint, weights_only=True))
    assert load_pretrained(bare, name, kwargs)[1]["name"] == name == "crossmae_vit_small_patch16"
    args = argparse.Namespace(model="mae_vit_base_patch16", cross_mae=True, weight_fm=True, use_input=True,
                              use_fm=[-1], self_attn=False, decoder_depth=12, mask_ratio=0.75, kept_mask_ratio=0.25,
                              norm_pix_loss=True, input_size=224)
    assert model_spec_from_checkpoint({"args": args}) == (
        "crossmae_vit_base_patch16", {"img_size": 224, "decoder_depth": 12, "mask_ratio": 0.75, "norm_pix_loss": True,
                                      "pred_ratio": 0.25, "inter_block": True, "use_input": True,
                                      "decoder_self_attn": False})
    args.cross_mae = False
    assert model_spec_from_checkpoint({"args": args})[0] == "mae_vit_base_patch16"


@pytest.fixture(scope="module")
def tool_inputs(tmp_path_factory):
    """Tiny CrossMAE and MAE checkpoints (random weights) and an ImageFolder of 8 smooth 40 px images."""
    from PIL import Image
    root = tmp_path_factory.mktemp("tools_e2e")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(4):
            base = rng.uniform(0, 255, (5, 5, 3)).astype(np.uint8)
            img = Image.fromarray(base).resize((40, 40), Image.BILINEAR)
            (root / "images" / "val" / cls).mkdir(parents=True, exist_ok=True)
            img.save(root / "images" / "val" / cls / f"{i}.png")
    paths = {}
    for name, model in (("crossmae", tiny_crossmae()), ("mae", tiny_mae())):
        kind = "crossmae_vit_small_patch16" if name == "crossmae" else "mae_vit_small_patch16"
        kw = {**TINY, "decoder_depth": len(model.decoder_blocks)}
        paths[name] = root / name / "checkpoint.pth"
        save_checkpoint({"model": model.state_dict(), "epoch": 1, "config": {"model": {"name": kind, **kw}}},
                        paths[name])
    return root / "images", paths


def test_tools_end_to_end(tool_inputs, tmp_path, capsys):
    data, ckpt = tool_inputs
    common = ["--data", str(data), "--num-workers", "0", "--max-images", "6", "--batch-size", "4"]
    from tools.analyze_attention import main as analyze
    assert analyze(["--checkpoint", str(ckpt["mae"]), "--output-dir", str(tmp_path / "mae"), *common]) == 0
    result = json.loads((tmp_path / "mae" / "attention.json").read_text())
    assert result["num_images"] == 6 and len(result["blocks"]) == 3
    check_png(tmp_path / "mae" / "attention_mass.png")
    assert analyze(["--checkpoint", str(ckpt["crossmae"]), "--output-dir", str(tmp_path / "cross"), "--query", "9",
                    "--num-vis", "2", *common]) == 0
    result = json.loads((tmp_path / "cross" / "attention.json").read_text())
    assert result["query"] == 9 and len(result["mean_distance"]) == 2
    check_png(tmp_path / "cross" / "query_maps_q9.png")
    from tools.reconstruct import main as recon
    assert recon(["--checkpoint", str(ckpt["crossmae"]), "--output-dir", str(tmp_path / "rec"), "--num-vis", "3",
                  *common]) == 0
    psnr = json.loads((tmp_path / "rec" / "psnr.json").read_text())
    assert psnr["num_images"] == 6 and len(psnr["psnr_blocks"]) == 2 and 0 < psnr["psnr"] < 60
    check_png(tmp_path / "rec" / "reconstruction.png")
    from tools.plot_inter_block import main as plot
    assert plot(["--checkpoint", str(ckpt["crossmae"]), "--output", str(tmp_path / "w.png")]) == 0
    check_png(tmp_path / "w.png", min_bytes=3000)
    assert json.loads((tmp_path / "w.json").read_text())["feature_maps"] == ["input", "block 1", "block 2"]
    assert plot(["--checkpoint", str(ckpt["mae"]), "--output", str(tmp_path / "x.png")]) == 2
    assert "no inter-block" in capsys.readouterr().err
