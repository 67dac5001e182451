"""One run per output directory (run.lock), what killed runs leave behind, resume checks, one log trajectory."""
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import asdict, replace

import pytest
import torch

from crossmae.cli import main as cli
from crossmae.data import build_loader
from crossmae.engine import CheckpointError, DistInfo, Trainer, build_adamw, load_checkpoint, save_checkpoint
from crossmae.engine import rundir
from crossmae.engine.rundir import LOCK_NAME, LockRecord, RunDirBusy, lock_run_dir, read_lock, release_run_dir

from tiny import REPO, TINY_CROSSMAE, tiny_model

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
FAST_PRETRAIN = ["pretrain", "--config", str(REPO / "configs/pretrain/demo.yaml"), "model.embed_dim=32",
                 "model.depth=2", "model.num_heads=4", "model.decoder_embed_dim=32", "model.decoder_depth=1",
                 "data.num_workers=0", "num_vis=0", "epochs=1"]


@pytest.fixture(autouse=True)
def _release():
    yield
    release_run_dir()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _holder(pid: int, host: str | None = None, **kw) -> LockRecord:
    return LockRecord(pid=pid, host=host or socket.gethostname(), started="2026-01-01T00:00:00Z",
                      command="crossmae pretrain --config other.yaml", token="feedfacefeedface",
                      proc_start=rundir.process_start_ticks(pid), **kw)


def _write_lock(out_dir, record: LockRecord):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / LOCK_NAME).write_text(json.dumps({**asdict(record), "from_a_later_version": 1}))


def test_lock_names_this_process_is_reentrant_and_is_released(tmp_path):
    path = lock_run_dir(tmp_path / "a")
    record = read_lock(path)
    assert record.pid == os.getpid() and record.host == socket.gethostname() and record.started
    assert lock_run_dir(tmp_path / "a") == path and read_lock(path).token == record.token  # same process: no-op
    lock_run_dir(tmp_path / "b")  # a process runs one task at a time: claiming b releases a
    assert not path.exists() and (tmp_path / "b" / LOCK_NAME).exists()
    release_run_dir()
    assert not (tmp_path / "b" / LOCK_NAME).exists()


def test_a_live_holder_on_this_host_is_refused_with_its_pid_and_the_way_out(tmp_path):
    _write_lock(tmp_path, _holder(os.getppid()))  # a live process that is not this one
    with pytest.raises(RunDirBusy) as e:
        lock_run_dir(tmp_path)
    message = str(e.value)
    assert f"pid {os.getppid()}" in message and "other.yaml" in message and f"delete {tmp_path / LOCK_NAME}" in message
    assert read_lock(tmp_path / LOCK_NAME).token == "feedfacefeedface"  # untouched


def test_a_holder_on_another_host_is_refused(tmp_path):
    _write_lock(tmp_path, _holder(_dead_pid(), host="gpu-node-17"))
    with pytest.raises(RunDirBusy, match="gpu-node-17"):
        lock_run_dir(tmp_path)


def test_a_dead_holder_on_this_host_is_taken_over_with_a_warning(tmp_path, caplog):
    pid = _dead_pid()
    _write_lock(tmp_path, replace(_holder(os.getpid()), pid=pid, proc_start=None))
    with caplog.at_level("WARNING", logger="crossmae"):
        lock_run_dir(tmp_path)
    assert read_lock(tmp_path / LOCK_NAME).pid == os.getpid()
    assert f"pid {pid}" in caplog.text and "taking over" in caplog.text


@pytest.mark.skipif(rundir.process_start_ticks(os.getpid()) is None, reason="needs /proc")
def test_a_reused_pid_does_not_keep_a_stale_lock_alive(tmp_path, caplog):
    holder = _holder(os.getppid())
    _write_lock(tmp_path, replace(holder, proc_start=holder.proc_start + 1))  # the pid now is another process
    with caplog.at_level("WARNING", logger="crossmae"):
        lock_run_dir(tmp_path)
    assert read_lock(tmp_path / LOCK_NAME).pid == os.getpid()


def test_a_requeued_slurm_job_takes_over_its_own_lock_from_another_node(tmp_path, monkeypatch):
    _write_lock(tmp_path, _holder(os.getppid(), host="gpu-node-17", slurm_job="4242", slurm_restart=0))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    lock_run_dir(tmp_path)
    assert read_lock(tmp_path / LOCK_NAME).pid == os.getpid()
    release_run_dir()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the same start of the job, elsewhere: a live run
    _write_lock(tmp_path, _holder(os.getppid(), host="gpu-node-17", slurm_job="4242", slurm_restart=0))
    with pytest.raises(RunDirBusy):
        lock_run_dir(tmp_path)


CHILD = """
import os, signal, sys, time
from crossmae.engine.rundir import lock_run_dir
lock_run_dir(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
how = sys.argv[2]
if how == "raise":
    raise RuntimeError("boom")
if how == "sigterm":
    # short sleeps: Python runs a signal's handler when the main thread next runs bytecode, and a signal that
    # arrives just before a blocking call (or lands on a native thread) does not cut that call short: one
    # long sleep hung the test for its whole length in 1 of 20 tries (measured), these end in 0.05 s
    for _ in range(1200):
        time.sleep(0.05)
"""


@pytest.mark.parametrize("how,returncode", [("exit", 0), ("raise", 1), ("sigterm", -signal.SIGTERM)])
def test_the_lock_is_released_on_exit_exception_and_sigterm(tmp_path, how, returncode):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), how], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "locked"
    assert read_lock(tmp_path / LOCK_NAME).pid == proc.pid
    proc.stdin.write("go\n")
    proc.stdin.flush()
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == returncode  # SIGTERM still ends the process by the signal
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_second_run_on_a_busy_output_dir_stops_with_one_line_and_writes_nothing(tmp_path, capsys):
    _write_lock(tmp_path, _holder(os.getppid()))
    assert cli(FAST_PRETRAIN + [f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err and "in use" in err and str(os.getppid()) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]


def _cli(entry: str):
    import importlib
    module, name = entry.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("entry,args", [
    ("crossmae.cli:main", ["finetune", "--config", "configs/finetune/demo.yaml"]),
    ("crossmae.cli:main", ["linprobe", "--config", "configs/linprobe/demo.yaml"]),
    ("cls_transfer.__main__:cli", ["--config", "configs/cls_transfer/demo.yaml"]),
    ("det.train:cli", ["--config", "configs/det/tiny_cpu.yaml"]),
    ("det.train:cli", ["--config", "configs/det/tiny_cpu.yaml", "--eval-only"]),
    ("seg.train:cli", ["--config", "configs/seg/demo.yaml"]),
], ids=["finetune", "linprobe", "cls_transfer", "det", "det-eval", "seg"])
def test_every_task_claims_its_output_dir_before_writing(tmp_path, capsys, entry, args):
    _write_lock(tmp_path, _holder(os.getppid()))
    args = [a if not a.startswith("configs/") else str(REPO / a) for a in args]
    assert _cli(entry)(args + [f"output_dir={tmp_path}"]) == 2
    assert "in use" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]


def test_a_task_run_claims_its_output_dir_once(tmp_path, monkeypatch):
    from crossmae.engine import loop, task
    claims = []

    def counted(out_dir):
        claims.append(out_dir)
        return lock_run_dir(out_dir)

    monkeypatch.setattr(task, "lock_run_dir", counted)
    monkeypatch.setattr(loop, "lock_run_dir", counted)
    assert cli(FAST_PRETRAIN + [f"output_dir={tmp_path}", "knn.every=0"]) == 0
    assert len(claims) == 1 and (tmp_path / "checkpoint.pth").is_file()


def test_a_trainer_used_directly_claims_its_output_dir(tmp_path):
    make_trainer(tmp_path, epochs=1)
    assert rundir.holds_run_dir(tmp_path) and read_lock(tmp_path / LOCK_NAME).pid == os.getpid()


def test_stale_temporary_checkpoints_are_removed_when_a_run_starts(tmp_path, caplog):
    dead, live = _dead_pid(), os.getppid()
    stale = [tmp_path / f".checkpoint.pth.{dead}.0badc0de.tmp", tmp_path / ".checkpoint.pth.k2j4_x9q.tmp",
             tmp_path / f".checkpoint-best.pth.{os.getpid()}.12345678.tmp"]
    kept = [tmp_path / f".checkpoint.pth.{live}.0badc0de.tmp",  # a live process is writing it
            tmp_path / ".notes.txt.abcdefgh.tmp", tmp_path / "checkpoint.pth"]
    for p in stale + kept:
        p.write_bytes(b"x")
    with caplog.at_level("WARNING", logger="crossmae"):
        lock_run_dir(tmp_path)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert "removed 3 temporary checkpoint file(s)" in caplog.text


def test_stale_temporary_files_of_every_atomic_write_are_removed(tmp_path):
    from crossmae.files import atomic_write
    dead = _dead_pid()
    stale = [tmp_path / f".{name}.{dead}.0badc0de.tmp" for name in ("config.yaml", "results.json", "train_log.jsonl")]
    for p in stale:
        p.write_text("half")
    atomic_write(tmp_path / "results.json", lambda f: f.write("{}"), binary=False)  # a real one, finished
    lock_run_dir(tmp_path)
    assert not any(p.exists() for p in stale)
    assert (tmp_path / "results.json").read_text() == "{}"


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_checkpoints_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        save_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path / "checkpoint.pth")
        (tmp_path / "other.txt").write_text("x")
    finally:
        os.umask(old)
    mode = (tmp_path / "checkpoint.pth").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask == (tmp_path / "other.txt").stat().st_mode & 0o777
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


class Images(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i)), 0


def make_trainer(out_dir, epochs, config=None, tensorboard=False, **model_overrides):
    torch.manual_seed(0)
    model = tiny_model(**model_overrides)
    loader = build_loader(Images(), 4, 0, 0, 1, seed=0)
    config = config or {"model": {**TINY_CROSSMAE, **model_overrides}, "data": {"path": "/data/a"}, "epochs": epochs}
    return Trainer(model=model, optimizer=build_adamw(model, 1e-3, 0.05), train_loader=loader,
                   lr_schedule=lambda step: 1e-3, loss_fn=lambda m, b: m(b[0]).loss, epochs=epochs,
                   output_dir=out_dir, dist=CPU, config=config, log_every=1, keep_every=1, tensorboard=tensorboard)


def test_auto_resume_refuses_another_model_or_data_and_logs_other_changes(tmp_path, caplog):
    make_trainer(tmp_path, epochs=1).fit()
    other_model = make_trainer(tmp_path, epochs=2, embed_dim=48)
    with pytest.raises(CheckpointError, match=r"model\.embed_dim: 64 -> 48") as e:
        other_model.auto_resume("")
    assert "resume=" in str(e.value) and "epochs" not in str(e.value)
    other_data = make_trainer(tmp_path, epochs=2, config={"model": TINY_CROSSMAE, "data": {"path": "/data/b"},
                                                          "epochs": 2})
    with pytest.raises(CheckpointError, match=r"data\.path: '/data/a' -> '/data/b'"):
        other_data.auto_resume("")
    # named explicitly: a deliberate choice, resumed with a warning
    with caplog.at_level("INFO", logger="crossmae"):
        other_data.auto_resume(str(tmp_path / "checkpoint.pth"))
    assert other_data.start_epoch == 1 and "data.path" in caplog.text
    # a legitimate change (more epochs, another worker count) resumes and is logged
    caplog.clear()
    more = make_trainer(tmp_path, epochs=3, config={"model": TINY_CROSSMAE, "data": {"path": "/data/a",
                                                                                      "num_workers": 3}, "epochs": 3})
    with caplog.at_level("INFO", logger="crossmae"):
        more.auto_resume("")
    assert more.start_epoch == 1 and "epochs: 1 -> 3" in caplog.text


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_a_resumed_run_leaves_one_trajectory_in_the_logs(tmp_path):
    full = make_trainer(tmp_path / "full", epochs=2)
    full.fit()
    run = tmp_path / "run"
    make_trainer(run, epochs=2).fit()
    # as if killed after epoch 2 was logged but before checkpoint.pth was: the checkpoint is epoch 1's
    save_checkpoint(load_checkpoint(run / "checkpoint-0001.pth"), run / "checkpoint.pth")
    with open(run / "train_log.jsonl", "a") as f:
        f.write('{"step": 9, "lo')  # a line cut by the kill
    resumed = make_trainer(run, epochs=2)
    resumed.auto_resume("")
    assert resumed.start_epoch == 1
    resumed.fit()
    assert _steps(run / "train_log.jsonl") == _steps(tmp_path / "full" / "train_log.jsonl") == list(range(1, 9))
    epochs = [json.loads(line)["epoch"] for line in (run / "epoch_log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    # and the logged losses are those of the uninterrupted run
    losses = [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert losses == [json.loads(line)["loss"] for line in (tmp_path / "full" / "train_log.jsonl").read_text()
                      .splitlines()]


def test_tensorboard_scalars_after_a_resume_are_not_duplicated(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    make_trainer(tmp_path, epochs=2, tensorboard=True).fit()
    save_checkpoint(load_checkpoint(tmp_path / "checkpoint-0001.pth"), tmp_path / "checkpoint.pth")
    resumed = make_trainer(tmp_path, epochs=2, tensorboard=True)
    resumed.auto_resume("")
    resumed.fit()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == list(range(1, 9))
    assert [e.step for e in acc.Scalars("epoch/train_loss")] == [4, 8]
