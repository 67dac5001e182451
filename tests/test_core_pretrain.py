"""End to end through the console entry, as a user runs it."""
import json

import pytest
import torch

from crossmae.cli import main as cli
from crossmae.config import ConfigError, PretrainConfig, load_config
from crossmae.engine import load_checkpoint
from crossmae.pretrain import pretrain_lr, resolve_accum_iter

from tiny import REPO

DEMO = str(REPO / "configs/pretrain/demo.yaml")
FAST = ["model.embed_dim=32", "model.depth=2", "model.num_heads=4", "model.decoder_embed_dim=32", "model.decoder_depth=1",
        "data.num_workers=0", "num_vis=2"]


def test_demo_pretraining_leaves_checkpoint_logs_figure_and_loss_falls(pretrained_demo_run):
    out = pretrained_demo_run
    for name in ["checkpoint.pth", "config.yaml", "train_log.jsonl", "epoch_log.jsonl", "results.json",
                 "reconstruction.png", "log.txt"]:
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "pretrain" and results["decoder"] == "CrossMAE"
    before, after = results["metrics"]["fixed_mask_loss_before"], results["metrics"]["fixed_mask_loss"]
    # measured on the 8-epoch demo: 2.30 -> 0.76
    assert after < 0.6 * before, (before, after)
    epochs = [json.loads(line) for line in (out / "epoch_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(1, 9))
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert all(e["skipped_images"] == 0 for e in epochs)
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["epoch"] == 8 and ckpt["config"]["model"]["name"] == "crossmae_vit_small_patch16"
    assert (out / "reconstruction.png").stat().st_size > 10_000


def test_auto_resume_continues_from_the_output_dir(tmp_path, caplog):
    args = ["pretrain", "--config", DEMO, f"output_dir={tmp_path}", *FAST]
    assert cli(args + ["epochs=1"]) == 0
    assert cli(args + ["epochs=2"]) == 0
    assert "resumed from" in (tmp_path / "log.txt").read_text()
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "epoch_log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert load_checkpoint(tmp_path / "checkpoint.pth")["epoch"] == 2


def test_eval_only_evaluates_a_checkpoint_without_training(tmp_path, capsys):
    args = ["pretrain", "--config", DEMO, *FAST, "knn.every=0"]
    run = tmp_path / "run"
    assert cli(args + [f"output_dir={run}", "epochs=1"]) == 0
    saved = (run / "checkpoint.pth").read_bytes()
    logged = json.loads((run / "epoch_log.jsonl").read_text())["eval"]["fixed_mask_loss"]  # epoch 1's evaluation
    # epochs=2: a training run would train a second epoch from this checkpoint
    evaluated = [(run, []), (tmp_path / "other", [f"resume={run / 'checkpoint.pth'}"])]  # its own, or resume=
    for out, resume in evaluated:
        assert cli(args + [f"output_dir={out}", "epochs=2", "eval_only=true", *resume]) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["metrics"]["fixed_mask_loss"] == pytest.approx(logged, rel=1e-6)
        assert results["epochs"] == 1 and results["checkpoint"] == str((run / "checkpoint.pth").resolve())
    assert (run / "checkpoint.pth").read_bytes() == saved
    assert len((run / "epoch_log.jsonl").read_text().splitlines()) == 1
    assert not any((tmp_path / "other" / name).exists() for name in ("checkpoint.pth", "config.yaml",
                                                                     "epoch_log.jsonl"))
    capsys.readouterr()
    assert cli(args + [f"output_dir={tmp_path / 'empty'}", "eval_only=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval_only=true" in err and "resume=<checkpoint>" in err, err


@pytest.mark.parametrize("override,message", [
    ("model.pred_ratio=0.9", "pred_ratio"), ("model.mask_ratio=1.5", "mask_ratio"),
    ("model.img_size=30", "divisible"), ("model.name=vit_unknown", "unknown model"),
    ("optim.not_a_field=1", "not_a_field"), ("epochs=abc", "epochs"), ("data.path=/no/such/dir", "/no/such/dir")])
def test_bad_config_fails_before_training_with_a_clear_message(tmp_path, capsys, override, message):
    assert cli(["pretrain", "--config", DEMO, f"output_dir={tmp_path}", *FAST, override]) == 2
    err = capsys.readouterr().err
    assert message in err and "error" in err
    assert not (tmp_path / "checkpoint.pth").exists()


def test_resume_from_a_checkpoint_that_is_not_ours(tmp_path, capsys):
    torch.save({"something": 1}, tmp_path / "foreign.pth")
    code = cli(["pretrain", "--config", DEMO, f"output_dir={tmp_path / 'run'}", *FAST,
                f"resume={tmp_path / 'foreign.pth'}"])
    assert code == 2 and "lacks" in capsys.readouterr().err


def test_config_files_of_every_recipe_load(tmp_path):
    recipes = sorted((REPO / "configs/pretrain").glob("*.yaml"))
    assert len(recipes) >= 9
    for path in recipes:
        cfg = load_config(PretrainConfig, path)
        assert cfg.model["name"].split("_")[0] in ("crossmae", "mae")
        if path.stem != "demo" and "_hiera_" not in path.stem:  # the paper's recipe (Hiera's: tests/test_hiera.py)
            assert cfg.optim.blr == 1.5e-4 and cfg.global_batch_size == 4096 and cfg.epochs == 800
            assert cfg.optim.warmup_epochs == 40 and cfg.model.get("norm_pix_loss", True)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(PretrainConfig, tmp_path / "nope.yaml")


def test_effective_batch_and_lr_rules():
    assert resolve_accum_iter(256, 4096, 1, 8) == 2
    assert resolve_accum_iter(64, None, 3, 8) == 3
    with pytest.raises(ValueError, match="not a multiple"):
        resolve_accum_iter(96, 4096, 1, 8)
    assert pretrain_lr(1.5e-4, None, 4096, 0.75, 0.25, False) == pytest.approx(2.4e-3)
    assert pretrain_lr(1.5e-4, None, 4096, 0.75, 0.25, True) == pytest.approx(0.8e-3)  # the release's scaling
    assert pretrain_lr(1.5e-4, 1e-3, 4096, 0.75, 0.25, True) == 1e-3


def test_slurm_submission_dry_run(capsys):
    from tools import submit_slurm as submit
    assert submit.main(["--nodes", "2", "--partition", "gpu", "--dry-run", "--", "pretrain", "--config", DEMO]) == 0
    out = capsys.readouterr().out
    assert "crossmae pretrain --config" in out and "'nodes': 2" in out and "'tasks_per_node': 8" in out
    with pytest.raises(SystemExit, match="usage"):
        submit.main(["--nodes", "2"])
