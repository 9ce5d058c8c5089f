"""The package's import graph, read from the source with ``ast``: no import cycles, no import of a higher layer.

Both module-level and function-level (deferred) imports count: a deferred import hides a cycle
from the interpreter, not from the reader. The layers, lowest first::

    data, models, capture, top-level modules (io.py, checks.py)   0
    losses                                                        1
    training, attacks, metrics                                    2
    experiments                                                   3
    reports                                                       4
    cli                                                           5

A module may import from its own subpackage and from lower floors. ``benchmarks/architecture.py``
prints the same analysis (and more) for a whole tree.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import deepmargin

PACKAGE = Path(deepmargin.__file__).resolve().parent

FLOORS = {
    "data": 0, "models": 0, "capture": 0,
    "losses": 1,
    "training": 2, "attacks": 2, "metrics": 2,
    "experiments": 3,
    "reports": 4,
    "cli": 5,
}

#: Imports of a higher floor that exist today, in files other work is moving; none may be added.
#: (source module, target subpackage).
KNOWN_UPWARD = {
    ("deepmargin.experiments.demo", "reports"),
    ("deepmargin.losses.logit_margin", "training"),
}


def _module_names(src: Path) -> dict[str, bool]:
    """Dotted name of every module under the package directory ``src`` -> whether it is a package."""
    names = {}
    for path in src.rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        names[".".join([src.name, *(parts[:-1] if is_package else parts)])] = is_package
    return names


def _imports(src: Path) -> list[tuple[str, str, int, bool]]:
    """``(importer, imported module, line, inside a function)`` for every import between the package's modules."""
    names = _module_names(src)
    edges = []
    for module, is_package in names.items():
        rel = module.split(".")[1:]
        path = src.joinpath(*rel, "__init__.py") if is_package else src.joinpath(*rel[:-1], f"{rel[-1]}.py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        deferred = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    package = package[: len(package) - node.level + 1]
                    base = ".".join(package + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
            for target in dict.fromkeys(targets):
                while target and target not in names:  # "import pkg.mod.attr" -> "pkg.mod"
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges.append((module, target, node.lineno, id(node) in deferred))
    return edges


def _cycles(edges: list[tuple[str, str, int, bool]]) -> list[list[str]]:
    """One cycle per back edge found by a depth-first search (empty: the graph is acyclic)."""
    graph: dict[str, set[str]] = {}
    for source, target, _, _ in edges:
        graph.setdefault(source, set()).add(target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    found = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                found.append(path[path.index(child):] + [child])
            elif child not in state:
                visit(child)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def _floor(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return None  # the package root re-exports, __main__ is an entry point: neither is a layer
    return FLOORS.get(parts[1], 0 if len(parts) == 2 else None)


def _upward(edges: list[tuple[str, str, int, bool]]) -> list[tuple[str, str, int, bool]]:
    out = []
    for edge in edges:
        source, target = edge[0], edge[1]
        low, high = _floor(source), _floor(target)
        if low is not None and high is not None and high > low and source.split(".")[1] != target.split(".")[1]:
            out.append(edge)
    return out


def _describe(edge: tuple[str, str, int, bool]) -> str:
    return f"{edge[0]}:{edge[2]} imports {edge[1]}" + (" (in a function)" if edge[3] else "")


# --------------------------------------------------------------------------- the analysis itself


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_cycles_through_relative_and_function_level_imports_are_found(tmp_path):
    src = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/attacks/__init__.py": "from .a import A\n",
        "pkg/attacks/a.py": "from .b import B\nA = 1\n",
        "pkg/attacks/b.py": "def f():\n    from .a import A\n    return A\nB = 2\n",
        "pkg/attacks/c.py": "from . import a\n",
    })
    cycles = _cycles(_imports(src))
    assert cycles == [["pkg.attacks.a", "pkg.attacks.b", "pkg.attacks.a"]]
    assert [e[3] for e in _imports(src) if e[0] == "pkg.attacks.b"] == [True]
    assert ("pkg.attacks.c", "pkg.attacks.a") in {e[:2] for e in _imports(src)}


def test_an_import_of_a_higher_floor_is_found(tmp_path):
    src = _write(tmp_path, {
        "pkg/__init__.py": "from .cli import main\n",
        "pkg/cli/__init__.py": "from ..losses import L\nmain = 1\n",
        "pkg/losses/__init__.py": "def f():\n    from ..training.loop import T\nL = 1\n",
        "pkg/training/__init__.py": "",
        "pkg/training/loop.py": "from ..metrics.margins import M\nT = 1\n",
        "pkg/metrics/__init__.py": "",
        "pkg/metrics/margins.py": "from pkg.io import read\nM = 1\n",
        "pkg/io.py": "read = 1\n",
    })
    upward = _upward(_imports(src))
    assert [(e[0], e[1], e[3]) for e in upward] == [("pkg.losses", "pkg.training.loop", True)]


# --------------------------------------------------------------------------- the package


def test_the_package_has_no_import_cycles():
    edges = _imports(PACKAGE)
    assert len(edges) > 100  # the whole package was read
    cycles = _cycles(edges)
    assert not cycles, "import cycles (module- or function-level):\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_a_higher_layer():
    upward = _upward(_imports(PACKAGE))
    new = [e for e in upward if (e[0], e[1].split(".")[1]) not in KNOWN_UPWARD]
    assert not new, "imports of a higher layer:\n" + "\n".join(_describe(e) for e in new)


@pytest.mark.parametrize("module", ["deepmargin.checks", "deepmargin.capture.modes", "deepmargin.models.structure"])
def test_the_floor_helpers_import_nothing_above_them(module):
    imported = {e[1] for e in _imports(PACKAGE) if e[0] == module}
    assert all(_floor(t) == 0 for t in imported), imported
