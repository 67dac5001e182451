"""seg.export refuses a Hiera checkpoint (mmseg's MAE backbone is a ViT): a pretraining one, told by its config,
and a trained UperNet on Hiera without a config, told by its widening blocks (``backbone.blocks.{i}.proj``)."""
import pytest

from crossmae.engine import load_checkpoint, model_state, save_checkpoint
from seg.export import main

from tiny import save_tiny_hiera_checkpoint


@pytest.mark.parametrize("kind", ["pretraining", "upernet"])
def test_hiera_checkpoint_is_refused_in_one_line(tmp_path, capsys, kind):
    src = save_tiny_hiera_checkpoint(tmp_path / "hiera.pth")
    if kind == "upernet":
        state = {f"backbone.{k}": v for k, v in model_state(load_checkpoint(src)).items()
                 if k.startswith(("patch_embed.", "pos_embed", "blocks."))}
        state["decode_head.conv_seg.weight"] = state["backbone.pos_embed"].new_zeros(4, 8, 1, 1)
        save_checkpoint({"model": state}, src)
    assert main([str(src), str(tmp_path / "mmseg.pth")]) == 2
    assert capsys.readouterr().err == (f"seg.export: error: {src} is a Hiera checkpoint: only ViT checkpoints export "
                                       f"to mmseg (`crossmae export --timm` writes timm's Hiera)\n")
    assert not (tmp_path / "mmseg.pth").exists()
