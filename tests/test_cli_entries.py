"""Every command that README.md and docs/ document starts: each entry, run from the repository root in a fresh
process as a user types it, prints its help (tools/ scripts by path, ``python -m`` modules, every ``crossmae``
task, and the shell launchers down to the Python program they start)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "tools").glob("*.py")
                 if 'if __name__ == "__main__"' in p.read_text())
MODULES = ["crossmae.cli", "det.train", "seg.train", "cls_transfer", "det.export", "seg.export", "det.synthetic",
           "tools.paper_row"]
# the crossmae commands the docs name (`crossmae <command>`, `python -m crossmae.cli <command>`,
# tools/submit_slurm.py -- <command>), written here, not read from the table, so a dropped one fails
COMMANDS = ["pretrain", "finetune", "linprobe", "det", "seg", "cls-transfer", "cls_transfer", "knn", "export"]


def _help(args: list[str], **kwargs) -> str:
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert proc.stdout.startswith("usage:"), proc.stdout[:500]
    return proc.stdout


def test_the_documented_scripts_are_found():
    assert {"tools/train_vitdet.py", "tools/train_seg.py", "tools/collect.py", "tools/paper_row.py",
            "tools/submit_slurm.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_by_path(script):
    _help([sys.executable, script, "--help"])


@pytest.mark.parametrize("module", MODULES)
def test_module(module):
    _help([sys.executable, "-m", module, "--help"])


@pytest.mark.parametrize("command", COMMANDS)
def test_crossmae_command(command):
    out = _help([sys.executable, "-m", "crossmae.cli", command, "--help"])
    # the command (an alias under its table name), not a module's own name
    assert out.startswith(f"usage: crossmae {command.replace('_', '-')} "), out[:200]


@pytest.mark.parametrize("launcher,usage", [
    (["tools/pretrain.sh"], "usage: crossmae pretrain"),
    (["tools/finetune.sh"], "usage: crossmae finetune"),
    (["tools/linprobe.sh"], "usage: crossmae linprobe"),
    (["tools/cls_transfer.sh"], "usage: crossmae cls-transfer"),
    (["tools/finetune.sh", "configs/finetune/vit_base.yaml", "ckpt.pth", "/data/imagenet"], "usage: crossmae finetune"),
])
def test_shell_launcher_reaches_its_program(launcher, usage, tmp_path):
    """The launcher runs with a python that adds --help to whatever the launcher asks it to run."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@" --help\n')
    python.chmod(0o755)
    out = _help(["bash", *launcher], env={**os.environ, "PYTHON": str(python), "NGPUS": "1"})
    assert out.startswith(usage), out[:300]


def test_the_core_imports_no_downstream_package():
    code = ("import sys, crossmae.cli, crossmae.tasks; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'det', 'seg', 'cls_transfer', 'tools', 'torch'}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_downstream_commands_reach_their_programs(monkeypatch):
    """``crossmae det|seg`` hand their whole command line to the task's own parser; ``crossmae cls-transfer``
    parses ``--config`` and overrides like the core tasks and calls ``cls_transfer.main``."""
    import cls_transfer
    import det.train
    import seg.train

    from crossmae.cli import main
    calls = []
    monkeypatch.setattr(det.train, "cli", lambda argv, prog: calls.append(("det", argv, prog)) or 0)
    monkeypatch.setattr(seg.train, "cli", lambda argv, prog: calls.append(("seg", argv, prog)) or 0)
    monkeypatch.setattr(cls_transfer, "main", lambda config, overrides: calls.append(("cls", config, overrides)))
    assert main(["det", "--config", "d.yaml", "--eval-only", "a=1"]) == 0
    assert main(["seg", "b=2", "--resume", "r.pth"]) == 0
    assert main(["cls-transfer", "c=3", "--config", "c.yaml"]) == 0
    assert main(["cls_transfer", "--config", "c.yaml"]) == 0  # the name before the table
    assert calls == [("det", ["--config", "d.yaml", "--eval-only", "a=1"], "crossmae det"),
                     ("seg", ["b=2", "--resume", "r.pth"], "crossmae seg"),
                     ("cls", "c.yaml", ["c=3"]), ("cls", "c.yaml", [])]
