"""Fault paths of checkpoints and output files: unreadable files and checkpoints of another model are one
error saying what the file is and what was expected; a full disk or a read-only output dir is one line
naming the path (exit code 1), and the previous checkpoint / config survives."""
from __future__ import annotations

import builtins
import errno
import io
import os

import pytest
import torch
from omegaconf import OmegaConf

from crossmae.cli import report_errors
from crossmae.config import PretrainConfig, load_config, save_config
from crossmae.data import build_loader
from crossmae.engine import CheckpointError, DistInfo, Trainer, build_adamw, load_checkpoint, save_checkpoint
from crossmae.engine.checkpoint import load_model_state
from tiny import tiny_model

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _zip_checkpoint(tmp_path):
    path = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    return path.read_bytes()


BAD_FILES = {  # name -> bytes; "error: 117" (a bare KeyError) or a pickle error before
    "empty": lambda tmp: b"",
    "text": lambda tmp: b"model: crossmae_vit_base_patch16\nepochs: 800\n",
    "random": lambda tmp: bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                              dtype=torch.uint8).tolist()),
    "random_pickle_opcode": lambda tmp: b"\x80" + bytes(range(256)) * 4,
    "cut_zip": lambda tmp: _zip_checkpoint(tmp)[:900],
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_unreadable_checkpoint_says_what_it_is(kind, tmp_path):
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(BAD_FILES[kind](tmp_path))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and "expected a torch.save file" in msg and "\n" not in msg, msg
    assert {"empty": "is empty", "text": "is a text file"}.get(kind, "") in msg


def test_unreadable_safetensors(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable .safetensors file"):
        load_checkpoint(path)


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n=8, size=32):
        self.x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0


def make_trainer(out_dir, epochs=2, img_size=32, **kw):
    torch.manual_seed(0)
    model = tiny_model(img_size=img_size)
    loader = build_loader(RandomImages(size=img_size), 4, 0, 0, 1, seed=0)
    opt = build_adamw(model, 1e-3, 0.05, betas=(0.9, 0.95))
    return Trainer(model=model, optimizer=opt, train_loader=loader, lr_schedule=lambda step: 1e-3,
                   loss_fn=lambda m, b: m(b[0]).loss, epochs=epochs, output_dir=out_dir, dist=CPU,
                   tensorboard=False, config={"model": {"img_size": img_size}}, **kw)


def test_resume_from_another_image_size_is_one_message(tmp_path):
    first = make_trainer(tmp_path / "a", epochs=1)
    first.fit()
    other = make_trainer(tmp_path / "b", epochs=1, img_size=48)
    with pytest.raises(CheckpointError) as e:  # before: a RuntimeError of one line per mismatched tensor
        other.resume(tmp_path / "a" / "checkpoint.pth")
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 700, msg
    assert "checkpoint.pth does not fit this model" in msg
    assert "pos_embed (1, 65, 64) vs (1, 145, 64)" in msg  # cls + 8x8 patches in the file, cls + 12x12 in the model
    assert "The file was written for model img_size=32." in msg and "config it was trained with" in msg


def test_load_model_state_lists_missing_and_foreign_keys(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = {"0.weight": torch.zeros(3, 2), "0.bias": torch.zeros(3), "2.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"2 model tensors are not in the file, e.g. \['1.weight', '1.bias'\]; "
                                              r"1 file tensors are not in the model, e.g. \['2.weight'\]"):
        load_model_state(model, {"model": state}, "w.pth")
    good = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
    load_model_state(model, {"model": good}, "w.pth")
    assert all(bool((v == 1).all()) for v in model.state_dict().values())


# ------------------------------------------------------------------ full disk, read-only output dir
def test_full_disk_during_checkpoint_write_is_one_line_and_keeps_the_previous(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    trainer = make_trainer(out, epochs=2)
    real_save, calls = torch.save, []

    def save_then_disk_full(obj, f, *a, **k):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f, *a, **k)
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save_then_disk_full)
    assert report_errors("crossmae pretrain", trainer.fit) == 1
    err = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if "error" in ln]  # not tqdm's
    assert len(err) == 1 and err[0].startswith("crossmae pretrain: error: "), err
    err = err[0]
    assert str(out / "checkpoint.pth") in err and "No space left on device [ENOSPC]" in err and "resumes" in err
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(out / "checkpoint.pth")["epoch"] == 1  # epoch 1's checkpoint survives
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_read_only_output_dir_is_one_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    real_open = os.open

    def read_only(path, flags, *a, **k):  # a read-only mount (chmod would not stop root)
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    cfg = load_config(PretrainConfig)
    assert report_errors("crossmae pretrain", save_config, cfg, out / "config.yaml") == 1
    assert report_errors("crossmae pretrain", save_checkpoint, {"model": {}}, out / "checkpoint.pth") == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert all(f"error: {out}" in ln and "Read-only file system [EROFS]; " in ln and "writable output_dir" in ln
               for ln in lines), lines


def test_user_errors_still_exit_2(capsys):
    def missing():
        raise FileNotFoundError("data.path /nope does not exist")
    assert report_errors("x", missing) == 2
    assert capsys.readouterr().err == "x: error: data.path /nope does not exist\n"


def _save_epochs_config(path, epochs):
    save_config(load_config(PretrainConfig, None, [f"epochs={epochs}"]), path)


def _save_epochs_json(path, epochs):
    from crossmae.engine.logging import write_json
    write_json(path, {"epochs": epochs})


@pytest.mark.parametrize("save, name", [(_save_epochs_config, "config.yaml"), (_save_epochs_json, "results.json")])
def test_config_and_results_writes_are_atomic(tmp_path, monkeypatch, save, name):
    """A write cut by a full disk leaves the previous file whole (config.yaml was truncated before, and
    results.json left a .tmp beside it) and no temporary file."""
    path = tmp_path / name
    save(path, 5)
    before = path.read_text()
    real_open = io.open

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def opener(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return HalfWriter(f) if "w" in mode else f

    monkeypatch.setattr(io, "open", opener)
    monkeypatch.setattr(builtins, "open", opener)
    with pytest.raises(OSError) as e:
        save(path, 7)
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert path.read_text() == before and OmegaConf.load(path).epochs == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_directory_as_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory; expected a checkpoint file in it"):
        load_checkpoint(tmp_path)


def test_diverged_loss_is_one_line(tmp_path, capsys):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.loss_fn = lambda m, b: m(b[0]).loss * float("nan")
    assert report_errors("crossmae pretrain", trainer.fit) == 1
    err = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if "error" in ln]  # not tqdm's
    assert len(err) == 1 and err[0].startswith("crossmae pretrain: error: loss is nan at step 2; stopping. "
                                               "No checkpoint was written before it. Rerun with a lower lr"), err


def test_resume_with_other_optimizer_groups_is_one_message(tmp_path):
    make_trainer(tmp_path / "a", epochs=1).fit()
    other = make_trainer(tmp_path / "b", epochs=1)
    other.optimizer = torch.optim.SGD([p for p in other.module.parameters()], lr=0.1)  # one group, not AdamW's two
    with pytest.raises(CheckpointError, match="optimizer state does not fit this run's parameter groups"):
        other.resume(tmp_path / "a" / "checkpoint.pth")


@pytest.fixture
def narrow_checkpoint(tmp_path):
    path = tmp_path / "narrow.pth"
    save_checkpoint({"model": tiny_model(embed_dim=32, depth=2, num_heads=2).state_dict()}, path)
    return path


def test_det_pretrained_of_another_width_names_the_file(narrow_checkpoint):
    from det.backbone import build_net, load_encoder
    from det.train import DetConfig
    cfg = load_config(DetConfig, None, ["model.embed_dim=64", "model.depth=2", "model.num_heads=4",
                                        "model.patch_size=4", "model.pretrain_img_size=32", "model.window_size=0",
                                        "model.global_attn_indexes=[0,1]", "image_size=32"])
    with pytest.raises(CheckpointError, match=f"pretrained={narrow_checkpoint} does not fit the ViT of model"):
        load_encoder(build_net(cfg.model, cfg.image_size), narrow_checkpoint)


def test_seg_pretrained_of_another_width_names_the_file(narrow_checkpoint):
    from seg.config import SegConfig
    from seg.model import load_pretrained_encoder
    from seg.train import build_model
    from tiny import REPO
    cfg = load_config(SegConfig, REPO / "configs/seg/demo.yaml")
    with pytest.raises(CheckpointError, match=f"pretrained={narrow_checkpoint} does not fit the backbone"):
        load_pretrained_encoder(build_model(cfg), str(narrow_checkpoint))


def test_classifier_of_other_classes_is_one_message(tmp_path):
    from crossmae.classification.common import load_trained
    from crossmae.classification.model import build_classifier
    arch = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    path = tmp_path / "ft.pth"
    save_checkpoint({"model": build_classifier(10, **arch).state_dict(), "config": {"model": {"arch": "custom"}}},
                    path)
    with pytest.raises(CheckpointError) as e:  # before: torch's message pasted as a list of lines
        load_trained(build_classifier(5, **arch), str(path))
    msg = str(e.value)
    assert "head.weight (10, 32) vs (5, 32)" in msg and "data.nb_classes" in msg and "\n" not in msg, msg
