"""Files written whole: a temporary file in the same directory, fsync, rename. A crash, kill or full disk at
any point leaves the previous file; the temporaries a killed writer leaves are recognised by name and removed.

Below every other module (standard library only): checkpoints, run directories, logs, configs and the
Hub files of the models all write through :func:`atomic_write`.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
from pathlib import Path
from typing import IO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = True) -> None:
    """Write through ``write(file)`` to a temporary file in the same directory, fsync, then rename over
    ``path``: a crash, kill or full disk at any point leaves the previous file intact. The file gets the
    permissions every other file gets (0666 less the umask), so colleagues on a shared cluster can read it;
    the temporary name carries the writer's pid, so a later run can tell (and remove) ones that killed runs
    left. A failed write raises an OSError naming ``path`` (writes through a file object raise one without
    a file name, torch's own writer a RuntimeError): one line from crossmae.cli.report_errors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
        try:
            with os.fdopen(fd, "wb" if binary else "w") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise
    except RuntimeError as e:
        if "write" not in str(e):
            raise
        raise OSError(errno.EIO, f"writing failed, disk full? ({str(e).splitlines()[0]})", str(path)) from e
    fsync_dir(path.parent)  # make the rename itself durable


def write_text(path: str | os.PathLike, text: str) -> None:
    """A UTF-8 text file written whole, as :func:`atomic_write`."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the data itself is synced
        pass
    finally:
        os.close(fd)


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after its last ')'
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int, proc_start: int | None = None) -> bool:
    """Whether ``pid`` is a live process on this host (and the same one, when its start time is known)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    if proc_start is not None:
        now = process_start_ticks(pid)
        if now is not None and now != proc_start:
            return False  # the pid was reused by a later process
    return True


# atomic_write's temporary files: ".<name>.<pid>.<hex>.tmp"; ".<name>.<8 chars>.tmp" from older versions of
# save_checkpoint (recognised for checkpoint names only: too loose a pattern to claim other files by)
_TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.[0-9a-f]{8}|[A-Za-z0-9_]{8})\.tmp$")


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` (checkpoints, config.yaml, results.json, logs) in
    ``directory`` that no live process on this host is writing (a kill mid-write leaves one). Call it only
    where no other host writes into ``directory`` (``lock_run_dir`` does, holding the directory's lock).
    Returns the removed paths."""
    removed = []
    for p in sorted(Path(directory).glob(".*.tmp")):
        m = _TEMP_NAME.match(p.name)
        if m is None or (m["pid"] is None and not m["name"].endswith((".pth", ".pt", ".safetensors", ".bin"))):
            continue  # not one of ours
        pid = int(m["pid"]) if m["pid"] else None
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            continue  # being written right now
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed
