"""Every repository path and Python symbol that README.md and docs/*.md name in backticks exists, so a moved
file or a renamed function cannot leave the docs describing code that is gone."""
from __future__ import annotations

import glob
import importlib
import itertools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PACKAGES = ("crossmae", "det", "seg", "cls_transfer")
TOP_DIRS = (*PACKAGES, "tools", "configs", "tests", "docs")
# paths in other projects that the docs cite as references (not files of this repository)
EXTERNAL = {"configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py",  # mmsegmentation's
            "tools/test.py"}  # mmsegmentation's test script (docs/seg.md)


def backticked() -> list[tuple[str, str]]:
    return [(doc.name, tok) for doc in DOCS for tok in re.findall(r"`([^`\n]+)`", doc.read_text())]


def expand_braces(pattern: str) -> list[str]:
    """'a_{x,y}.yaml' -> ['a_x.yaml', 'a_y.yaml'] (every brace group, as the shell does)."""
    parts = re.split(r"\{([^{}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def repo_paths() -> list[tuple[str, str]]:
    out = []
    for doc, tok in backticked():
        word = tok.split()[0]
        if "/" in word and word.startswith(tuple(d + "/" for d in TOP_DIRS)) and word not in EXTERNAL:
            out.append((doc, word.rstrip(":,")))
    return sorted(set(out))


def python_symbols() -> list[tuple[str, str]]:
    out = []
    for doc, tok in backticked():
        word = re.sub(r"\(.*", "", tok.split()[0])  # `crossmae.hub.load(repo_or_dir)` -> crossmae.hub.load
        if re.fullmatch(r"(%s)(\.\w+)+" % "|".join(PACKAGES), word) and not word.endswith((".py", ".yaml", ".md")):
            out.append((doc, word))
    return sorted(set(out))


def test_the_docs_name_paths_and_symbols():
    # the collection itself must find what the docs are known to name, or the checks below check nothing
    assert ("README.md", "crossmae/config.py") in repo_paths()
    assert any(sym == "crossmae.engine.encoder_state" for _, sym in python_symbols())
    assert len(repo_paths()) > 40 and len(python_symbols()) > 10


@pytest.mark.parametrize("doc,path", repo_paths())
def test_named_path_exists(doc, path):
    matches = [m for p in expand_braces(path) for m in glob.glob(str(REPO / p))]
    assert matches, f"{doc} names `{path}`, which matches no file in the repository"


@pytest.mark.parametrize("doc,symbol", python_symbols())
def test_named_symbol_exists(doc, symbol):
    parts = symbol.split(".")
    for i in range(len(parts), 0, -1):  # the longest importable module prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            assert hasattr(obj, attr), f"{doc} names `{symbol}`: {'.'.join(parts[:i])} has no {attr!r}"
            obj = getattr(obj, attr)
        return
    pytest.fail(f"{doc} names `{symbol}`, which is no module of the repository")
