"""The package's layers: the models import nothing above them, no two modules of crossmae/ import each other
(directly or round a circle) when imported, and the core imports no downstream package (det, seg,
cls_transfer, tools) when imported. Imports inside functions are allowed: they run when called; but even
counting them, no two modules import each other, except the one pair named in MUTUAL_BY_DESIGN."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "crossmae"
DOWNSTREAM = ("det", "seg", "cls_transfer", "tools")
# what the models may sit on: the size table and blocks of the models themselves, and the stdlib-level helpers
BELOW_MODELS = ("crossmae.models", "crossmae.files", "crossmae.errors", "crossmae.masking")
# the Hub mixin's from_pretrained / model card call the I/O layer that imports the mixin (loading a release
# file needs the release-format mapping above the models)
MUTUAL_BY_DESIGN = {frozenset({"crossmae.models.hub_mixin", "crossmae.hub"})}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def executed_at_import(tree: ast.Module):
    """The statements that run when the module is imported: its body, class bodies and branches,
    not function bodies (nor ``if TYPE_CHECKING:`` blocks, which never run)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            todo.extend(getattr(node, field, None) or [])


def imported_modules(name: str, path: Path, in_functions: bool = False) -> set[str]:
    """Every module that importing ``name`` imports by its own statements (absolute names; a
    ``from pkg import x`` names ``pkg.x`` where that is a module of crossmae/, else ``pkg``); with
    ``in_functions``, also those its functions import when called."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree) if in_functions else executed_at_import(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[:len(name.split(".")) - node.level + is_package]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if target == "__future__":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
    return out


def import_graph(in_functions: bool = False) -> dict[str, set[str]]:
    return {name: {m for m in imported_modules(name, path, in_functions) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph, as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_known_imports():
    # the parser must find edges that are there, or the checks below check nothing
    graph = import_graph()
    assert "crossmae.models.hub_mixin" in graph["crossmae.models.encoder"]  # from .hub_mixin import HubMixin
    assert "crossmae.engine.checkpoint" in graph["crossmae.engine.loop"]  # from .checkpoint import (...)
    assert "crossmae.models.sizes" in graph["crossmae.models"]  # from .sizes import ... in an __init__
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_two_modules_import_each_other_even_in_functions():
    graph = import_graph(in_functions=True)
    assert "crossmae.analysis.loading" in graph["crossmae.hub"]  # imported inside load()
    pairs = {frozenset({a, b}) for a in graph for b in graph[a] if a in graph[b]}
    assert not pairs - MUTUAL_BY_DESIGN, sorted(sorted(p) for p in pairs - MUTUAL_BY_DESIGN)


def test_the_core_imports_no_downstream_package():
    offenders = [f"{name} imports {m}" for name, path in MODULES.items() for m in imported_modules(name, path)
                 if m.split(".")[0] in DOWNSTREAM]
    assert not offenders, offenders


def test_the_models_load_nothing_above_them():
    models = sorted(m for m in MODULES if m.startswith("crossmae.models."))  # dense_vit, hiera, naming, ...
    code = f"import sys, json, crossmae.models, {', '.join(models)}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    ours = [m for m in loaded if m.split(".")[0] in ("crossmae", *DOWNSTREAM)]
    assert "crossmae.models.dense_vit" in ours  # the list is the one the import made
    above = [m for m in ours if not any(m == b or m.startswith(b + ".") for b in BELOW_MODELS) and m != "crossmae"]
    assert not above, f"importing crossmae.models loads {above}"
