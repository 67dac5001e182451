"""The ViTDet backbone net (crossmae.models.dense_vit) from a config section, and its pretrained encoder."""
from __future__ import annotations

import logging
from pathlib import Path

import torch.nn as nn

from crossmae.engine import CheckpointError, encoder_state, load_checkpoint, model_state
from crossmae.models.dense_vit import DenseViT

logger = logging.getLogger("crossmae")


def build_net(m, image_size: int) -> DenseViT:
    """A DenseViT with ViTDet's settings from the ``model`` config section (see det.train.DetModel)."""
    return DenseViT(img_size=image_size, pretrain_img_size=m.pretrain_img_size, patch_size=m.patch_size,
                    embed_dim=m.embed_dim, depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
                    drop_path_rate=m.drop_path_rate, window_size=m.window_size,
                    global_attn_indexes=tuple(m.global_attn_indexes), rel_pos=m.rel_pos, use_abs_pos=True,
                    out_indices=(-1,), use_act_checkpoint=m.use_act_checkpoint)


def load_encoder(net: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load the encoder of a pretraining checkpoint (ours, the official CrossMAE/MAE release, or a
    bare state dict) into the ViT: pos_embed resized, a patch projection of another size resampled
    (ViT-H p14 -> p16). Returns (missing, unexpected) keys; anything else wrong raises."""
    state = encoder_state(model_state(load_checkpoint(path), path))
    try:
        missing, unexpected = net.load_pretrained(state, resize_patch_embed=True)
    except CheckpointError as e:  # name the file and the config fields that decide the backbone's shapes
        raise CheckpointError(f"pretrained={path} does not fit the ViT of model.* (embed_dim / depth / num_heads / "
                              f"patch_size): {e}") from e
    logger.info("loaded the encoder of %s: %d tensors; new (randomly/zero initialised): %d %s; unused: %s",
                path, len(state) - len(unexpected), len(missing),
                sorted({k.split(".")[-1] for k in missing}), unexpected)
    return missing, unexpected
