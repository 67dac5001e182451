"""tools/collect.py on runs killed mid-write: a config.yaml or results.json cut at any byte is skipped with a
warning and counted among the problems; the other runs still make the table."""
from __future__ import annotations

import json
import logging

from omegaconf import OmegaConf
from tools_fixtures import load_tool

from crossmae.analysis import collect as C
from crossmae.config import PretrainConfig, load_config
from tiny import TINY_CROSSMAE


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
    tool = load_tool("collect")
    assert tool.main([str(tmp_path / "runs"), "--output-dir", str(tmp_path / "out"), "--no-curves"]) == 0
    assert "0 pretrained checkpoints, 1 problems" in capsys.readouterr().out


def test_collect_cli_bad_references_is_one_line(tmp_path, capsys):
    tool = load_tool("collect")
    _pretrain_run(tmp_path / "runs")
    bad = tmp_path / "refs.yaml"
    bad.write_text("results: [\n")
    for refs in (tmp_path / "missing.yaml", bad):
        assert tool.main([str(tmp_path / "runs"), "--output-dir", str(tmp_path / "out"), "--references", str(refs)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("collect: error: ") and str(refs) in err[0], err
