"""Issue 20, section 4: the tools that write tables and figures into a place the user names never replace
the user's files. A non-empty output directory (collect, analyze_attention, reconstruct) or an existing
output file (plot_inter_block) is refused in one line, before any work, unless ``--overwrite``; with it only
the tool's own files are replaced (collect names them) and everything else is kept. paper_row refuses a
non-empty --output-dir it did not make; a rerun into its own tree goes on."""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
from PIL import Image
from tools_fixtures import TINY, tiny_crossmae

from crossmae.engine import save_checkpoint


def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err
    return err[0]


def _user_dir(path, files=("notes.txt",)) -> dict[str, bytes]:
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (path / name).write_text(f"the user's {name}\n")
    return {p.name: p.read_bytes() for p in path.iterdir()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny CrossMAE checkpoint and an ImageFolder of 2 classes x 3 random 32 px images."""
    root = tmp_path_factory.mktemp("overwrite_inputs")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / "images" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / cls / f"{i}.png")
    model = tiny_crossmae()
    ckpt = root / "run" / "checkpoint.pth"
    save_checkpoint({"model": model.state_dict(), "epoch": 1,
                     "config": {"model": {"name": "crossmae_vit_small_patch16", **TINY, "decoder_depth": 2}}}, ckpt)
    return root / "images", ckpt


def _pretrain_results(runs):
    run = runs / "run"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(
        {"task": "pretrain", "model": "crossmae_vit_small_patch16", "epochs": 2, "mask_ratio": 0.75,
         "pred_ratio": 0.75, "decoder_depth": 2, "decoder": "crossmae", "checkpoint": str(run / "checkpoint.pth"),
         "metrics": {"fixed_mask_loss": 0.4}}))


def test_collect_refuses_a_non_empty_output_dir(tmp_path, capsys):
    _pretrain_results(tmp_path / "runs")
    out = tmp_path / "tables"
    before = _user_dir(out, ("notes.txt", "results.md"))
    from tools.collect import main as collect
    assert collect([str(tmp_path / "runs"), "--output-dir", str(out), "--no-curves"]) == 2
    line = _one_error_line(capsys, "collect")
    assert str(out) in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    assert collect([str(tmp_path / "runs"), "--output-dir", str(out), "--no-curves", "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "results.md" in printed and "replac" in printed
    assert (out / "notes.txt").read_bytes() == before["notes.txt"]
    assert (out / "results.md").read_bytes() != before["results.md"] and (out / "results.csv").is_file()


def test_figure_tools_refuse_a_non_empty_output_dir(inputs, tmp_path, capsys):
    data, ckpt = inputs
    common = ["--checkpoint", str(ckpt), "--data", str(data), "--num-workers", "0", "--max-images", "4",
              "--batch-size", "4", "--num-vis", "2"]
    for tool, written in (("reconstruct", "psnr.json"), ("analyze_attention", "attention.json")):
        out = tmp_path / tool
        before = _user_dir(out, ("notes.txt", written))
        assert importlib.import_module(f"tools.{tool}").main([*common, "--output-dir", str(out)]) == 2
        line = _one_error_line(capsys, tool)
        assert str(out) in line and "--overwrite" in line
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert importlib.import_module(f"tools.{tool}").main([*common, "--output-dir", str(out), "--overwrite"]) == 0
        capsys.readouterr()  # its progress bars
        assert (out / "notes.txt").read_bytes() == before["notes.txt"]
        assert (out / written).read_bytes() != before[written] and len(list(out.glob("*.png"))) == 1


def test_plot_inter_block_refuses_existing_files(tmp_path, capsys):
    model = tiny_crossmae(inter_block=True)
    ckpt = tmp_path / "ckpt.pth"
    save_checkpoint({"model": model.state_dict(), "epoch": 1, "config": {"model": {
        "name": "crossmae_vit_small_patch16", **TINY, "decoder_depth": 2, "inter_block": True}}}, ckpt)
    from tools.plot_inter_block import main as plot
    for existing in ("w.png", "w.json"):  # the figure, or the weights written beside it
        (tmp_path / existing).write_text("the user's file\n")
        assert plot(["--checkpoint", str(ckpt), "--output", str(tmp_path / "w.png")]) == 2
        assert str(tmp_path / existing) in _one_error_line(capsys, "plot_inter_block")
        assert (tmp_path / existing).read_text() == "the user's file\n"
        (tmp_path / existing).unlink()
    (tmp_path / "w.json").write_text("the user's file\n")
    assert plot(["--checkpoint", str(ckpt), "--output", str(tmp_path / "w.png"), "--overwrite"]) == 0
    assert json.loads((tmp_path / "w.json").read_text())["feature_maps"][0] == "input"


def test_paper_row_refuses_a_directory_it_did_not_make(tmp_path, capsys):
    from tools import paper_row as pr
    out = tmp_path / "row"
    before = _user_dir(out, ("notes.txt", "toy_results.md"))
    assert pr.main(["--preset", "toy-smoke", "--output-dir", str(out)]) == 2
    line = _one_error_line(capsys, "paper_row.py")
    assert str(out) in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("tool", ["bench_data", "bench_dense", "bench_pretrain"])
def test_benchmarks_refuse_an_existing_output_file(tool, tmp_path, capsys):
    out = tmp_path / "bench.json"
    out.write_text("the user's results\n")
    assert importlib.import_module(f"tools.{tool}").main(["--output", str(out)]) == 2  # before any timing
    assert str(out) in _one_error_line(capsys, tool) and out.read_text() == "the user's results\n"
