"""detectron2 export: key mapping, pos_embed / patch resizing, detectron2's suffix matching; with
detectron2 installed, loading into its ViT and the LazyConfigs (skipped otherwise)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crossmae.engine import load_checkpoint, model_state
from crossmae.models.dense_vit import DenseViT
from det.export import export, main, to_detectron2

REPO = Path(__file__).resolve().parents[2]
D2_CONFIGS = REPO / "configs" / "det" / "detectron2"


def d2_align(model_state: dict, ckpt_state: dict) -> tuple[dict, list[str]]:
    """detectron2's ``align_and_update_state_dicts`` (``?matching_heuristics=True``), restated: each
    model key takes the longest checkpoint key that equals it or is a whole dotted suffix of it; a
    match whose shape differs is skipped with a warning; a checkpoint key loaded into a second model
    key raises "Cannot match one checkpoint key to multiple keys in the model." Returns
    ({model key: checkpoint key} loaded, skipped checkpoint keys with their warnings)."""
    loaded, skipped = {}, []
    for mk in sorted(model_state):
        hits = [ck for ck in sorted(ckpt_state) if mk == ck or mk.endswith("." + ck)]
        if not hits:
            continue
        ck = max(hits, key=len)
        if ckpt_state[ck].shape != model_state[mk].shape:
            skipped.append(f"{ck} -> {mk}")
            continue
        if ck in loaded.values():
            raise ValueError("Cannot match one checkpoint key to multiple keys in the model.")
        loaded[mk] = ck
    return loaded, skipped


@pytest.fixture(scope="module")
def state(tiny_checkpoint):
    """The tiny CrossMAE's state plus the final encoder norm an MAE / plain CrossMAE checkpoint has."""
    s = dict(model_state(load_checkpoint(tiny_checkpoint)))
    s.setdefault("norm.weight", torch.full((64,), 1.5))
    s.setdefault("norm.bias", torch.zeros(64))
    return s


def d2_like_vit(patch_size=16, pretrain_img_size=224):
    # our ViTDet backbone uses detectron2's ViT parameter names under backbone.net
    return DenseViT(img_size=64, pretrain_img_size=pretrain_img_size, patch_size=patch_size, embed_dim=64, depth=4,
                    num_heads=4, window_size=4, global_attn_indexes=(1, 3), rel_pos="decomposed")


def test_key_mapping_and_resizing(state):
    out, dropped = to_detectron2(state, pretrain_img_size=224, patch_size=16)
    assert dropped == ["cls_token", "norm.bias", "norm.weight"]
    assert all(k.startswith("backbone.net.") for k in out)
    assert not any(k.startswith(("decoder", "mask_token")) or ".decoder" in k for k in out)
    assert out["backbone.net.pos_embed"].shape == (1, 1 + 14 * 14, 64)  # 8 x 8 grid -> detectron2's 224 / 16
    assert out["backbone.net.patch_embed.proj.weight"].shape == (64, 3, 16, 16)  # 4 px -> 16 px
    torch.testing.assert_close(out["backbone.net.blocks.2.attn.qkv.weight"], state["blocks.2.attn.qkv.weight"])
    # detectron2's ViT under ViTDet's backbone.net, written down from detectron2/modeling/backbone/vit.py
    # (PatchEmbed.proj conv, Block: norm1, attn.{qkv,proj}, norm2, timm Mlp fc1/fc2), shapes for width 64,
    # 4 blocks, 224 px / 16 px pretraining grid; the rel-pos tables are new in ViTDet, so not exported
    d = 64
    expected = {"pos_embed": (1, 1 + 14 * 14, d), "patch_embed.proj.weight": (d, 3, 16, 16), "patch_embed.proj.bias": (d,)}
    for i in range(4):
        expected.update({f"blocks.{i}.{name}": shape for name, shape in (
            ("norm1.weight", (d,)), ("norm1.bias", (d,)), ("attn.qkv.weight", (3 * d, d)), ("attn.qkv.bias", (3 * d,)),
            ("attn.proj.weight", (d, d)), ("attn.proj.bias", (d,)), ("norm2.weight", (d,)), ("norm2.bias", (d,)),
            ("mlp.fc1.weight", (4 * d, d)), ("mlp.fc1.bias", (4 * d,)), ("mlp.fc2.weight", (d, 4 * d)),
            ("mlp.fc2.bias", (d,)))})
    assert {k: tuple(v.shape) for k, v in out.items()} == {"backbone.net." + k: v for k, v in expected.items()}


def test_same_grid_and_patch_keep_tensors(state):
    out, _ = to_detectron2(state, pretrain_img_size=32, patch_size=4)
    torch.testing.assert_close(out["backbone.net.pos_embed"], state["pos_embed"])
    torch.testing.assert_close(out["backbone.net.patch_embed.proj.weight"], state["patch_embed.proj.weight"])


def d2_model_state(head_width: int) -> dict:
    """ViTDet's backbone keys plus head norms of ``head_width`` (256 in ViTDet; 64 = the tiny ViT's width)."""
    out = {"backbone.net." + k: v for k, v in d2_like_vit().state_dict().items()}
    for head in ("roi_heads.mask_head.mask_fcn1", "roi_heads.box_head.conv1"):
        out.update({f"{head}.norm.weight": torch.ones(head_width), f"{head}.norm.bias": torch.zeros(head_width)})
    return out


def test_stray_top_level_norm_under_detectron2s_matching_heuristics(state):
    """What a bare ``norm.*`` does under detectron2's suffix matching (why the export drops it: the
    ViTDet ViT has no final norm, so the key can only hit a head norm)."""
    raw = {k: v for k, v in state.items() if k in ("norm.weight", "norm.bias")}
    # widths differ (ViT 768 vs heads 256): every head norm is a shape mismatch, skipped with a warning
    loaded, skipped = d2_align(d2_model_state(head_width=32), raw)
    assert loaded == {} and len(skipped) == 4
    assert "norm.weight -> roi_heads.box_head.conv1.norm.weight" in skipped
    # widths agree: the first head norm takes it, the second makes the whole load fail
    with pytest.raises(ValueError, match="Cannot match one checkpoint key to multiple keys"):
        d2_align(d2_model_state(head_width=64), raw)
    # the export: exact names only, nothing lands in the heads, nothing is skipped
    out, _ = to_detectron2(state)
    loaded, skipped = d2_align(d2_model_state(head_width=64), out)
    assert skipped == [] and all(mk == ck for mk, ck in loaded.items()) and len(loaded) == len(out)


def test_d2_align_restates_detectron2():
    """With detectron2 installed, the restatement above agrees with the real function."""
    c2 = pytest.importorskip("detectron2.checkpoint.c2_model_loading")
    raw = {"norm.weight": torch.ones(64), "norm.bias": torch.zeros(64)}
    with pytest.raises(ValueError, match="Cannot match one checkpoint key to multiple keys"):
        c2.align_and_update_state_dicts(d2_model_state(64), raw, c2_conversion=False)
    model = d2_model_state(32)
    before = {k: v.clone() for k, v in model.items()}
    c2.align_and_update_state_dicts(model, raw, c2_conversion=False)
    assert all(torch.equal(model[k], before[k]) for k in model)  # skipped: shapes differ


def test_export_file_and_cli(tiny_checkpoint, tmp_path):
    dst = export(tiny_checkpoint, tmp_path / "d2.pth")
    loaded = torch.load(dst, map_location="cpu", weights_only=True)  # as fvcore's Checkpointer reads it
    assert set(loaded) == {"model", "__author__"} and "backbone.net.blocks.0.norm1.weight" in loaded["model"]
    assert main([str(tiny_checkpoint), str(tmp_path / "d2b.pth"), "--pretrain-img-size", "32",
                 "--patch-size", "4"]) == 0
    assert torch.load(tmp_path / "d2b.pth", weights_only=True)["model"]["backbone.net.pos_embed"].shape == (1, 65, 64)
    assert main([str(tmp_path / "missing.pth"), str(tmp_path / "x.pth")]) == 2


# ----------------------------------------------------------------------------------- with detectron2
def test_detectron2_vit_loads_the_export(tiny_checkpoint, tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import ViT

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Module()
            self.backbone.net = ViT(img_size=64, patch_size=16, embed_dim=64, depth=4, num_heads=4, window_size=4,
                                    window_block_indexes=[0, 2], use_rel_pos=True, pretrain_img_size=224)

    dst = export(tiny_checkpoint, tmp_path / "d2.pth")
    model = Wrapper()
    for query in ("", "?matching_heuristics=True"):
        for p in model.parameters():  # start from something the export must overwrite
            torch.nn.init.constant_(p, 0.123)
        DetectionCheckpointer(model).load(str(dst) + query, checkpointables=[])
        sd = model.state_dict()
        exported = torch.load(dst, weights_only=True)["model"]
        for k, v in exported.items():
            torch.testing.assert_close(sd[k], v)
        assert set(sd) - set(exported) == {k for k in sd if "rel_pos" in k}  # only the new tables left


@pytest.mark.parametrize("name", ["mask_rcnn_vitdet_b_100ep.py", "mask_rcnn_vitdet_l_100ep.py",
                                  "mask_rcnn_vitdet_h_75ep.py"])
def test_lazyconfigs_load(name):
    pytest.importorskip("detectron2")
    from detectron2.config import LazyConfig
    cfg = LazyConfig.load(str(D2_CONFIGS / name))
    depth = {"b": 12, "l": 24, "h": 32}[name.split("_")[3]]
    assert cfg.model.backbone.net.depth == depth
    assert len(cfg.model.backbone.net.window_block_indexes) == depth - 4
    assert cfg.optimizer.lr == 1e-4 and cfg.dataloader.train.total_batch_size == 64


def test_lazyconfigs_are_valid_python():
    # without detectron2: at least they parse, and name what the docs say
    import ast
    for name in ("mask_rcnn_vitdet_b_100ep.py", "mask_rcnn_vitdet_l_100ep.py", "mask_rcnn_vitdet_h_75ep.py"):
        src = (D2_CONFIGS / name).read_text()
        ast.parse(src)
        assert "lr_decay_rate" in src or "lr_factor_func" in src


@pytest.mark.parametrize("with_config", [True, False])
def test_hiera_checkpoint_is_refused_in_one_line(tmp_path, capsys, with_config):
    """A Hiera pretraining checkpoint, told by its config's model name or, without one, by its widening blocks."""
    from crossmae.engine import save_checkpoint
    from tiny import save_tiny_hiera_checkpoint
    src = save_tiny_hiera_checkpoint(tmp_path / "hiera.pth")
    if not with_config:
        save_checkpoint({"model": model_state(load_checkpoint(src))}, src)
    assert main([str(src), str(tmp_path / "d2.pth")]) == 2
    assert capsys.readouterr().err == (f"det.export: error: {src} is a Hiera checkpoint: only ViT checkpoints export "
                                       f"to detectron2 (`crossmae export --timm` writes timm's Hiera)\n")
    assert not (tmp_path / "d2.pth").exists()
