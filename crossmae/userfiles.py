"""Files the user owns: reading their JSON / YAML without crashing, and never replacing them silently.

Reading: a well-formed file can still be nested deeper than Python's recursion limit (``[[[[...]]]]``),
which makes json / yaml raise RecursionError; a value nested that deep also breaks every later ``str`` or
copy. :func:`parse_json` / :func:`parse_yaml` turn both into one :class:`NestingError` (a ValueError).

Writing: a fresh run directory is the toolkit's own; every other output (an export directory, a
results or figure directory, an output file) may hold the user's files. A command refuses an existing
output file, or a non-empty output directory, unless ``--overwrite``; with it, it replaces only the files
it writes itself, names them, and keeps everything else.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

MAX_DEPTH = 100  # our results, configs and logs nest at most ~6 levels


# ------------------------------------------------------------------ reading
class NestingError(ValueError):
    """A JSON / YAML document nested deeper than :data:`MAX_DEPTH`."""


def nesting_depth(obj: Any, limit: int = MAX_DEPTH) -> int:
    """Depth of nested lists / dicts (a scalar is 0), counted without recursion; stops past ``limit``."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, (list, tuple)) else None
        if children is None:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_depth(data: Any) -> Any:
    if nesting_depth(data) > MAX_DEPTH:
        raise NestingError(f"nested more than {MAX_DEPTH} levels deep")
    return data


def parse_json(text: str) -> Any:
    """``json.loads`` whose too-deep documents raise :class:`NestingError`, not RecursionError."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise NestingError(f"nested more than {MAX_DEPTH} levels deep") from None
    return _check_depth(data)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` whose too-deep documents raise :class:`NestingError`, not RecursionError."""
    import yaml
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise NestingError(f"nested more than {MAX_DEPTH} levels deep") from None
    return _check_depth(data)


# ------------------------------------------------------------------ writing
class OutputExistsError(ValueError):
    """The output would replace files the user did not ask to replace (a user error: one line, exit 2)."""


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def check_output_file(path: str | os.PathLike, overwrite: bool) -> bool:
    """Whether ``path`` exists (and will be replaced). An existing file without ``overwrite``, or a
    directory, is an :class:`OutputExistsError`."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a directory; give the name of the output file")
    exists = path.exists() or path.is_symlink()
    if exists and not overwrite:
        raise OutputExistsError(f"{path} exists: pass --overwrite to replace it")
    return exists


def check_output_dir(out: str | os.PathLike, ours: Iterable[str], overwrite: bool) -> list[str]:
    """The files among ``ours`` (the names a command writes into ``out``) that exist and will be replaced.
    A non-empty ``out`` without ``overwrite``, or a file where the directory should be, is an
    :class:`OutputExistsError`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file, not a directory: give a new or empty output directory")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if present and not overwrite:
        raise OutputExistsError(f"{out} is not empty ({_few(present)}): give a new or empty output directory, or "
                                f"pass --overwrite to replace the files this command writes there "
                                f"({', '.join(ours)}); nothing else in it is touched")
    return [name for name in ours if name in present]


def claim_output_tree(out: str | os.PathLike, marker: str, overwrite: bool, what: str) -> None:
    """For a command that builds a tree of its own in ``out`` and resumes it when rerun (tools/paper_row.py):
    ``out`` must be new, empty, or marked as such a tree (the file ``marker`` in it); a non-empty unmarked
    directory is refused unless ``overwrite``. ``what``: the files the command writes, for the message.
    Marks ``out``, so that reruns go on."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file, not a directory: give a new or empty output directory")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if present and marker not in present and not overwrite:
        raise OutputExistsError(f"{out} is not empty and was not made by this command ({_few(present)}): give a new "
                                f"or empty output directory, or pass --overwrite to write {what} there (every other "
                                f"file is kept)")
    out.mkdir(parents=True, exist_ok=True)
    (out / marker).touch()
