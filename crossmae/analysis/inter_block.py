"""The learned inter-block attention weights of a CrossMAE decoder (the paper's Figure 6)."""
from __future__ import annotations

import torch


def inter_block_weights(model) -> tuple[torch.Tensor, list[str]]:
    """W [decoder_depth, num_feature_maps] (decoder block j reads sum_i W[j, i] F_i) and the names of
    the feature maps F_i: "input" (the encoder's input tokens, when ``use_input``), "block 1", ..."""
    wfm = getattr(model, "wfm", None)
    if wfm is None:
        raise ValueError(f"{type(model).__name__} has no inter-block attention weights (wfm): only CrossMAE "
                         f"with inter_block=True learns them")
    weight = wfm.linear.weight.detach().float().cpu()
    n_blocks = weight.shape[1] - int(model.use_input)
    names = (["input"] if model.use_input else []) + [f"block {i + 1}" for i in range(n_blocks)]
    return weight, names
