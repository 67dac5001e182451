"""A short run of tools/fault_inject.py: tiny runs SIGKILLed (inside checkpoint writes and at a random moment
of training), restarted until they finish, must end bitwise where an uninterrupted run ends."""
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tools import fault_inject as fi

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def test_killed_and_restarted_runs_end_bitwise_equal_to_uninterrupted_ones(tmp_path):
    Fault = fi.Fault
    plans = {
        # killed: in the middle of the first write (a partial temporary file left), after the snapshot
        # checkpoint-0002.pth but before checkpoint.pth (epoch 2 is trained again: logs rewound, snapshot
        # rewritten), at a random moment of the training left, after the last checkpoint.pth but before
        # results.json; then the finished command is run once more
        "pretrain": [Fault("write", 1), Fault("after", file="checkpoint-0002.pth@2"), Fault("fit", 0.5, relative=True),
                     Fault("after", file="checkpoint.pth@3")],
        "finetune": [Fault("rename", file="checkpoint.pth@2")],  # a complete temporary file, never renamed
    }
    fi.write_tiny_imagefolder(tmp_path / "data")
    with ThreadPoolExecutor(2) as pool:  # the two tasks' processes overlap on two cores
        futures = {task: pool.submit(fi.check_task, task, tmp_path, faults=faults, epochs=3, rerun=task == "pretrain",
                                     timeout_s=300)
                   for task, faults in plans.items()}
        reports = {task: f.result() for task, f in futures.items()}
    for task, report in reports.items():
        assert not report.problems, report.summary()
        # every planned write kill landed, unless a timed kill before it had already carried the run past
        # that write (the timed kill may land anywhere, even after the end of training)
        for a in report.attempts:
            if a.fault is not None and a.fault.file and a.epochs_done < int(a.fault.file.split("@")[1]):
                assert a.returncode == -signal.SIGKILL, report.summary()
        assert report.attempts[-1].returncode == 0
    assert reports["pretrain"].kills >= 3 and reports["finetune"].kills == 1


@pytest.mark.slow  # eight tiny runs in sequence: ~90 s on one free core
def test_a_transient_nan_under_rollback_ends_where_a_manual_restart_at_half_the_lr_ends(tmp_path):
    """on_divergence=rollback: a NaN loss at step 6 (epoch 2 of 3, 4 steps each), then a kill inside the last
    checkpoint.pth write, and a restart. The run rolls back to epoch 1's checkpoint, halves the lr, and ends
    with finite checkpoints bitwise equal to a run that never diverged: stopped after epoch 1's checkpoint
    and resumed by hand with optim.blr and optim.min_lr halved (tools/fault_inject.py, check_divergence)."""
    for task in ("pretrain", "finetune"):  # every task's schema has on_divergence; fine-tuning shows the rest
        report = fi.check_divergence(task, tmp_path, nan_step=6, epochs=3, rerun=False, timeout_s=300)
        assert not report.problems, report.summary()
        assert [a.returncode for a in report.attempts] == [-signal.SIGKILL, 0], report.summary()
        assert [r["to"].endswith("checkpoint.pth") for r in fi._rollbacks(tmp_path / f"{task}-divergence" / "faulted")] \
            == [True]
