"""Issue 20, section 5: a weights file whose tensors have the right names but integer or boolean content is
refused wherever weights are loaded (det / seg / classification initialisation, resume, the analysis tools,
the exports, ``crossmae.hub.load``), naming a few keys and the count; float64 still loads, converted to
float32 exactly as before; integer buffers that a model really has (BatchNorm's counter) still load."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from crossmae.cli import main as cli
from crossmae.engine.checkpoint import CheckpointError, load_checkpoint, load_model_state, model_state

from tiny import TINY_CROSSMAE, tiny_model

SEG_BACKBONE = dict(size="small", img_size=64, patch_size=4, embed_dim=64, depth=4, num_heads=4, use_cls_token=True)
# the tiny CrossMAE's encoder in a detector (tests/det/test_det_model.py)
DET_ENCODER = ["model.embed_dim=64", "model.depth=4", "model.num_heads=4", "model.patch_size=4",
               "model.pretrain_img_size=32", "model.window_size=4", "model.global_attn_indexes=[1,3]",
               "model.fpn_channels=32", "model.box_head_fc=64", "image_size=64"]
BAD = {"blocks.0.attn.qkv.weight": torch.int64, "pos_embed": torch.int64, "cls_token": torch.bool}


def _weights(corrupt: dict[str, torch.dtype], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tiny CrossMAE's state dict with the tensors of ``corrupt`` cast as integers / booleans (what the
    probe wrote: the right names, integer content)."""
    torch.manual_seed(0)
    state = {k: v.detach().clone().contiguous() for k, v in tiny_model().state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    for key, dt in corrupt.items():
        state[key] = (state[key] > 0) if dt is torch.bool else (state[key] * 100).round().to(dt)
    return state


def _safetensors(tmp_path, corrupt=BAD, dtype=None, name="weights.safetensors"):
    path = tmp_path / name
    save_file(_weights(corrupt, dtype), str(path))
    return path


def _check_message(e: pytest.ExceptionInfo, path, keys=BAD) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert f"{len(keys)} tensors" in msg
    for key in keys:
        assert key in msg
    return msg


def test_model_state_refuses_integer_encoder_weights_from_safetensors_and_pth(tmp_path):
    st = _safetensors(tmp_path)
    with pytest.raises(CheckpointError) as e:
        model_state(load_checkpoint(st), st)
    msg = _check_message(e, st)
    assert "int64" in msg and "bool" in msg
    pth = tmp_path / "weights.pth"
    torch.save({"model": _weights(BAD)}, pth)
    with pytest.raises(CheckpointError) as e:
        model_state(load_checkpoint(pth), pth)
    _check_message(e, pth)


def test_many_bad_keys_are_counted_and_a_few_named(tmp_path):
    keys = {k: torch.int32 for k in tiny_model().state_dict() if k.startswith("blocks.")}
    st = _safetensors(tmp_path, keys)
    with pytest.raises(CheckpointError) as e:
        model_state(load_checkpoint(st), st)
    msg = str(e.value)
    assert f"{len(keys)} tensors" in msg and len(keys) > 20
    assert sum(k + " " in msg or k + "," in msg or k + ")" in msg for k in keys) <= 5  # a few, not all


def test_det_and_seg_refuse_integer_weights(tmp_path):
    from crossmae.config import load_config
    from det.backbone import load_encoder
    from det.train import DetConfig, build_detector
    from seg.model import build_upernet, load_pretrained_encoder
    st = _safetensors(tmp_path)
    detector = build_detector(load_config(DetConfig, None, DET_ENCODER), num_classes=3)
    with pytest.raises(CheckpointError) as e:
        load_encoder(detector.backbone.net, st)
    _check_message(e, st)
    upernet = build_upernet(dict(SEG_BACKBONE), num_classes=3, channels=16, aux_channels=8)
    with pytest.raises(CheckpointError) as e:
        load_pretrained_encoder(upernet, str(st))
    _check_message(e, st)


def test_float64_still_loads_as_float32(tmp_path):
    from seg.model import build_upernet, load_pretrained_encoder
    st = _safetensors(tmp_path, corrupt={}, dtype=torch.float64)
    upernet = build_upernet(dict(SEG_BACKBONE), num_classes=3, channels=16, aux_channels=8)
    load_pretrained_encoder(upernet, str(st))
    ref = _weights({}, torch.float64)["blocks.1.mlp.fc1.weight"].to(torch.float32)  # round to nearest, as torch's copy_
    got = upernet.backbone.state_dict()["blocks.1.mlp.fc1.weight"]
    assert got.dtype == torch.float32 and torch.equal(got, ref)


def test_resume_and_strict_loads_compare_with_the_model(tmp_path):
    model = tiny_model()
    st = _safetensors(tmp_path, {"decoder_blocks.0.mlp.fc1.weight": torch.int64})  # outside the encoder
    with pytest.raises(CheckpointError) as e:
        load_model_state(model, load_checkpoint(st), st)
    _check_message(e, st, ["decoder_blocks.0.mlp.fc1.weight"])
    # a model's own integer buffer (BatchNorm's num_batches_tracked) is no weight: it loads
    bn = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    path = tmp_path / "bn.pth"
    torch.save({"model": bn.state_dict()}, path)
    load_model_state(bn, load_checkpoint(path), path)


def test_analysis_tools_and_export_refuse_integer_weights(tmp_path, capsys):
    from crossmae.analysis.loading import load_pretrained
    st = _safetensors(tmp_path, {"decoder_pos_embed": torch.int64, "mask_token": torch.bool})
    kwargs = {k: v for k, v in TINY_CROSSMAE.items() if k != "name"}
    with pytest.raises(CheckpointError) as e:
        load_pretrained(st, TINY_CROSSMAE["name"], kwargs)
    _check_message(e, st, ["decoder_pos_embed", "mask_token"])
    import json
    assert cli(["export", "--checkpoint", str(st), "--out", str(tmp_path / "out"), "--model", TINY_CROSSMAE["name"],
                "--model-kwargs", json.dumps(kwargs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "decoder_pos_embed" in err[0] and not (tmp_path / "out").exists()


def test_hub_load_refuses_integer_weights(tmp_path):
    from crossmae.hub import load
    torch.manual_seed(0)
    tiny_model().save_pretrained(tmp_path / "saved")
    weights = tmp_path / "saved" / "model.safetensors"
    save_file(_weights({"decoder_norm.weight": torch.int64}), str(weights))
    with pytest.raises(CheckpointError) as e:
        load(str(tmp_path / "saved"))
    _check_message(e, weights, ["decoder_norm.weight"])
