"""det's config schema (det/config.py): the ViT size of the B/L/H recipes comes from model.size, the resolved
fields are written into the saved config, and det's own value checks apply."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from crossmae.config import ConfigError, load_config, save_config
from crossmae.models.dense_vit import DenseViT
from det.backbone import build_net
from det.config import DetConfig
from tiny import REPO

# MAE's ViT-B/16, ViT-L/16 and ViT-H/14 (He et al. 2021): (embed_dim, depth, num_heads, patch_size)
MAE_VITS = {"base": (768, 12, 12, 16), "large": (1024, 24, 16, 16), "huge": (1280, 32, 16, 14)}
# the recipes: ViTDet-H runs at 16 px patches (detectron2 resamples MAE-H's 14 px projection when loading)
RECIPES = {"vitdet_b_100ep.yaml": (768, 12, 12, 16), "vitdet_l_100ep.yaml": (1024, 24, 16, 16),
           "vitdet_h_75ep.yaml": (1280, 32, 16, 16)}
VIT_FIELDS = ("embed_dim", "depth", "num_heads", "patch_size")


@pytest.fixture(autouse=True)
def no_weight_init(monkeypatch):
    monkeypatch.setattr(DenseViT, "init_weights", lambda self: None)  # only shapes are read: skip the init's cost


def built_vit(cfg) -> tuple[int, int, int, int]:
    """(width, blocks, heads, patch) of the backbone the config builds, on the meta device (no memory)."""
    with torch.device("meta"):
        net = build_net(cfg.model, cfg.image_size)
    return (net.embed_dim, len(net.blocks), net.blocks[0].attn.num_heads, net.patch_embed.proj.kernel_size[0])


@pytest.mark.parametrize("size", list(MAE_VITS))
def test_size_alone_gives_maes_vit(size):
    cfg = load_config(DetConfig, None, [f"model.size={size}", "image_size=896"])  # 896: 64 x 14 = 56 x 16
    assert built_vit(cfg) == MAE_VITS[size]
    assert tuple(cfg.model[k] for k in VIT_FIELDS) == MAE_VITS[size]  # written back into the config


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipes_take_the_vit_from_their_size(name, tmp_path):
    path = REPO / "configs" / "det" / name
    stated = OmegaConf.load(path).model
    assert not {"embed_dim", "depth", "num_heads"} & set(stated)  # the size table's numbers, not restated
    cfg = load_config(DetConfig, path)
    assert built_vit(cfg) == RECIPES[name]
    # the saved config names the model it built: it rebuilds it whatever model.size says
    save_config(cfg, tmp_path / "config.yaml")
    saved = OmegaConf.load(tmp_path / "config.yaml").model
    assert tuple(saved[k] for k in VIT_FIELDS) == RECIPES[name]
    assert built_vit(load_config(DetConfig, tmp_path / "config.yaml", ["model.size=small"])) == RECIPES[name]


def test_set_fields_win_over_the_size():
    cfg = load_config(DetConfig, None, ["model.size=large", "model.embed_dim=64", "model.num_heads=4"])
    assert built_vit(cfg) == (64, 24, 4, 16)


BAD = [  # checks that live in det's schema classes
    ("model.size=giant", "model.size='giant' (from command line): must be one of small, base, large, huge"),
    ("model.fpn_channels=0", "model.fpn_channels=0 (from command line): must be an integer in [1, "),
    ("model.anchor_sizes=[8,0]", "model.anchor_sizes=[8, 0] (from command line): must be an integer in [1, "),
    ("model.mask_head_convs=-1", "model.mask_head_convs=-1 (from command line): must be an integer in [0, "),
    ("model.box_score_thresh=1.5", "model.box_score_thresh=1.5 (from command line): must be a number in [0, 1]"),
    ("data.max_scale=0", "data.max_scale=0.0 (from command line): must be a number > 0"),
    ("image_size=0", "image_size=0 (from command line): must be an integer in [1, "),
    ("eval_backend=coco", "eval_backend='coco' (from command line): must be one of pycocotools, faster_coco_eval"),
]


@pytest.mark.parametrize("override,message", BAD, ids=[o for o, _ in BAD])
def test_det_fields_are_checked(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(DetConfig, None, [override])
    assert str(e.value).startswith(message)
