"""Architecture measurements of the package, read from its source with ``ast`` (nothing is imported but the loss registry).

Five sections, each ending with a count so that a change can quote "before/after":

1. the longest functions and methods (lines, qualified name, file);
2. comparisons of an expression against a training loss name outside ``losses/`` (``==``, ``!=``,
   ``in``, ``not in``, also membership in a literal tuple/list/set of names): the loss registry
   should be the only place that knows them;
3. import cycles between the package's modules, first with module-level imports only, then those
   that need a function-level (deferred) import;
4. imports of another subpackage's private module (``..attacks._base``) or private name;
5. imports against the layer order ``data, models, capture, top-level modules (0) -> losses (1) ->
   training, attacks, metrics (2) -> experiments (3) -> reports (4) -> cli (5)``; imports between
   subpackages on the same floor are listed apart as "sideways".

    python3 benchmarks/architecture.py [--src src/deepmargin] [--top 10]

Standard library only; the other functions here (``scan``, ``import_cycles`` ...) can be reused by tests.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Loss names used when the package cannot be imported (the built-ins and the registered ones).
FALLBACK_LOSS_NAMES = ("ce", "hinge", "margin", "matyasko", "input_gradient", "kesidis", "vat")
BUILTIN_LOSS_NAMES = ("ce", "hinge", "margin")

#: Floor of each subpackage; a top-level module (``io.py``) is on floor 0.
FLOORS = {
    "data": 0, "models": 0, "capture": 0,
    "losses": 1,
    "training": 2, "attacks": 2, "metrics": 2,
    "experiments": 3,
    "reports": 4,
    "cli": 5,
}
#: The package's own entry points sit above every floor.
ENTRY_FLOOR = 6


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` imports ``target`` (a module of the package)."""

    source: str
    target: str
    names: tuple[str, ...]
    path: str
    line: int
    level: str  # "module" or "function"


@dataclass
class Module:
    name: str  # dotted, e.g. "deepmargin.attacks.deepfool"
    path: Path
    rel: str  # path relative to the source root's parent, for printing
    tree: ast.Module
    is_package: bool


# --------------------------------------------------------------------------- reading the package


def scan(src: Path) -> dict[str, Module]:
    """Parse every ``.py`` file under ``src`` (the package directory) into :class:`Module` s."""
    src = src.resolve()
    package = src.name
    modules = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join([package, *parts])
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        modules[name] = Module(name, path, str(path.relative_to(src.parent)), tree, is_package)
    return modules


def _walk_with_scope(tree: ast.AST) -> Iterable[tuple[ast.AST, bool, bool]]:
    """Yield ``(node, inside_function, under_type_checking)`` for every node of ``tree``."""
    stack: list[tuple[ast.AST, bool, bool]] = [(tree, False, False)]
    while stack:
        node, in_func, typing_only = stack.pop()
        yield node, in_func, typing_only
        child_func = in_func or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            child_typing = typing_only
            if isinstance(node, ast.If) and child in node.body and _is_type_checking(node.test):
                child_typing = True
            stack.append((child, child_func, child_typing))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    """The absolute dotted name ``from ... import`` refers to (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(modules: dict[str, Module]) -> list[Import]:
    """Every import of one of the package's modules by another (type-checking-only imports skipped)."""
    found = []
    for module in modules.values():
        for node, in_func, typing_only in _walk_with_scope(module.tree):
            if typing_only:
                continue
            level = "function" if in_func else "module"
            line = getattr(node, "lineno", 0)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _innermost(alias.name, modules)
                    if target:
                        found.append(Import(module.name, target, (), module.rel, line, level))
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, node)
                names: list[str] = []
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:  # "from . import minnorm": the submodule itself
                        found.append(Import(module.name, sub, (), module.rel, line, level))
                    elif base in modules:
                        names.append(alias.name)
                if names:  # one edge per statement, with every name it takes
                    found.append(Import(module.name, base, tuple(names), module.rel, line, level))
    return [i for i in found if i.target != i.source]


def _innermost(dotted: str, modules: dict[str, Module]) -> str | None:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


# --------------------------------------------------------------------------- 1. function lengths


def function_lengths(modules: dict[str, Module]) -> list[tuple[int, str, str, int]]:
    """``(lines, qualified name, file, first line)`` of every function and method, longest first."""
    rows = []

    def visit(node: ast.AST, prefix: str, module: Module) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = f"{prefix}{child.name}"
                rows.append((child.end_lineno - child.lineno + 1, qual, module.rel, child.lineno))
                visit(child, f"{qual}.<locals>.", module)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", module)
            else:
                visit(child, prefix, module)

    for module in modules.values():
        visit(module.tree, "", module)
    return sorted(rows, key=lambda r: (-r[0], r[2], r[3]))


# --------------------------------------------------------------------------- 2. loss-name comparisons


def loss_names() -> tuple[tuple[str, ...], str]:
    """The training loss names (built-ins and registered) and where they were read from."""
    try:
        from deepmargin.losses import LOSS_REGISTRY
    except Exception as exc:  # noqa: BLE001 - any failure means: use the fixed list
        return FALLBACK_LOSS_NAMES, f"fixed list ({type(exc).__name__}: {exc})"
    return tuple(dict.fromkeys([*BUILTIN_LOSS_NAMES, *LOSS_REGISTRY])), "deepmargin.losses.LOSS_REGISTRY + built-ins"


def _literal_names(node: ast.expr, names: frozenset[str]) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value in names]
    return []


def loss_name_comparisons(modules: dict[str, Module], names: Iterable[str], skip: str) -> list[tuple[str, int, str]]:
    """``(file, line, names)`` of each comparison against a loss name outside subpackage ``skip``."""
    names = frozenset(names)
    ops = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
    rows = []
    for module in modules.values():
        if module.name.split(".")[1:2] == [skip]:
            continue
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.Compare):
                continue
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                if isinstance(op, ops):
                    hit = _literal_names(left, names) + _literal_names(right, names)
                    if hit:
                        rows.append((module.rel, node.lineno, ", ".join(sorted(set(hit)))))
                left = right
    return sorted(rows)


# --------------------------------------------------------------------------- 3. import cycles


def _strong_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one node (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))
    return sorted(result)


def _elementary_cycles(graph: dict[str, set[str]], nodes: list[str], limit: int) -> list[tuple[str, ...]]:
    """Elementary cycles inside one component, each starting at its smallest node (at most ``limit``)."""
    members = set(nodes)
    cycles: list[tuple[str, ...]] = []
    for start in sorted(members):
        path = [start]

        def extend(node: str) -> None:
            for child in sorted(graph.get(node, ())):
                if len(cycles) >= limit:
                    return
                if child == start:
                    cycles.append(tuple(path))
                elif child in members and child > start and child not in path:
                    path.append(child)
                    extend(child)
                    path.pop()

        extend(start)
    return cycles


def import_cycles(edges: list[Import], *, limit: int = 50) -> dict[str, list[tuple[str, ...]]]:
    """Cycles of the import graph: ``"module"`` with module-level imports only, ``"function"`` those
    that exist only once function-level (deferred) imports are added."""
    out: dict[str, list[tuple[str, ...]]] = {}
    seen: set[tuple[str, ...]] = set()
    for level, allowed in (("module", {"module"}), ("function", {"module", "function"})):
        graph: dict[str, set[str]] = {}
        for edge in edges:
            if edge.level in allowed:
                graph.setdefault(edge.source, set()).add(edge.target)
        cycles = []
        for component in _strong_components(graph):
            for cycle in _elementary_cycles(graph, component, limit):
                if cycle not in seen:
                    seen.add(cycle)
                    cycles.append(cycle)
        out[level] = cycles
    return out


# --------------------------------------------------------------------------- 4./5. privacy and layers


def subpackage(module: str) -> str:
    """``deepmargin.attacks.deepfool`` -> ``attacks``; a top-level module is its own unit (``io``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def floor(module: str, root_floor: int = 0) -> int | None:
    """The layer floor of a module (None: a subpackage not in :data:`FLOORS`).

    The package root (its ``__init__``, a facade of re-exports) is on ``root_floor``, the highest
    floor it imports; ``__main__`` is above every floor.
    """
    parts = module.split(".")
    if len(parts) == 1:
        return root_floor
    if parts[1] == "__main__":
        return ENTRY_FLOOR
    if parts[1] in FLOORS:
        return FLOORS[parts[1]]
    return 0 if len(parts) == 2 else None


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def private_imports(edges: list[Import]) -> list[Import]:
    """Imports of another subpackage's private module or private name."""
    rows = []
    for edge in edges:
        if subpackage(edge.source) == subpackage(edge.target):
            continue
        if any(_private(p) for p in edge.target.split(".")[1:]) or any(_private(n) for n in edge.names):
            rows.append(edge)
    return rows


def layer_imports(edges: list[Import]) -> tuple[list[Import], list[Import], list[Import]]:
    """``(upward, sideways, unlayered)``: imports of a higher floor, of a sibling on the same floor,
    and those touching a subpackage with no floor."""
    up, side, unknown = [], [], []
    root = min((e.source for e in edges), key=len, default="").split(".")[0]
    root_floor = max((floor(e.target) or 0 for e in edges if e.source == root and e.target != root), default=0)
    for edge in edges:
        a, b = subpackage(edge.source), subpackage(edge.target)
        if a == b or edge.source == root:  # the root re-exports, it is not a layer
            continue
        fa, fb = floor(edge.source, root_floor), floor(edge.target, root_floor)
        if fa is None or fb is None:
            unknown.append(edge)
        elif fb > fa:
            up.append(edge)
        elif fb == fa and fa != ENTRY_FLOOR:
            side.append(edge)
    return up, side, unknown


# --------------------------------------------------------------------------- report


def _describe(edge: Import) -> str:
    what = f"{edge.target}" + (f" ({', '.join(edge.names)})" if edge.names else "")
    return f"{edge.path}:{edge.line} [{edge.level}] {edge.source} -> {what}"


def _floor_label(module: str) -> str:
    if "." not in module:
        return "<package root>"
    return f"{subpackage(module)}@{floor(module)}"


def report(src: Path, top: int = 10) -> str:
    modules = scan(src)
    edges = imports(modules)
    lines: list[str] = [f"Architecture of {src} ({len(modules)} modules, {len(edges)} internal import edges)", ""]

    lengths = function_lengths(modules)
    lines.append(f"1. Longest functions/methods (top {top} of {len(lengths)})")
    for n, qual, rel, line in lengths[:top]:
        lines.append(f"   {n:5d}  {qual}  ({rel}:{line})")
    lines.append(f"   count: functions >= 100 lines: {sum(1 for r in lengths if r[0] >= 100)}; "
                 f">= 50 lines: {sum(1 for r in lengths if r[0] >= 50)}; longest: {lengths[0][0] if lengths else 0}")
    lines.append("")

    names, origin = loss_names()
    compares = loss_name_comparisons(modules, names, skip="losses")
    lines.append(f"2. Loss-name string comparisons outside losses/ (names from {origin}: {', '.join(names)})")
    for rel, line, hit in compares:
        lines.append(f"   {rel}:{line}  {hit}")
    lines.append(f"   count: {len(compares)}")
    lines.append("")

    cycles = import_cycles(edges)
    lines.append("3. Import cycles")
    for level, title in (("module", "module-level imports only"), ("function", "needing a function-level import")):
        lines.append(f"   {title}: {len(cycles[level])}")
        for cycle in cycles[level]:
            lines.append(f"     {' -> '.join(cycle + cycle[:1])}")
    lines.append(f"   count: module-level {len(cycles['module'])}, function-level {len(cycles['function'])}")
    lines.append("")

    private = private_imports(edges)
    lines.append("4. Imports of another subpackage's private module or name")
    for edge in private:
        lines.append(f"   {_describe(edge)}")
    lines.append(f"   count: {len(private)}")
    lines.append("")

    up, side, unknown = layer_imports(edges)
    lines.append("5. Layer order (data, models, capture, top-level modules 0 -> losses 1 -> training, attacks, "
                 "metrics 2 -> experiments 3 -> reports 4 -> cli 5)")
    lines.append(f"   violations (import of a higher floor): {len(up)}")
    for edge in up:
        lines.append(f"     {_describe(edge)}  [{_floor_label(edge.source)} -> {_floor_label(edge.target)}]")
    lines.append(f"   sideways (same floor, another subpackage): {len(side)}")
    for edge in side:
        lines.append(f"     {_describe(edge)}  [{_floor_label(edge.source)} -> {_floor_label(edge.target)}]")
    if unknown:
        lines.append(f"   unlayered (subpackage without a floor): {len(unknown)}")
        for edge in unknown:
            lines.append(f"     {_describe(edge)}")
    lines.append(f"   count: violations {len(up)} (module-level {sum(e.level == 'module' for e in up)}, "
                 f"function-level {sum(e.level == 'function' for e in up)}), sideways {len(side)}, "
                 f"unlayered {len(unknown)}")
    lines.append("")

    lines.append("Summary")
    lines.append(f"   longest function: {lengths[0][0] if lengths else 0} lines; functions >= 100 lines: "
                 f"{sum(1 for r in lengths if r[0] >= 100)}")
    lines.append(f"   loss-name comparisons outside losses/: {len(compares)}")
    lines.append(f"   import cycles: module-level {len(cycles['module'])}, function-level {len(cycles['function'])}")
    lines.append(f"   private cross-subpackage imports: {len(private)}")
    lines.append(f"   layer violations: {len(up)}; sideways imports: {len(side)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent / "src" / "deepmargin"
    parser.add_argument("--src", type=Path, default=default, help="the package directory (default: %(default)s)")
    parser.add_argument("--top", type=int, default=10, help="how many of the longest functions to list")
    args = parser.parse_args(argv)
    if not (args.src / "__init__.py").is_file():
        parser.error(f"--src must be a package directory holding __init__.py. Got {str(args.src)!r} instead.")
    print(report(args.src, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
