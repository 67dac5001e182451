"""tools/paper_row.py: the row's commands (dry run); tools/runs.py: the idempotent rerun logic;
tools/toy_preset.py: the toy preset's plumbing."""
from __future__ import annotations

import json
from pathlib import Path
import sys

import pytest
import torch

from tools_fixtures import REPO

from tools import paper_row as pr
from tools import runs
from tools import toy_preset as toy


@pytest.fixture
def vit_b_checkpoint(tmp_path):
    """A stand-in for a ViT-B release file: only its patch projection (what the size is read from)."""
    path = tmp_path / "crossmae_vit_base.pth"
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}}, path)
    return path


@pytest.fixture
def roots_file(tmp_path):
    path = tmp_path / "roots.yaml"
    path.write_text("imagenet: /d/imagenet\ncoco: /d/coco\nade20k: /d/ade\ninat2019: /d/inat\nplaces365: /d/places\n")
    return path


def test_dry_run_lists_all_six_tasks_for_vit_b(vit_b_checkpoint, roots_file, tmp_path, capsys):
    out = tmp_path / "row"
    assert pr.main(["--checkpoint", str(vit_b_checkpoint), "--roots", str(roots_file), "--output-dir", str(out),
                    "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "ViT-base" in text
    ckpt = f"pretrained={vit_b_checkpoint.resolve()}"
    expected = {"finetune": ("crossmae.cli finetune", "configs/finetune/vit_base.yaml", "data.path=/d/imagenet"),
                "linprobe": ("crossmae.cli linprobe", "configs/linprobe/vit_base.yaml", "data.path=/d/imagenet"),
                "det": ("crossmae.cli det", "configs/det/vitdet_b_100ep.yaml", "data.root=/d/coco"),
                "seg": ("crossmae.cli seg", "configs/seg/upernet_vit_base_ade20k.yaml", "data.path=/d/ade"),
                "inat2019": ("crossmae.cli cls-transfer", "configs/cls_transfer/inat2019_vit_base.yaml",
                             "data.path=/d/inat"),
                "places365": ("crossmae.cli cls-transfer", "configs/cls_transfer/places365_vit_base.yaml",
                              "data.path=/d/places")}
    for name, parts in expected.items():
        header = next(line for line in text.splitlines() if line.startswith(f"[todo] {name}:"))
        assert "1 node(s) x 8 GPU(s)" in header
        cmd = text.splitlines()[text.splitlines().index(header) + 1]
        assert "tools/launch.sh" in cmd and ckpt in cmd and f"output_dir={out.resolve() / name}" in cmd, cmd
        for part in parts:
            assert part in cmd, (name, part, cmd)
        assert (REPO / parts[1]).is_file()
    assert not out.exists() or not any(out.iterdir())  # a dry run writes nothing


def test_dry_run_slurm_and_missing_sizes(vit_b_checkpoint, roots_file, tmp_path, capsys):
    assert pr.main(["--checkpoint", str(vit_b_checkpoint), "--roots", str(roots_file), "--output-dir",
                    str(tmp_path / "r"), "--dry-run", "--slurm", "--nodes", "2", "--size", "huge",
                    "--tasks", "det,seg"]) == 0
    text = capsys.readouterr().out
    assert "seg: no huge recipe" in text
    det = text.splitlines()[text.splitlines().index(next(ln for ln in text.splitlines() if ln.startswith("[todo] det")))
                            + 1]
    assert "submit_slurm.py --nodes 2 --gpus-per-node 8" in det and "-- det --config" in det
    assert "vitdet_h_75ep.yaml" in det


def test_bad_input_is_one_error_line(tmp_path, roots_file, vit_b_checkpoint, capsys):
    assert pr.main(["--checkpoint", str(tmp_path / "nope.pth"), "--roots", str(roots_file),
                    "--output-dir", str(tmp_path)]) == 2
    (tmp_path / "bad.yaml").write_text("imagenet: /x\ncocoo: /y\n")
    assert pr.main(["--checkpoint", str(vit_b_checkpoint), "--roots", str(tmp_path / "bad.yaml"),
                    "--output-dir", str(tmp_path), "--dry-run"]) == 2
    assert pr.main(["--checkpoint", str(vit_b_checkpoint), "--roots", str(roots_file),
                    "--output-dir", str(tmp_path), "--dry-run", "--tasks", "detection"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "cocoo" in err and "unknown tasks ['detection']" in err


def _task(tmp_path, name="det", metrics=("bbox_AP", "segm_AP")):
    return runs.Task(name, "det", "cfg.yaml", [], tmp_path / name, metrics)


def test_task_states_on_fake_output_dirs(tmp_path):
    t = _task(tmp_path)
    assert runs.task_state(t) == "todo"
    t.output_dir.mkdir()
    (t.output_dir / "checkpoint.pth").write_bytes(b"x")
    assert runs.task_state(t) == "partial"
    (t.output_dir / "results.json").write_text(json.dumps({"metrics": {"bbox_AP": 50.1}}))  # segm_AP missing
    assert runs.task_state(t) == "partial"
    (t.output_dir / "results.json").write_text(json.dumps({"metrics": {"bbox_AP": 50.1, "segm_AP": float("nan")}}))
    assert runs.task_state(t) == "partial"
    runs.write_status(t, 1, 3.0)
    assert runs.task_state(t) == "failed"
    (t.output_dir / "results.json").write_text(json.dumps({"metrics": {"bbox_AP": 50.1, "segm_AP": 44.0}}))
    assert runs.task_state(t) == "done"
    (t.output_dir / "results.json").write_text("{truncated")
    assert runs.task_state(t) == "failed"


def test_rerun_skips_done_retries_failed_and_reports_logs(tmp_path, monkeypatch):
    """Local mode runs only unfinished tasks; a failure is reported with its log path."""
    done, failing, fresh = (_task(tmp_path, n, ("top1",)) for n in ("done", "failing", "fresh"))
    done.output_dir.mkdir()
    (done.output_dir / "results.json").write_text(json.dumps({"metrics": {"top1": 80.0}}))
    ran = []

    def fake_local(task):  # stands in for tools/launch.sh: "fresh" succeeds, "failing" exits 1
        ran.append(task.name)
        body = ("import json, pathlib; p = pathlib.Path(r'%s'); p.mkdir(parents=True, exist_ok=True); "
                "(p / 'results.json').write_text(json.dumps({'metrics': {'top1': 1.0}}))" % task.output_dir)
        return [sys.executable, "-c", body if task.name == "fresh" else "import sys; print('boom'); sys.exit(1)"]
    monkeypatch.setattr(runs, "local_command", fake_local)
    lines = []
    states = runs.run_tasks([done, failing, fresh], "local", say=lines.append)
    assert ran == ["failing", "fresh"]
    assert [t.name for t in states["done"]] == ["done", "fresh"] and [t.name for t in states["failed"]] == ["failing"]
    assert f"FAILED: failing: see {failing.log}" in lines and "boom" in failing.log.read_text()
    ran.clear()
    states = runs.run_tasks([done, failing, fresh], "local", say=lines.append)
    assert ran == ["failing"]  # finished ones skipped, the failed one retried
    ran.clear()
    fresh2 = _task(tmp_path, "fresh", ("top1",))
    fresh2.output_dir = tmp_path / "fresh2"
    states = runs.run_tasks([failing, fresh2], "local", say=lines.append, jobs=2)  # side by side: same bookkeeping
    assert sorted(ran) == ["failing", "fresh"]
    assert [t.output_dir.name for t in states["done"]] == ["fresh2"] and states["failed"] == [failing]


def test_toy_tasks_identical_recipe_for_every_init(tmp_path):
    pretrain, downstream = toy.toy_tasks(tmp_path, "toy")
    assert [t.group["init"] for t in pretrain] == ["CrossMAE γ=0.25", "CrossMAE γ=0.75", "MAE",
                                                   "CrossMAE-Hiera γ=0.25", "MAE-Hiera"]
    assert len(downstream) == 7 * (4 + 1) * 3  # 7 inits x (4 trained runs + kNN) x 3 seeds
    hiera = {"CrossMAE-Hiera γ=0.25", "MAE-Hiera", "random init Hiera"}

    def recipe(t):
        return [o for o in t.overrides if not o.startswith(("pretrained=", "random_init=", "checkpoint="))]
    for run in [*toy.TOY_TASKS, "knn"]:
        for family in (hiera, set(toy.TOY_INITS) - hiera):  # one recipe per backbone family
            runs = [t for t in downstream if t.group["run"] == run and t.group["seed"] == 0 and t.group["init"] in family]
            assert len(runs) == len(family) and len({t.config for t in runs}) == 1
            assert all(recipe(t) == recipe(runs[0]) for t in runs)
    dense = {t.config for t in downstream if t.group["run"] in ("det", "seg") and t.group["init"] in hiera}
    assert {Path(c).name for c in dense} == {"toy_det_hiera.yaml", "toy_seg_hiera.yaml"}
    assert [t.group["init"] for t in downstream[:7]] == ["random init", "random init Hiera", "CrossMAE γ=0.25",
                                                         "CrossMAE γ=0.75", "MAE", "CrossMAE-Hiera γ=0.25", "MAE-Hiera"]
    for label, borrowed in (("random init", "crossmae_g025"), ("random init Hiera", "crossmae_hiera_g025")):
        knn = next(t for t in downstream if t.group["run"] == "knn" and t.group["init"] == label)
        probe = next(t for t in downstream if t.group["run"] == "linprobe" and t.group["init"] == label)
        assert "random_init=True" in knn.overrides and "random_init=true" in probe.overrides
        # a random-init row borrows the architecture of its own family
        assert f"checkpoint={tmp_path / 'pretrain' / borrowed / 'checkpoint.pth'}" in knn.overrides
        assert f"pretrained={tmp_path / 'pretrain' / borrowed / 'checkpoint.pth'}" in probe.overrides
    vit_pre, vit_down = toy.toy_tasks(tmp_path, "toy", ("vit",))
    assert [t.group["init"] for t in vit_pre] == ["CrossMAE γ=0.25", "CrossMAE γ=0.75", "MAE"]
    assert len(vit_down) == 4 * 5 * 3 and not {t.group["init"] for t in vit_down} & hiera
    with pytest.raises(ValueError, match="vit,hiera"):
        toy.toy_tasks(tmp_path, "toy", ("vit", "convnext"))


def _fake_results(task, metrics: dict, evals: list[tuple[int, dict]] = ()):
    task.output_dir.mkdir(parents=True, exist_ok=True)
    (task.output_dir / "results.json").write_text(json.dumps({"metrics": metrics}))
    (task.output_dir / "epoch_log.jsonl").write_text("".join(json.dumps({"epoch": e, "eval": m}) + "\n"
                                                             for e, m in evals))


def test_toy_table_has_mask_ap_and_knn_columns_and_curves(tmp_path):
    """Fake finished runs: each column's cell is the mean ± sample std of its seeds' values, the det run
    fills both box and mask AP, and the curves average the seeds' evaluations per epoch."""
    pretrain, downstream = toy.toy_tasks(tmp_path, "toy", ("vit",))
    values = {"linprobe": {"top1": 50.0}, "finetune": {"top1": 60.0}, "seg": {"mIoU": 40.0}, "knn": {"knn_top1": 30.0}}
    for t in downstream:
        if t.group["init"] == "random init" and t.group["seed"] == 2:
            continue  # an unfinished seed: shown as such
        if t.group["run"] == "det":
            box = 10.0 + 2 * t.group["seed"]  # 10, 12, 14: mean 12, sample std 2
            _fake_results(t, {"bbox_AP": box, "segm_AP": box / 2},
                          [(5, {"bbox_AP": 1.0 + t.group["seed"]}), (10, {"bbox_AP": box})])
        else:
            _fake_results(t, values[t.group["run"]])
    header, _, *rows = toy.toy_table(pretrain, downstream).splitlines()
    assert "det mask AP" in header and "kNN top-1" in header and "det box AP" in header
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in rows}
    names = [c.strip() for c in header.split("|")[2:-1]]
    mae = dict(zip(names, cells["MAE"]))
    assert mae["det box AP"] == "12.0 ± 2.0" and mae["det mask AP"] == "6.0 ± 1.0"
    assert mae["linear probe top-1"] == "50.0 ± 0.0" and mae["kNN top-1"] == "30.0 ± 0.0"
    assert float(mae["decoder GFLOPs / image (train)"]) > 0
    rand = dict(zip(names, cells["random init"]))
    assert rand["det box AP"] == "11.0 ± 1.4 (2/3 seeds)" and rand["decoder GFLOPs / image (train)"] == "–"
    curves = toy.toy_curves(downstream)
    assert curves["det box AP"]["MAE"] == [(5, 2.0), (10, 12.0)]
    assert curves["det box AP"]["random init"] == [(5, 1.5), (10, 11.0)]
    toy.plot_toy_curves(curves, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_step_time_cells_median_and_paired_ratio_range():
    """Per round, every row's step is divided by the reference's of the same round (hand values)."""
    cells = toy.step_time_cells({"MAE": [1.0, 2.0, 1.0], "CrossMAE": [0.5, 1.0, 0.8]})
    assert cells == {"MAE": "1000 ms", "CrossMAE": "800 ms (0.50x MAE, 0.50-0.80)"}


def test_toy_step_times_rank_the_decoders_by_their_work(tmp_path):
    """Interleaved CPU times of the toy pretraining steps: one number per round and row; at γ=0.25 CrossMAE
    decodes a third of γ=0.75's queries, so its step is cheaper in the median (measured 0.72x: 186 vs 258 ms)."""
    pretrain, _ = toy.toy_tasks(tmp_path, "toy", ("vit",))
    times = toy.toy_step_times(pretrain[:2], repeats=3)
    assert list(times) == ["CrossMAE γ=0.25", "CrossMAE γ=0.75"] and all(len(t) == 3 for t in times.values())
    assert sorted(times["CrossMAE γ=0.25"])[1] < sorted(times["CrossMAE γ=0.75"])[1]


@pytest.mark.slow
def test_toy_smoke_end_to_end(tmp_path):
    """The toy-smoke preset: 3 pretrainings, 4 inits x (4 trained tasks + kNN) x 1 seed, the table, the colour
    baseline and the curves (615 s with two jobs on 2 cores under a load average of ~8)."""
    out = tmp_path / "toy"
    assert pr.main(["--preset", "toy-smoke", "--output-dir", str(out), "--threads", "1", "--jobs", "2"]) == 0
    table = (out / "toy_results.md").read_text()
    for row in toy.TOY_INITS:
        assert f"| {row} |" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert not any("seeds)" in line for line in rows)  # every cell has all its seeds
    assert "det mask AP" in rows[0] and "kNN top-1" in rows[0]
    assert "colour-histogram classifier" in table and (out / "toy_curves.png").is_file()
    flops = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in rows if "GFLOPs" not in line}
    assert float(flops["CrossMAE γ=0.25"]) < float(flops["CrossMAE γ=0.75"]) < float(flops["MAE"])
