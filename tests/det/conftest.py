"""Fixtures for the ViTDet tests: a synthetic COCO-format set and a tiny detector config."""
from __future__ import annotations

import pytest

# a tiny ViTDet on 64 px images: 8 px patches (8 x 8 grid), width 64, depth 4 (matches the tiny_checkpoint
# fixture's encoder, whose 4 px patch projection is resampled to 8 px and 8 x 8 position grid kept)
TINY_DET = ["model.embed_dim=64", "model.depth=4", "model.num_heads=4", "model.patch_size=8",
            "model.pretrain_img_size=64", "model.window_size=4", "model.global_attn_indexes=[1,3]",
            "model.drop_path_rate=0.0", "model.fpn_channels=32", "model.anchor_sizes=[8,16,32,64,128]",
            "model.box_head_fc=128", "model.rpn_pre_nms_top_n_train=300", "model.rpn_pre_nms_top_n_test=300",
            "model.rpn_post_nms_top_n_train=200", "model.rpn_post_nms_top_n_test=200",
            "model.box_batch_size_per_image=64", "image_size=64", "data.num_workers=0", "data.min_scale=0.5",
            "data.max_scale=1.5",
            # detectron2's small-std ROI predictors learn too slowly for the learning test's 304 steps
            "model.head_init=torchvision"]


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory):
    """<root>/{train2017,val2017}/*.png + annotations/instances_{train2017,val2017}.json, 64 px shapes."""
    from det.synthetic import make_split
    root = tmp_path_factory.mktemp("synthetic_coco")
    # colour-coded classes: the learning test's tiny detector learns them from scratch in 304 steps
    make_split(root, "train2017", 160, 64, seed=0, empty_every=20, colour_coded=True)
    make_split(root, "val2017", 40, 64, seed=1, colour_coded=True)
    return root


@pytest.fixture(scope="session")
def tiny_det_args():
    """Dotted overrides of det.train.DetConfig for the tiny ViTDet."""
    return list(TINY_DET)
