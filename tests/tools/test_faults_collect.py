"""tools/collect.py on runs killed mid-write: a config.yaml or results.json cut at any byte is skipped with a
warning and counted among the problems; the other runs still make the table."""
from __future__ import annotations

import json
import logging

from omegaconf import OmegaConf

from crossmae.analysis import collect as C
from crossmae.config import PretrainConfig, load_config
from tiny import TINY_CROSSMAE
from tools import collect as tool


def _pretrain_run(d, name="run"):
    run = d / name
    run.mkdir(parents=True)
    cfg = load_config(PretrainConfig, None, [f"model.{k}={v}" for k, v in TINY_CROSSMAE.items()] + ["epochs=2"])
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run / "results.json").write_text(json.dumps(
        {"task": "pretrain", "model": TINY_CROSSMAE["name"], "epochs": 2, "mask_ratio": 0.75, "pred_ratio": 0.75,
         "decoder_depth": 2, "decoder": "crossmae", "checkpoint": str(run / "checkpoint.pth"),
         "metrics": {"fixed_mask_loss": 0.4}}))
    return run


def test_config_cut_mid_write_skips_the_run(tmp_path, caplog):
    good = _pretrain_run(tmp_path, "good")
    text = (good / "config.yaml").read_text()
    cut_at = [text.index("img_size: 32") + len("img_size:"),  # crashed: int(None)
              text.index("img_size: 32") + len("img_size: 3"),  # a silently wrong resolution (3)
              text.index("data:")]
    for i, at in enumerate(cut_at):
        run = _pretrain_run(tmp_path, f"cut{i}")
        (run / "config.yaml").write_text(text[:at])
    with caplog.at_level(logging.WARNING, logger="crossmae"):
        _, rows, problems = C.collect([tmp_path])
    assert [r.label for r in rows] == ["good"] and rows[0].resolution == 32
    assert sorted(p.path for p in problems) == [str(tmp_path / f"cut{i}" / "config.yaml") for i in range(3)]
    assert all(p.kind == "corrupt" and "cut short" in p.message for p in problems)
    assert sum("skipping" in r.message for r in caplog.records) == 3
    assert any("3 unreadable, cut-short or invalid files skipped" in r.getMessage() for r in caplog.records)


def test_results_cut_mid_write_every_byte(tmp_path, capsys):
    run = _pretrain_run(tmp_path / "runs")
    text = (run / "results.json").read_text()
    for at in range(0, len(text), 9):
        (run / "results.json").write_text(text[:at])
        _, rows, problems = C.collect([tmp_path / "runs"])
        assert rows == [] and [p.kind for p in problems] == ["corrupt"], at
    (run / "config.yaml").write_text("model:\n  name: crossmae_vit_small_patch16\n  img_size:")
    (run / "results.json").write_text(text)
    assert tool.main([str(tmp_path / "runs"), "--output-dir", str(tmp_path / "out"), "--no-curves"]) == 0
    assert "0 pretrained checkpoints, 1 problems" in capsys.readouterr().out


def test_collect_cli_bad_references_is_one_line(tmp_path, capsys):
    _pretrain_run(tmp_path / "runs")
    bad = tmp_path / "refs.yaml"
    bad.write_text("results: [\n")
    for refs in (tmp_path / "missing.yaml", bad):
        assert tool.main([str(tmp_path / "runs"), "--output-dir", str(tmp_path / "out"), "--references", str(refs)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("collect: error: ") and str(refs) in err[0], err


DEEP_JSON = "[" * 100_000 + "]" * 100_000  # well-formed, nested far beyond Python's recursion limit
DEEP_YAML = "[" * 100_000 + "]" * 100_000  # a YAML flow sequence too


def test_deeply_nested_files_are_problems_and_the_table_is_still_written(tmp_path, capsys):
    """Issue 20 §5: a results.json, a config.yaml or a log line nested 100 000 deep is one problem line each
    (it was a RecursionError that aborted the whole collection); the other runs still make the tables."""
    runs = tmp_path / "runs"
    good = _pretrain_run(runs, "good")
    (good / "train_log.jsonl").write_text(json.dumps({"epoch": 0.5, "loss": 1.0}) + "\n" + DEEP_JSON + "\n"
                                          + json.dumps({"epoch": 1.0, "loss": 0.5}) + "\n")
    deep_results = _pretrain_run(runs, "deep_results")
    (deep_results / "results.json").write_text(DEEP_JSON)
    deep_value = _pretrain_run(runs, "deep_value")  # an object whose one field nests deeply
    text = (deep_value / "results.json").read_text()
    (deep_value / "results.json").write_text(text.replace('"epochs": 2', '"epochs": ' + "[" * 990 + "]" * 990))
    deep_config = _pretrain_run(runs, "deep_config")
    (deep_config / "config.yaml").write_text("epochs: 2\nmodel: " + DEEP_YAML + "\n")
    downstream = runs / "ft"
    downstream.mkdir()
    (downstream / "results.json").write_text(json.dumps(
        {"task": "finetune", "dataset": "x" + "[" * 5000, "checkpoint": str(good / "checkpoint.pth"),
         "metrics": {"top1": [[[[[[[[1.0]]]]]]]]}}))  # a readable file with a non-number metric: a problem too

    out = tmp_path / "tables"
    assert tool.main([str(runs), "--output-dir", str(out)]) == 0
    captured = capsys.readouterr()
    assert "1 pretrained checkpoints, 4 problems" in captured.out
    assert (out / "results.csv").is_file() and (out / "curves.png").is_file()
    table = (out / "results.md").read_text()
    assert "| good " in table
    listed = [ln for ln in table.splitlines() if ln.startswith("- [")]  # "Not in the table": one line each
    expected = [deep_results / "results.json", deep_value / "results.json", deep_config / "config.yaml",
                downstream / "results.json"]
    assert len(listed) == 4 and all(sum(f"] {p}: " in ln for ln in listed) == 1 for p in expected), listed
    assert all(len(ln) < 300 for ln in listed)
    # the log's deep line is skipped and reported in one line; its other lines still make the curve
    log_lines = [ln for ln in (captured.out + captured.err).splitlines() if "train_log.jsonl" in ln]
    assert len(log_lines) == 1 and "1 unreadable line" in log_lines[0]
    series = C.curve_series(C.find_logs([runs])[good.resolve()])
    assert series["train loss"] == ([0.5, 1.0], [1.0, 0.5])


def test_deeply_nested_references_file_is_one_line(tmp_path, capsys):
    _pretrain_run(tmp_path / "runs")
    refs = tmp_path / "refs.yaml"
    refs.write_text("results: " + DEEP_YAML + "\n")
    assert tool.main([str(tmp_path / "runs"), "--output-dir", str(tmp_path / "out"),
                                      "--references", str(refs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(refs) in err[0] and "nested" in err[0], err
