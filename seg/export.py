"""Export to mmsegmentation's key names, for users who keep an mmseg 0.x/1.x environment.

* A pretraining checkpoint -> the encoder in mmseg's MAE/BEiT backbone names (what mmseg's
  ``tools/model_converters/beit2mmseg.py`` makes from an MAE release), a bare state dict to
  give as ``model.pretrained`` / ``init_cfg.checkpoint`` of mmseg's ``MAE`` backbone.
* A trained UperNet checkpoint (``seg.train``) -> ``{"state_dict": ..., "meta": ...}`` with
  ``backbone.*`` renamed the same way; ``neck``, ``decode_head`` and ``auxiliary_head`` already
  carry mmseg's names. It loads into mmseg's ``EncoderDecoder`` with the ``MAE`` backbone
  (``with_cls_token=True``, as in configs/seg/*.yaml) for ``tools/test.py``. The relative position
  index buffers are not stored (they derive from the grid; mmseg rebuilds them and reports them
  as missing keys when loading non-strictly, its default).

Renaming (timm -> mmseg): ``blocks.i`` -> ``layers.i``; ``norm1``/``norm2`` -> ``ln1``/``ln2``;
``mlp.fc1`` -> ``ffn.layers.0.0``; ``mlp.fc2`` -> ``ffn.layers.1``; ``patch_embed.proj`` ->
``patch_embed.projection``. ``attn.qkv``, ``attn.proj``, ``attn.relative_position_bias_table``,
``gamma_1``/``gamma_2``, ``cls_token``, ``pos_embed`` and the encoder's final ``norm`` keep their names.

    python -m seg.export CHECKPOINT OUT.pth

An existing output file is replaced only with ``--overwrite``.
"""
from __future__ import annotations

import argparse
import re
import sys

import torch

from crossmae.cli import report_errors
from crossmae.engine.checkpoint import CheckpointError, encoder_state, load_checkpoint, model_state
from crossmae.export import refuse_hiera
from crossmae.files import atomic_write
from crossmae.userfiles import check_output_file

_BLOCK_RULES = ((re.compile(r"\.norm(\d)\."), r".ln\1."), (re.compile(r"\.mlp\.fc1\."), ".ffn.layers.0.0."),
                (re.compile(r"\.mlp\.fc2\."), ".ffn.layers.1."))


def to_mmseg_backbone_key(key: str) -> str:
    if key.startswith("blocks."):
        key = "layers." + key[len("blocks."):]
        for pattern, repl in _BLOCK_RULES:
            key = pattern.sub(repl, key)
        return key
    if key.startswith("patch_embed.proj."):
        return "patch_embed.projection." + key[len("patch_embed.proj."):]
    return key


def to_mmseg_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {to_mmseg_backbone_key(k): v for k, v in state.items()}


def to_mmseg_segmentor(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """UperNet state dict -> mmseg ``EncoderDecoder`` names (only the backbone part changes)."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        if k.startswith("backbone."):
            k = "backbone." + to_mmseg_backbone_key(k[len("backbone."):])
        out[k] = v
    tables = [k for k in out if k.endswith("relative_position_bias_table")]
    if tables and "backbone.cls_token" not in out:
        raise CheckpointError("the backbone has no cls token, but mmseg's MAE backbone always uses one (its bias "
                              "table has 3 extra cls rows): train with model.backbone.use_cls_token=true to export")
    return out


def export(src: str, dst: str, overwrite: bool = False) -> str:
    """Write the mmseg-named weights of ``src`` to ``dst`` (an existing file only if ``overwrite``);
    returns what was exported."""
    check_output_file(dst, overwrite)
    ckpt = load_checkpoint(src)
    state = model_state(ckpt, src)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    refuse_hiera(ckpt, state, src, "mmseg")
    if any(k.startswith("backbone.") for k in state) and any(k.startswith("decode_head.") for k in state):
        out = {"state_dict": to_mmseg_segmentor(state),
               "meta": {"source": str(src), "exported_by": "crossmae seg.export", "CLASSES": None}}
        kind = "UperNet (EncoderDecoder)"
    else:
        out = to_mmseg_backbone(encoder_state(state))
        kind = "pretrained encoder (MAE backbone)"
    # a plain torch.save dict: mmseg's loaders read it without this toolkit
    atomic_write(dst, lambda f: torch.save(out, f))
    return kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seg.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="pretraining checkpoint or trained UperNet checkpoint")
    parser.add_argument("dst", help="output .pth in mmseg's key names")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)

    def run():
        print(f"wrote {export(args.src, args.dst, args.overwrite)} weights in mmseg key names to {args.dst}")
    return report_errors("seg.export", run)


if __name__ == "__main__":
    sys.exit(main())
