"""A diverged run never writes a non-finite checkpoint and says which one is the last good; a non-finite
checkpoint is refused wherever weights are loaded; ``on_divergence: rollback`` restores the last good
checkpoint with a lower lr, and ends exactly where a manual restart at that lr ends."""
from __future__ import annotations

import json
import math

import pytest
import torch

from crossmae.cli import main as cli_main
from crossmae.config import ConfigError, PretrainConfig, load_config
from crossmae.data import build_loader
from crossmae.engine import CheckpointError, DistInfo, Trainer, build_adamw, load_checkpoint, save_checkpoint
from crossmae.engine import loop
from crossmae.engine.optim import warmup_cosine
from tiny import REPO, tiny_model

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
BATCH = 4


class Images(torch.utils.data.Dataset):
    def __init__(self, n):
        self.x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0


def make_trainer(out_dir, epochs, schedule, steps_per_epoch=2, loss_fn=None, **kw):
    torch.manual_seed(0)
    model = tiny_model()
    loader = build_loader(Images(BATCH * steps_per_epoch), BATCH, 0, 0, 1, seed=0)
    opt = build_adamw(model, 1e-3, 0.05, betas=(0.9, 0.95))
    return Trainer(model=model, optimizer=opt, train_loader=loader, lr_schedule=schedule,
                   loss_fn=loss_fn or (lambda m, b: m(b[0]).loss), epochs=epochs, output_dir=out_dir, dist=CPU,
                   tensorboard=False, log_every=1, config={"model": {"img_size": 32}}, **kw)


def all_finite(state: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


class NanLoss:
    """The loss is NaN at the given optimizer steps (1-based), ``once`` each (a transient fault) or every time."""

    def __init__(self, steps, once=True):
        self.steps, self.once, self.trainer, self.fired = set(steps), once, None, []

    def __call__(self, model, batch):
        loss = model(batch[0]).loss
        step = self.trainer.step + 1  # the step this loss is for (accum_iter=1)
        if step in self.steps and not (self.once and step in self.fired):
            self.fired.append(step)
            return loss * float("nan")
        return loss


def epoch_log(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "epoch_log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ stop: nothing non-finite is written
def test_huge_lr_with_one_step_per_epoch_never_overwrites_the_last_good_checkpoint(tmp_path):
    """The issue's case: one step per epoch, so the only loss checked is the one before the step that blows
    the weights up. Before: checkpoint.pth (and the snapshot) were written with inf/NaN weights."""
    trainer = make_trainer(tmp_path, epochs=3, schedule=lambda step: 1e-3 if step < 1 else 1e38,
                           steps_per_epoch=1, keep_every=1)
    with pytest.raises(FloatingPointError) as e:
        trainer.fit()
    msg = str(e.value)
    assert "the weights are not finite after step 2" in msg and "checkpoint not written" in msg, msg
    assert f"The last good checkpoint is {tmp_path / 'checkpoint.pth'} (epoch 1)" in msg, msg
    kept = load_checkpoint(tmp_path / "checkpoint.pth")
    assert kept["epoch"] == 1 and all_finite(kept["model"])
    assert sorted(p.name for p in tmp_path.glob("checkpoint*.pth")) == ["checkpoint-0001.pth", "checkpoint.pth"]


@pytest.mark.parametrize("metric", ["loss", "fixed_mask_loss", "knn_top1"])
def test_a_nan_evaluation_loss_is_a_divergence_and_is_not_kept(tmp_path, metric):
    """Before: the NaN was logged as the epoch's result and the checkpoint written (the issue's case with a
    huge but finite lr: weights finite, outputs NaN)."""
    evals = iter([{metric: 1.0, "AP": math.nan}, {metric: math.nan, "AP": 1.0}])
    trainer = make_trainer(tmp_path, epochs=2, schedule=lambda step: 1e-3, evaluate=lambda m: next(evals))
    with pytest.raises(FloatingPointError, match=rf"the evaluation after epoch 2 gave {metric}=nan; stopping. The "
                                                 rf"last good checkpoint is .*checkpoint.pth \(epoch 1\)"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoint.pth")["epoch"] == 1
    assert [r["eval"][metric] for r in epoch_log(tmp_path)] == [1.0]  # the NaN result is in no log


def test_a_nan_best_metric_is_never_the_best(tmp_path):
    """Metrics other than losses may be NaN by definition (COCO AP without ground truth): not a divergence,
    but never a best. Before: the first evaluation's NaN became the best and was saved as such."""
    evals = iter([{"AP": math.nan}, {"AP": 3.0}, {"AP": math.nan}])
    trainer = make_trainer(tmp_path, epochs=3, schedule=lambda step: 1e-3, evaluate=lambda m: next(evals),
                           best_metric="AP")
    trainer.fit()
    best = load_checkpoint(tmp_path / "checkpoint-best.pth")
    assert best["epoch"] == 2 and best["best"] == 3.0 and trainer.best == 3.0


# ------------------------------------------------------------------ non-finite files are refused where loaded
@pytest.fixture
def nan_checkpoint(tmp_path):
    """A training checkpoint of the tiny model with most weights inf/NaN, as the diverged run wrote it."""
    trainer = make_trainer(tmp_path / "run", epochs=1, schedule=lambda step: 1e-3)
    state = trainer.state_dict(epoch=1)
    state["model"] = {k: v * float("inf") if v.is_floating_point() else v for k, v in state["model"].items()}
    state["config"] = {"model": {"name": "crossmae_vit_small_patch16", "img_size": 32, "patch_size": 4,
                                 "embed_dim": 64, "depth": 4, "num_heads": 4, "decoder_embed_dim": 32,
                                 "decoder_depth": 2, "decoder_num_heads": 4}}
    path = tmp_path / "diverged.pth"
    save_checkpoint(state, path)
    return path


def _assert_named_as_non_finite(msg: str, path) -> None:
    assert f"{path} holds non-finite weights" in msg and "inf/NaN" in msg and "diverged" in msg, msg
    assert "\n" not in msg and "loss is" not in msg, msg


def test_resume_from_a_non_finite_checkpoint_names_it(tmp_path, nan_checkpoint):
    """Before: it loaded, and the run stopped at its first step blaming the lr ('loss is nan ...')."""
    trainer = make_trainer(tmp_path / "again", epochs=2, schedule=lambda step: 1e-3)
    with pytest.raises(CheckpointError) as e:
        trainer.resume(nan_checkpoint)
    _assert_named_as_non_finite(str(e.value), nan_checkpoint)


def test_resume_from_non_finite_optimizer_state_names_it(tmp_path):
    trainer = make_trainer(tmp_path / "run", epochs=1, schedule=lambda step: 1e-3)
    trainer.fit()
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pth")
    next(iter(state["optimizer"]["state"].values()))["exp_avg_sq"].fill_(float("nan"))
    save_checkpoint(state, tmp_path / "bad_optimizer.pth")
    with pytest.raises(CheckpointError, match="its optimizer state holds inf/NaN"):
        make_trainer(tmp_path / "again", epochs=2, schedule=lambda step: 1e-3).resume(tmp_path / "bad_optimizer.pth")


def test_det_and_seg_pretrained_non_finite_are_named(nan_checkpoint):
    from det.backbone import build_net, load_encoder
    from det.train import DetConfig
    from seg.config import SegConfig
    from seg.model import load_pretrained_encoder
    from seg.train import build_model
    cfg = load_config(DetConfig, None, ["model.embed_dim=64", "model.depth=2", "model.num_heads=4",
                                        "model.patch_size=4", "model.pretrain_img_size=32", "model.window_size=0",
                                        "model.global_attn_indexes=[0,1]", "image_size=32"])
    with pytest.raises(CheckpointError) as e:
        load_encoder(build_net(cfg.model, cfg.image_size), nan_checkpoint)
    _assert_named_as_non_finite(str(e.value), nan_checkpoint)
    with pytest.raises(CheckpointError) as e:
        load_pretrained_encoder(build_model(load_config(SegConfig, REPO / "configs/seg/demo.yaml")), str(nan_checkpoint))
    _assert_named_as_non_finite(str(e.value), nan_checkpoint)


def test_finetune_from_non_finite_pretrained_is_one_line(tmp_path, nan_checkpoint, capsys):
    code = cli_main(["finetune", f"pretrained={nan_checkpoint}", f"output_dir={tmp_path / 'ft'}", "device=cpu",
                     f"data.path={tmp_path / 'no_data'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("crossmae finetune: error: "), err
    _assert_named_as_non_finite(err, nan_checkpoint)


@pytest.fixture(scope="module")
def knn_data(tmp_path_factory):
    """<root>/{train,val}/c<k>/<i>.png: 2 classes of random 40 px images."""
    from PIL import Image
    root = tmp_path_factory.mktemp("knn")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in range(2):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (40, 40, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize("weights", ["nan", "overflowing"])
def test_knn_refuses_unusable_weights(tmp_path, nan_checkpoint, knn_data, weights, capsys):
    """Before: 'kNN top-1 25.00%' (chance, NaN similarities voting) and exit code 0. 'overflowing': every
    weight finite, the patch embedding so large that the features are inf/NaN (as after a huge-lr step)."""
    path = nan_checkpoint
    if weights == "overflowing":
        state = load_checkpoint(nan_checkpoint)
        state["model"] = tiny_model().state_dict()
        state["model"]["patch_embed.proj.weight"] *= 3e38
        path = tmp_path / "overflowing.pth"
        save_checkpoint(state, path)
    code = cli_main(["knn", "--checkpoint", str(path), "--data", str(knn_data), "--num-workers", "0"])
    out = capsys.readouterr()
    err = out.err.strip()
    assert code == 2 and err.startswith("crossmae knn: error: ") and "\n" not in err and "top-1" not in out.out, out
    if weights == "nan":
        _assert_named_as_non_finite(err, path)
    else:
        assert "features are not finite" in err and "no kNN accuracy" in err, err


# ------------------------------------------------------------------ rollback
SCHEDULE = warmup_cosine(1e-3, 0.0, total_iters=6, warmup_iters=2)  # 3 epochs x 2 steps


def rollback_run(out_dir, nan: NanLoss, epochs=3, **policy) -> Trainer:
    trainer = make_trainer(out_dir, epochs=epochs, schedule=SCHEDULE, loss_fn=nan,
                           divergence=loop.DivergencePolicy("rollback", **policy))
    nan.trainer = trainer
    trainer.auto_resume("")
    trainer.fit()
    return trainer


def manual_restart(out_dir, good_epochs: int, lr_factor: float) -> Trainer:
    """What a user does by hand: the run up to its last good checkpoint, then resumed with a lower lr."""
    if good_epochs:
        make_trainer(out_dir, epochs=good_epochs, schedule=SCHEDULE).fit()
    trainer = make_trainer(out_dir, epochs=3, schedule=lambda step: SCHEDULE(step) * lr_factor)
    trainer.auto_resume("")
    trainer.fit()
    return trainer


def assert_same_training_state(a: Trainer, b: Trainer) -> None:
    assert a.step == b.step
    for (name, x), y in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        assert torch.equal(x, y), name
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert all(torch.equal(sa[k][n], sb[k][n]) for n in ("exp_avg", "exp_avg_sq", "step")), k


def test_rollback_after_a_transient_nan_equals_a_manual_restart_at_half_the_lr(tmp_path, caplog):
    """NaN loss at step 4 (epoch 2): back to checkpoint.pth of epoch 1, the lr halved from there on. The
    reference never diverged: epoch 1 at the full lr, then resumed by hand at half of it."""
    rolled = rollback_run(tmp_path / "rolled", NanLoss([4]))
    reference = manual_restart(tmp_path / "manual", good_epochs=1, lr_factor=0.5)
    assert_same_training_state(rolled, reference)
    final = load_checkpoint(tmp_path / "rolled" / "checkpoint.pth")
    assert final["epoch"] == 3 and all_finite(final["model"])
    assert final["divergence"] == {"lr_scale": 0.5, "rollbacks": 1}
    records = epoch_log(tmp_path / "rolled")
    assert [r["epoch"] for r in records] == [1, 1, 2, 3] and records[1]["rollback"]["count"] == 1
    assert "loss is nan at step 4" in records[1]["rollback"]["reason"]
    assert any("rolled back to" in r.message and "epoch 1, step 2" in r.message for r in caplog.records)
    logged_steps = [json.loads(line)["step"] for line in (tmp_path / "rolled" / "train_log.jsonl").read_text().splitlines()]
    assert logged_steps == [1, 2, 3, 4, 5, 6]  # one trajectory: the abandoned step 3-4 records were dropped


def test_rollback_before_the_first_checkpoint_restarts_from_the_initial_state(tmp_path):
    rolled = rollback_run(tmp_path / "rolled", NanLoss([1]), lr_factor=0.25)
    assert_same_training_state(rolled, manual_restart(tmp_path / "manual", good_epochs=0, lr_factor=0.25))


def test_rollback_gives_up_after_max_retries(tmp_path):
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 3; giving up after 2 rollback\(s\) \(lr x0.25, "
                                                 r"divergence.max_retries=2\). The last good checkpoint is "
                                                 r".*checkpoint.pth \(epoch 1\)"):
        rollback_run(tmp_path, NanLoss([3], once=False), max_retries=2)
    kept = load_checkpoint(tmp_path / "checkpoint.pth")
    assert kept["epoch"] == 1 and all_finite(kept["model"])
    assert [r["rollback"]["count"] for r in epoch_log(tmp_path) if "rollback" in r] == [1, 2]


def test_on_divergence_fields_are_checked():
    cfg = load_config(PretrainConfig, None, ["on_divergence=rollback", "divergence.lr_factor=0.25"])
    assert loop.DivergencePolicy.from_config({"on_divergence": cfg.on_divergence,
                                         "divergence": dict(cfg.divergence)}) == loop.DivergencePolicy("rollback", 3, 0.25)
    assert loop.DivergencePolicy.from_config({}) == loop.DivergencePolicy("stop")
    for bad, field in (("on_divergence=retry", "on_divergence"), ("divergence.lr_factor=1.5", "divergence.lr_factor"),
                       ("divergence.max_retries=-1", "divergence.max_retries")):
        with pytest.raises(ConfigError, match=field):
            load_config(PretrainConfig, None, [bad])


def _ddp_rollback_worker(rank, world_size, port, out_dir):
    import os
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    from crossmae.engine import init_distributed
    from crossmae.engine.distributed import cleanup
    dist_info = init_distributed("cpu")
    torch.manual_seed(0)
    model = tiny_model()
    loader = build_loader(Images(16), BATCH, 0, rank, world_size, seed=0)  # 2 steps per epoch on each rank
    nan = NanLoss([3] if rank == 0 else [])  # only rank 0's loss is NaN: its gradient poisons both ranks
    trainer = Trainer(model=model, optimizer=build_adamw(model, 1e-3, 0.05), train_loader=loader,
                      lr_schedule=SCHEDULE, loss_fn=nan, epochs=2, output_dir=out_dir, dist=dist_info,
                      tensorboard=False, log_every=1, divergence=loop.DivergencePolicy("rollback"))
    nan.trainer = trainer
    trainer.fit()
    torch.save({"rollbacks": trainer.rollbacks, "step": trainer.step, "model": trainer.module.state_dict()},
               f"{out_dir}/rank{rank}.pt")
    cleanup()


@pytest.mark.slow  # two spawned processes: ~20 s of CPU
def test_ranks_roll_back_together(tmp_path):
    """Rank 0 alone sees the NaN loss; both ranks must roll back at the same step (else their collectives
    pair up across different steps) and end with the same finite weights."""
    from tiny import free_port, spawn_ranks
    outputs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    spawn_ranks(_ddp_rollback_worker, 2, (2, free_port(), str(tmp_path)), outputs, timeout=180)
    a, b = (torch.load(p) for p in outputs)
    assert a["rollbacks"] == b["rollbacks"] == 1 and a["step"] == b["step"] == 4
    assert all_finite(a["model"]) and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
