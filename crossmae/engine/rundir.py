"""One run per output directory: a lock file naming its holder, and the clean-up of what killed runs leave.

``lock_run_dir(out_dir)`` is called once per run, by ``task.claim_run_dir``, before the run writes anything, on
rank 0 only (a ``Trainer`` used directly, outside ``run_task``, claims its dir itself when this process does not
hold it). The lock file ``<out_dir>/run.lock`` holds the holder's pid, host, start time and command. It is
removed at exit (normal, exception, SIGTERM). A lock left by a killed run is taken over with a warning when its
holder is provably gone: same host and the pid no longer alive (or reused by another process), or an earlier
start of the same SLURM job (a requeued job may start on another node). Anything else is refused with a message naming the holder and how to remove the lock.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..userfiles import parse_json
from ..files import pid_alive, process_start_ticks, remove_stale_temp_files

logger = logging.getLogger("crossmae")

LOCK_NAME = "run.lock"
_UNREADABLE_GRACE_S = 10.0  # a lock file without a readable record this young may still be being written


class RunDirBusy(ValueError):
    """Another run holds the output directory (a user error: two runs must not share one)."""


@dataclass(frozen=True)
class LockRecord:
    pid: int
    host: str
    started: str  # UTC, ISO 8601
    command: str
    token: str  # tells this process's lock from a later one at the same path
    proc_start: int | None = None  # the pid's start time in clock ticks since boot (Linux): catches reused pids
    slurm_job: str | None = None
    slurm_restart: int = 0  # SLURM_RESTART_COUNT: grows each time SLURM requeues the job

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job}" if self.slurm_job else ""
        return f"pid {self.pid} on host {self.host}{job}, started {self.started}, command: {self.command}"


@dataclass
class _Held:
    path: Path
    token: str
    owner_pid: int  # forked children (data-loader workers) inherit the module state but must not release


_held: _Held | None = None
_hooks_installed = False


def _my_record() -> LockRecord:
    job = os.environ.get("SLURM_JOB_ID")
    if job and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', job)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return LockRecord(pid=os.getpid(), host=socket.gethostname(),
                      started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else "?",
                      token=secrets.token_hex(8), proc_start=process_start_ticks(os.getpid()), slurm_job=job,
                      slurm_restart=int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0))


def read_lock(path: str | os.PathLike) -> LockRecord | None:
    """The record in a lock file; None if it is unreadable (cut by a kill, or not ours)."""
    try:
        data = parse_json(Path(path).read_text())
        known = {f.name for f in fields(LockRecord)}  # a later version may record more
        return LockRecord(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError, AttributeError):
        return None


def _create(path: Path, record: LockRecord) -> bool:
    """Create ``path`` holding ``record`` if it does not exist; False if it does. The record is written to a
    temporary file and hard-linked into place, so the lock never exists without its content."""
    tmp = path.with_name(f".{path.name}.{record.pid}.{record.token}.tmp")
    tmp.write_text(json.dumps(asdict(record)) + "\n")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create, then write
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(tmp.read_text())
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _stale_reason(path: Path, holder: LockRecord | None, me: LockRecord) -> str | None:
    """Why the lock at ``path`` may be taken over, or None if it must not be (raises for a live holder)."""
    if holder is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return "it disappeared"
        return f"it holds no readable record ({age:.0f} s old)" if age > _UNREADABLE_GRACE_S else None
    if holder.slurm_job and holder.slurm_job == me.slurm_job and holder.slurm_restart < me.slurm_restart:
        return f"it was left by an earlier start of this requeued SLURM job ({holder.describe()})"
    how_to = (f"Two runs must not write one output directory: choose another output_dir, or wait for that run "
              f"to end. If it is not running any more, delete {path} and start again.")
    if holder.host != me.host:
        raise RunDirBusy(f"{path.parent} is in use by another run ({holder.describe()}). {how_to}")
    if pid_alive(holder.pid, holder.proc_start):
        raise RunDirBusy(f"{path.parent} is in use by a running process ({holder.describe()}). {how_to}")
    return f"its holder is gone ({holder.describe()})"


def _take_over(path: Path, seen: bytes) -> None:
    """Remove the stale lock file we judged, and only it: it is moved aside first, and put back if another
    process replaced it meanwhile."""
    aside = path.with_name(f".{path.name}.stale.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # someone else removed it: try again
    if aside.read_bytes() != seen:  # a fresh lock got in between
        try:
            os.link(aside, path)
        except OSError:
            pass
        aside.unlink(missing_ok=True)
        raise RunDirBusy(f"{path.parent} was claimed by another run while this one was starting ({path})")
    aside.unlink(missing_ok=True)


def lock_run_dir(out_dir: str | os.PathLike) -> Path:
    """Claim ``out_dir`` for this process (creating it), then remove temporary checkpoint files that killed
    runs left there. Returns the lock file's path. Claiming the directory this process already holds does
    nothing; claiming another releases the first (a process runs one task at a time). Raises ``RunDirBusy``
    when another run holds it."""
    global _held
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir.resolve() / LOCK_NAME
    if holds_run_dir(out_dir):
        return path
    release_run_dir()
    me = _my_record()
    deadline = time.monotonic() + 2 * _UNREADABLE_GRACE_S
    while time.monotonic() < deadline:
        if _create(path, me):
            break
        try:
            seen = path.read_bytes()
        except FileNotFoundError:
            continue
        holder = read_lock(path)
        if holder is not None and (holder.pid, holder.host, holder.proc_start) == (me.pid, me.host, me.proc_start):
            me = holder  # ours already (a lock this process took and forgot, e.g. after a failed release)
            break
        reason = _stale_reason(path, holder, me)
        if reason is None:  # a young unreadable lock: give its writer a moment
            time.sleep(0.2)
            continue
        logger.warning("taking over the lock of %s: %s", out_dir, reason)
        _take_over(path, seen)
    else:
        raise RunDirBusy(f"could not lock {out_dir}: {path} keeps changing or stays unreadable; if no run is "
                         f"using {out_dir}, delete {path}")
    _held = _Held(path, me.token, os.getpid())
    _install_release_hooks()
    removed = remove_stale_temp_files(out_dir) + _remove_lock_leftovers(path)
    if removed:
        logger.warning("removed %d temporary checkpoint file(s) left by a killed run in %s: %s", len(removed),
                       out_dir, ", ".join(p.name for p in removed))
    return path


def holds_run_dir(out_dir: str | os.PathLike) -> bool:
    """Whether this process holds ``out_dir``'s lock (taken by :func:`lock_run_dir`)."""
    return _held is not None and _held.owner_pid == os.getpid() and _held.path == Path(out_dir).resolve() / LOCK_NAME


def _remove_lock_leftovers(path: Path) -> list[Path]:
    """Temporary files of ``_create`` / ``_take_over`` whose process was killed in the middle."""
    removed = []
    for p in path.parent.glob(f".{path.name}.*"):
        pid = next((int(part) for part in p.name.split(".") if part.isdigit()), None)
        if pid is not None and (pid == os.getpid() or not pid_alive(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def release_run_dir() -> None:
    """Remove this process's lock file, if it still is ours. Safe to call any number of times."""
    global _held
    held = _held
    if held is None or held.owner_pid != os.getpid():
        return
    _held = None
    record = read_lock(held.path)
    if record is not None and record.token == held.token:
        try:
            held.path.unlink()
        except OSError as e:  # e.g. a read-only directory by now: the next run sees a dead holder
            logger.warning("could not remove the lock %s: %s", held.path, e)


def _install_release_hooks() -> None:
    """Release at interpreter exit, and on SIGTERM before the previous handler (or the default action) runs."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(release_run_dir)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit and stale detection remain
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        release_run_dir()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # the default action: die by the signal, as without this handler
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
