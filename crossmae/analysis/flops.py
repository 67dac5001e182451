"""FLOPs and parameter counts of the encoder and decoder, with ``torch.utils.flop_counter``.

Convention: ``FlopCounterMode`` counts 2 FLOPs per multiply-add (a [M, K] x [K, N] matmul is 2MKN) and
counts scaled_dot_product_attention (QK^T and AV: 4 N_q N_k d per head) as well as linears; element-wise
ops, softmax, LayerNorm and GELU are not counted (as in fvcore and most papers). Divide by 2 for
multiply-adds (GMACs). The paper's ViT-B numbers (MAE 8-block decoder 10.1 G, CrossMAE gamma=0.25,
12 blocks 4.1 G) are in the 2-FLOPs-per-multiply-add convention: see docs/tools.md for the comparison.

Counting runs on the "meta" device by default: shapes only, no memory, no arithmetic, so ViT-H
costs nothing. ``attention`` below is the SDPA part (QK^T, AV); ``linear`` everything else.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ..engine.checkpoint import encoder_state
from ..models import build_model
from ..models.hiera import MaskedHieraPretrainer


def _is_attention(op) -> bool:
    name = str(op)
    # SDPA is one op on CPU/CUDA; on the meta device it decomposes into batched matmuls (bmm), which
    # in these models only attention produces (linears become mm / addmm)
    return "scaled_dot_product" in name or "flash_attention" in name or "efficient_attention" in name \
        or name.startswith("aten.bmm")


def _sdpa_forward_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """QK^T and AV of fused attention on [B, H, N, D] tensors (2 FLOPs per multiply-add)."""
    b, h, n_q, d_qk = q_shape
    n_k, d_v = k_shape[-2], v_shape[-1]
    return 2 * b * h * n_q * n_k * (d_qk + d_v)


def _sdpa_backward_flops(grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """Backward of fused attention: the scores are recomputed (QK^T), then dScores = dO V^T, dV = P^T dO,
    dQ = dScores K, dK = dScores^T Q."""
    b, h, n_q, d_qk = q_shape
    n_k, d_v = k_shape[-2], v_shape[-1]
    return 2 * b * h * n_q * n_k * (3 * d_qk + 2 * d_v)


def _fused_attention_formulas() -> dict:
    """Formulas for the fused SDPA kernels that some torch releases leave uncounted (torch 2.14's flop
    counter has none for the CPU kernel, so attention on CPU counted 0). Given for every release we
    support, so the count does not depend on which torch the resolver picked; CUDA kernels keep
    torch's own formulas, which count the same."""
    names = {"_scaled_dot_product_flash_attention_for_cpu": _sdpa_forward_flops,
             "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_backward_flops}
    aten = torch.ops.aten
    return {getattr(aten, name): formula for name, formula in names.items() if hasattr(aten, name)}


def count_flops(fn, *args, **kwargs) -> dict[str, int]:
    """Run ``fn(*args, **kwargs)`` under the counter: {"total", "attention", "linear"} FLOPs."""
    with FlopCounterMode(display=False, custom_mapping=_fused_attention_formulas()) as counter:
        fn(*args, **kwargs)
    by_op = counter.get_flop_counts().get("Global", {})
    attention = sum(v for op, v in by_op.items() if _is_attention(op))
    total = counter.get_total_flops()
    return {"total": int(total), "attention": int(attention), "linear": int(total - attention)}


def param_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters of the encoder (timm's ViT part) and of the rest (decoder, inter-block weights)."""
    params = dict(model.named_parameters())
    enc = encoder_state(params)
    n_enc = sum(p.numel() for p in enc.values() if p.requires_grad)
    n_all = sum(p.numel() for p in params.values() if p.requires_grad)
    return {"encoder": n_enc, "decoder": n_all - n_enc, "total": n_all}


def build_on(device: str | torch.device, name: str, **kwargs) -> nn.Module:
    """Build a model directly on ``device`` ("meta": no storage, for counting)."""
    with torch.device(device):
        return build_model(name, **kwargs)


def encode_visible(model: nn.Module, imgs: torch.Tensor, masks) -> None:
    """The encoder part of a pretraining forward: the ViT on the visible patches, Hiera (patch convolution
    and blocks) on the visible mask units."""
    if isinstance(model, MaskedHieraPretrainer):
        model.forward_blocks(imgs, model.visible_units(masks))
    else:
        model.forward_features(imgs, masks.ids_keep)


def model_flops(model: nn.Module, batch_size: int = 1, device: str | torch.device | None = None,
                train: bool = False) -> dict[str, dict[str, float]]:
    """FLOPs PER IMAGE of a masked-autoencoder forward at its own mask / prediction ratios:
    {"encoder": {...}, "decoder": {...}, "total": {...}}, each {"total", "attention", "linear"}.

    Encoder = patch embedding + ViT blocks on the visible tokens (+ final norm), or Hiera's patch
    convolution + blocks on the visible mask units. Decoder = everything after: MAE's decoder_embed, mask
    tokens, blocks and head; CrossMAE's inter-block mixing, per-block key/value projections of the encoder
    features, blocks and head; on Hiera also the per-stage convolutions to the last stage's grid
    (MAE-Hiera's fusion heads, CrossMAE-Hiera's mix of stages) and the final norms. With ``train``, "train_step" adds the
    forward + backward count (backward as the counter's registered formulas, about 2x forward)."""
    device = device or next(model.parameters()).device
    size = model.patch_embed.img_size
    imgs = torch.zeros(batch_size, model.in_chans, *size, device=device)
    masks = model.sample_masks(imgs)
    enc = count_flops(encode_visible, model, imgs, masks)
    full = count_flops(model, imgs, masks)
    out = {"encoder": enc, "decoder": {k: full[k] - enc[k] for k in full}, "total": full}
    if train:
        def step():
            model(imgs, masks).loss.backward()
        out["train_step"] = count_flops(step)
        model.zero_grad(set_to_none=True)
    return {part: {k: v / batch_size for k, v in d.items()} for part, d in out.items()}


def meta_model_flops(name: str, train: bool = True, **kwargs) -> tuple[dict, dict[str, int]]:
    """(per-image FLOPs, parameter counts) of a model built on the meta device."""
    model = build_on("meta", name, **kwargs)
    return model_flops(model, device="meta", train=train), param_counts(model)


def flops_table(flops: dict[str, dict[str, float]]) -> dict[str, float]:
    """Flatten {"encoder": {"total": ..}} -> {"encoder_gflops": .., "encoder_attention_gflops": ..}."""
    out = defaultdict(float)
    for part, d in flops.items():
        out[f"{part}_gflops"] = d["total"] / 1e9
        out[f"{part}_attention_gflops"] = d["attention"] / 1e9
        out[f"{part}_linear_gflops"] = d["linear"] / 1e9
    return dict(out)
