"""Issue 20, section 4: the exports never overwrite a user's files. ``crossmae export`` refuses a non-empty
``--out`` unless ``--overwrite``, and then replaces only the files an export writes (named in its message);
``det.export`` / ``seg.export`` refuse an existing output file unless ``--overwrite``; every exported file gets
the umask's mode (0666 less the umask), as every other file the toolkit writes."""
from __future__ import annotations

import json
import os

import pytest
import torch

from crossmae.cli import main as cli
from crossmae.engine import save_checkpoint
from crossmae.models import CrossMAE, build_model

from tiny import TINY_CROSSMAE

EXPORT_FILES = {"config.json", "model.safetensors", "README.md", "timm.json"}


@pytest.fixture()
def checkpoint(tmp_path):
    kwargs = dict(TINY_CROSSMAE)
    model = build_model(kwargs.pop("name"), **kwargs).eval()
    path = tmp_path / "run" / "checkpoint.pth"
    save_checkpoint({"model": model.state_dict(), "epoch": 1, "config": {"model": dict(TINY_CROSSMAE)}}, path)
    return path


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield 0o644  # what 0666 less this umask gives
    os.umask(old)


def _snapshot(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err
    return err[0]


@pytest.mark.parametrize("mode", [[], ["--encoder-only"], ["--timm"]])
def test_export_refuses_a_non_empty_directory(checkpoint, tmp_path, capsys, mode):
    out = tmp_path / "hub"
    out.mkdir()
    for name, text in (("README.md", "my notes\n"), ("config.json", '{"mine": 1}\n'), ("model.safetensors", "x")):
        (out / name).write_text(text)
    before = _snapshot(out)
    assert cli(["export", "--checkpoint", str(checkpoint), "--out", str(out), *mode]) == 2
    line = _one_error_line(capsys, "crossmae export")
    assert str(out) in line and "--overwrite" in line and "not empty" in line
    assert _snapshot(out) == before  # nothing replaced, nothing deleted


def test_overwrite_replaces_only_the_exports_own_files(checkpoint, tmp_path, capsys):
    out = tmp_path / "hub"
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    (out / "notes.txt").write_text("keep me\n")
    (out / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    assert cli(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "replac" in printed and "README.md" in printed  # the replaced file is named
    assert (out / "notes.txt").read_text() == "keep me\n"
    assert (out / ".gitattributes").read_text() == "*.safetensors filter=lfs\n"
    assert (out / "README.md").read_text() != "my notes\n"
    assert type(CrossMAE.from_pretrained(out)) is CrossMAE

    # a timm export over it: our config.json (the CrossMAE one) must go, the user's files stay
    assert cli(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--timm", "--overwrite"]) == 0
    assert "config.json" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"README.md", "model.safetensors", "timm.json", "notes.txt",
                                                ".gitattributes"}


def test_timm_overwrite_keeps_a_config_json_that_is_not_ours(checkpoint, tmp_path):
    out = tmp_path / "hub"
    out.mkdir()
    (out / "config.json").write_text('{"architectures": ["SomethingElse"]}\n')
    assert cli(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--timm", "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text()) == {"architectures": ["SomethingElse"]}
    assert (out / "timm.json").is_file()


def test_export_into_a_file_is_one_line(checkpoint, tmp_path, capsys):
    out = tmp_path / "hub"
    out.write_text("a file\n")
    assert cli(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--overwrite"]) == 2
    assert str(out) in _one_error_line(capsys, "crossmae export")
    assert out.read_text() == "a file\n"


@pytest.mark.parametrize("mode", [[], ["--timm"]])
def test_exported_files_get_the_umask_mode(checkpoint, tmp_path, umask_022, mode):
    out = tmp_path / "hub"
    assert cli(["export", "--checkpoint", str(checkpoint), "--out", str(out), *mode]) == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes and set(modes) <= EXPORT_FILES
    assert modes == {name: umask_022 for name in modes}


def test_save_pretrained_weights_get_the_umask_mode(tmp_path, umask_022):
    kwargs = dict(TINY_CROSSMAE)
    build_model(kwargs.pop("name"), **kwargs).save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").stat().st_mode & 0o777 == umask_022


# ------------------------------------------------------------------ det / seg exports: one output file
def _det_main():
    from det.export import main
    return main


def _seg_main():
    from seg.export import main
    return main


@pytest.mark.parametrize("prog,main", [("det.export", _det_main), ("seg.export", _seg_main)])
def test_file_exports_refuse_an_existing_file(checkpoint, tmp_path, capsys, umask_022, prog, main):
    dst = tmp_path / "weights.pth"
    dst.write_bytes(b"the user's file")
    assert main()([str(checkpoint), str(dst)]) == 2
    line = _one_error_line(capsys, prog)
    assert str(dst) in line and "--overwrite" in line
    assert dst.read_bytes() == b"the user's file"
    assert main()([str(checkpoint), str(dst), "--overwrite"]) == 0
    assert torch.load(dst, map_location="cpu", weights_only=True)  # replaced by the export
    assert dst.stat().st_mode & 0o777 == umask_022
    assert {p.name for p in tmp_path.iterdir()} >= {"weights.pth"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind
    # a directory as the output file: one line, nothing written into it
    (tmp_path / "d").mkdir()
    assert main()([str(checkpoint), str(tmp_path / "d"), "--overwrite"]) == 2
    assert str(tmp_path / "d") in _one_error_line(capsys, prog) and not any((tmp_path / "d").iterdir())
