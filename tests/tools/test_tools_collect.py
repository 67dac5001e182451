"""tools/collect.py on fake run directories: joins, references, blanks, problems, curves."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from tools_fixtures import check_png

from crossmae.analysis import collect as C
from tools import collect


def write_run(d: Path, results: dict | str | None = None, config_model: dict | None = None, epochs: int = 0) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    if results is not None:
        (d / "results.json").write_text(results if isinstance(results, str) else json.dumps(results))
    if config_model is not None:
        (d / "config.yaml").write_text(yaml.safe_dump({"model": config_model, "epochs": epochs}))
    if epochs:
        with open(d / "train_log.jsonl", "w") as f:
            for step in range(1, 4 * epochs + 1):
                f.write(json.dumps({"step": step, "epoch": step / 4, "loss": 1.0 / step, "lr": 1e-4}) + "\n")
        with open(d / "epoch_log.jsonl", "w") as f:
            for e in range(1, epochs + 1):
                f.write(json.dumps({"epoch": e, "train_loss": 1.0 / e, "eval": {"fixed_mask_loss": 2.0 / e}}) + "\n")
    return d


def pretrain(d: Path, model: str, decoder: str, epochs: int, pred_ratio: float, dec_depth: int, **arch) -> dict:
    write_run(d, {"task": "pretrain", "model": model, "epochs": epochs, "mask_ratio": 0.75, "pred_ratio": pred_ratio,
                  "decoder_depth": dec_depth, "decoder": decoder, "checkpoint": str(d / "checkpoint.pth"),
                  "metrics": {"fixed_mask_loss": 0.4}}, {"name": model, **arch}, epochs=3)
    return {"checkpoint": str(d / "checkpoint.pth")}


def downstream(d: Path, task: str, dataset: str, checkpoint: str, metrics: dict) -> None:
    write_run(d, {"task": task, "dataset": dataset, "checkpoint": checkpoint, "metrics": metrics, "config": {}})


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "runs"
    cross = pretrain(root / "pre_cross_b", "crossmae_vit_base_patch16", "CrossMAE", 800, 0.25, 12)
    pretrain(root / "pre_mae_b", "mae_vit_base_patch16", "MAE", 800, 0.75, 8)  # no downstream results yet
    demo = pretrain(root / "pre_demo", "crossmae_vit_small_patch16", "CrossMAE", 20, 0.75, 2, embed_dim=128, depth=4)
    downstream(root / "ft_cross_b", "finetune", "imagenet", cross["checkpoint"], {"top1": 83.6, "top5": 96.5})
    downstream(root / "det_cross_b", "det", "coco", cross["checkpoint"], {"bbox_AP": 51.9, "segm_AP": 46.0})
    downstream(root / "inat_cross_b", "cls_transfer", "iNat2019", cross["checkpoint"], {"top1": 79.0})
    downstream(root / "ft_demo", "finetune", "demo", demo["checkpoint"], {"top1": 41.25})
    downstream(root / "ft_unknown", "finetune", "imagenet", "/elsewhere/official/crossmae_base.pth", {"top1": 83.7})
    write_run(root / "half_finished", None, epochs=2)  # logs, no results.json
    with open(root / "half_finished" / "train_log.jsonl", "a") as f:
        f.write('{"step": 9, "epo')  # a line cut off by a crash
    write_run(root / "corrupt", '{"task": "finetune", "metrics": {"top1": 8')
    write_run(root / "no_metrics", {"task": "seg", "dataset": "ade20k", "checkpoint": cross["checkpoint"]})
    return root


def test_rows_columns_and_references(runs):
    tables, rows, problems = C.collect([runs])
    by_label = {r.label: r for r in rows}
    cross = by_label["pre_cross_b"]
    assert (cross.method, cross.size, cross.epochs, cross.pred_ratio, cross.decoder_depth) == ("crossmae", "base", 800,
                                                                                              0.25, 12)
    assert cross.values == {"in1k_ft": 83.6, "coco_box": 51.9, "coco_mask": 46.0, "inat2019": 79.0}
    assert by_label["pre_demo"].size == "custom"  # a ViT-S name with other widths: no published number applies
    assert by_label["pre_demo"].values == {"finetune/demo top1": 41.25}
    assert by_label["pre_mae_b"].values == {}
    assert by_label["official/crossmae_base.pth"].values == {"in1k_ft": 83.7}
    kinds = {(Path(p.path).name if p.kind != "incomplete" else Path(p.path).name, p.kind) for p in problems}
    assert ("results.json", "corrupt") in kinds and ("half_finished", "incomplete") in kinds
    assert ("results.json", "invalid") in kinds and ("results.json", "unmatched") in kinds
    assert "last logged epoch 2" in next(str(p) for p in problems if p.kind == "incomplete")

    md = tables.markdown
    line = next(ln for ln in md.splitlines() if ln.startswith("| pre_cross_b"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # IN-1K: ours (paper 83.5, delta); linear probe: nothing published for gamma 0.25, nothing measured: blank
    assert cells[7] == "83.60 (83.5, +0.10)" and cells[8] == ""
    # COCO: the paper reports gamma 0.75 only; ADE20K: a published number, no result yet
    assert cells[9] == "51.90" and cells[11] == "(47.7)" and cells[12] == "79.00 (79.4, -0.40)"
    mae_line = next(ln for ln in md.splitlines() if ln.startswith("| pre_mae_b"))
    mae_cells = [c.strip() for c in mae_line.strip("|").split("|")]
    assert mae_cells[7] == "(83.3)" and mae_cells[9] == "(51.2)" and mae_cells[11] == "(47.7)"  # refs, no results
    assert "0.00" not in mae_line  # missing results are blank, never zero
    demo_line = next(ln for ln in md.splitlines() if ln.startswith("| pre_demo"))
    demo_cells = [c.strip() for c in demo_line.strip("|").split("|")]
    assert demo_cells[-1] == "41.25" and not any("(" in c for c in demo_cells[7:])  # custom size: no reference
    assert "## Not in the table" in md and "corrupt" in md

    rows_csv = list(csv.DictReader(io.StringIO(tables.csv)))
    row = next(r for r in rows_csv if r["checkpoint"] == "pre_cross_b")
    assert float(row["in1k_ft"]) == 83.6 and float(row["in1k_ft_ref"]) == 83.5
    assert float(row["in1k_ft_delta"]) == pytest.approx(0.1) and row["in1k_ft_ref_source"] == "CrossMAE Tab.1"
    assert row["linprobe"] == "" and row["coco_mask_ref"] == "" and float(row["coco_mask"]) == 46.0
    assert r"\begin{tabular}" in tables.latex and r"pre\_cross\_b" in tables.latex


def test_duplicate_results_take_the_newest(runs):
    import os
    import time
    cross = str(runs / "pre_cross_b" / "checkpoint.pth")
    downstream(runs / "ft_cross_b_again", "finetune", "ImageNet-1k", cross, {"top1": 83.9})
    now = time.time()
    os.utime(runs / "ft_cross_b" / "results.json", (now - 100, now - 100))
    _, rows, problems = C.collect([runs])
    assert next(r for r in rows if r.label == "pre_cross_b").values["in1k_ft"] == 83.9
    assert any(p.kind == "duplicate" for p in problems)


def test_reference_matching_rules():
    refs = C.load_references()
    row = C.Row(checkpoint="x", label="x", method="crossmae", size="base", epochs=800, mask_ratio=0.75, pred_ratio=0.75,
                decoder_depth=12, resolution=224)
    assert [r["value"] for r in C.references_for(row, "in1k_ft", refs)] == [83.7, 83.722]
    row.epochs = 400
    assert [r["value"] for r in C.references_for(row, "in1k_ft", refs)] == [83.3]
    row.mask_ratio = 0.85
    assert C.references_for(row, "in1k_ft", refs) == []
    # every published number in the reference file is a float in a known column
    cols = {c.key for c in C.COLUMNS}
    assert all(r["column"] in cols and isinstance(r["value"], float) for r in refs["results"])
    assert len(refs["attention_mass"]["visible"]) == 8
    # the paper rounds: its per-block values sum to 1.419 and 0.387
    assert sum(refs["attention_mass"]["visible"]) == pytest.approx(refs["attention_mass"]["sum_visible"], abs=2e-3)


def test_collect_tool_writes_tables_and_curves(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert collect.main([str(runs), "--output-dir", str(out)]) == 0
    for name in ("results.md", "results.csv", "results.tex"):
        assert (out / name).stat().st_size > 200
    check_png(out / "curves.png")
    printed = capsys.readouterr().out
    assert "pre_cross_b" in printed and "problems" in printed
    logs = C.find_logs([runs])
    half = C.curve_series(logs[(runs / "half_finished").resolve()])
    assert len(half["train loss"][0]) == 8 and half["eval fixed_mask_loss"][1] == [2.0, 1.0]  # cut line skipped
