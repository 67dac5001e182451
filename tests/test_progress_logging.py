"""Progress where users run: a tqdm bar on a terminal; where stderr is a file (SLURM .out, nohup, CI) plain
lines at the logging steps (step, loss, lr, images/s, ETA), no carriage returns; CROSSMAE_PROGRESS forces
either."""
from __future__ import annotations

import io
import logging
import re

import pytest
import torch

from crossmae.data import build_loader
from crossmae.engine import DistInfo, Trainer, build_adamw
from crossmae.engine.logging import PROGRESS_ENV, progress_bar, setup_logging
from tiny import tiny_model

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
LINE = re.compile(r"epoch (\d)/2 step (\d)/5: loss=\d+\.\d{4} lr=\S+ img_s=\d+\.\d eta \d+:\d\d:\d\d$")


class Stderr(io.StringIO):
    """What a job's stderr is: a file (SLURM .out, nohup.out), or a terminal."""

    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def stderr(monkeypatch):
    """Install a fake stderr (``stderr(tty)``); the crossmae logger's handlers are removed afterwards."""
    monkeypatch.delenv(PROGRESS_ENV, raising=False)

    def install(tty: bool) -> Stderr:
        fake = Stderr(tty)
        monkeypatch.setattr("sys.stderr", fake)
        return fake
    yield install
    root = logging.getLogger("crossmae")
    for handler in list(root.handlers):
        handler.close()
        root.removeHandler(handler)


class Images(torch.utils.data.Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, i):
        return torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i)), 0


def train_two_epochs(out_dir) -> None:
    """2 epochs of 5 steps (20 images, batch 4), log_every=2."""
    setup_logging(out_dir)
    torch.manual_seed(0)
    model = tiny_model()
    Trainer(model=model, optimizer=build_adamw(model, 1e-4, 0.05), train_loader=build_loader(Images(), 4, 0, 0, 1, 0),
            lr_schedule=lambda step: 1e-4, loss_fn=lambda m, b: m(b[0]).loss, epochs=2, output_dir=out_dir, dist=CPU,
            log_every=2, tensorboard=False).fit()


def progress_lines(text: str) -> list[tuple[int, int]]:
    return [(int(m[1]), int(m[2])) for m in (LINE.search(line) for line in text.splitlines()) if m]


# logging steps, by hand: every 2nd global step and each epoch's last; epoch 1 = steps 1-5, epoch 2 = steps 6-10
EXPECTED = [(1, 2), (1, 4), (1, 5), (2, 1), (2, 3), (2, 5)]  # (epoch, step in the epoch) at global 2, 4, 5, 6, 8, 10


def test_training_where_stderr_is_a_file_logs_plain_lines(tmp_path, stderr):
    """Before: every tqdm redraw, carriage returns included, went into the file."""
    err = stderr(tty=False)
    train_two_epochs(tmp_path)
    text = err.getvalue()
    assert "\r" not in text
    assert progress_lines(text) == EXPECTED, text
    assert progress_lines((tmp_path / "log.txt").read_text()) == EXPECTED  # and the run's log.txt has them too


def test_training_on_a_terminal_keeps_the_bar(tmp_path, stderr):
    err = stderr(tty=True)
    train_two_epochs(tmp_path)
    text = err.getvalue()
    assert "\r" in text and "epoch 2/2: 100%" in text and progress_lines(text) == [], text


@pytest.mark.parametrize("forced, tty, bars", [("lines", True, False), ("bar", False, True), ("auto", False, False)])
def test_environment_forces_either(monkeypatch, stderr, forced, tty, bars):
    err = stderr(tty)
    monkeypatch.setenv(PROGRESS_ENV, forced)
    setup_logging(None)
    bar = progress_bar(total=3, desc="epoch 1/1", unit="step", steps_left=3)
    bar.update(1)
    bar.set_postfix(loss="1.0000")
    bar.close()
    text = err.getvalue()
    assert ("\r" in text) == bars and ("epoch 1/1 step 1/3: loss=1.0000 eta " in text) == (not bars), text


def test_a_bad_progress_setting_is_one_clear_error_before_anything_runs(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "fancy")
    for call in (lambda: setup_logging(None), lambda: progress_bar(total=1)):
        with pytest.raises(ValueError, match=f"{PROGRESS_ENV}='fancy': must be bar, lines or auto"):
            call()


def test_evaluation_loops_log_a_line_at_most_every_interval(stderr, monkeypatch):
    err = stderr(tty=False)
    setup_logging(None)
    clock = iter([0.0, 10.0, 20.0, 31.0, 40.0, 62.0])  # start, then after items 1..5
    monkeypatch.setattr("crossmae.engine.logging.time.monotonic", lambda: next(clock))
    assert list(progress_bar(range(5), desc="eval", min_interval_s=30)) == list(range(5))
    lines = [ln for ln in err.getvalue().splitlines() if "eval " in ln]
    # 30 s after the start (item 3), then 30 s after that line (item 5); rates 3/31 and 5/62 items per second
    assert [ln.split("] ", 1)[1] for ln in lines] == ["eval 3/5: 0.10 it/s eta 0:00:21",
                                                      "eval 5/5: 0.08 it/s eta 0:00:00"], lines


def test_classification_evaluation_where_stderr_is_a_file_has_no_bar(stderr):
    from crossmae.classification.evaluate import build_eval_loader, evaluate
    err = stderr(tty=False)
    dataset = torch.utils.data.TensorDataset(torch.randn(6, 4), torch.tensor([0, 1, 0, 1, 0, 1]))
    metrics = evaluate(torch.nn.Linear(4, 2), build_eval_loader(dataset, 2, 0, 0, 1), torch.device("cpu"), "fp32",
                       expected=6)
    assert metrics["num_samples"] == 6 and "\r" not in err.getvalue()


def test_setting_up_logging_does_not_claim_the_run_dir(tmp_path):
    """Claiming it (the lock, the clean-up of killed runs' leftovers) is run_task's own, explicit call."""
    setup_logging(tmp_path)
    assert not (tmp_path / "run.lock").exists()
