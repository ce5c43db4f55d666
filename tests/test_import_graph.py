"""The layers import downwards only, and no modules import each other in a circle.

Every module of main.py, api/ and services/ is parsed (ast, nothing is imported) and each import
it can run becomes an edge: top-level imports and the deferred ones inside functions alike, since
a deferred import hides a circle, it does not remove it. Imports under `if TYPE_CHECKING:` are left
out: they never run, so they cannot take part in an import-time circle. An edge goes to the module
named (`from services.storage import calls` names services.storage.calls), not to the packages above it.

    main.py                  the app factory and the command line: may import anything
    api/                     the HTTP and WebSocket edges: may import services/
    services/                everything behind: never api/ or main
    services/storage/        the lowest layer: never the orchestrator, the simulator or api/

KNOWN_CYCLES and KNOWN_UPWARD hold the only tolerated exceptions, each being fixed; delete an entry
once its fix lands (test_known_exceptions_still_exist says when).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "main.py", *sorted((ROOT / "api").rglob("*.py")), *sorted((ROOT / "services").rglob("*.py"))]

# (importer prefix, forbidden prefixes): a module under the first may not import one under the second.
LAYERS = [
    ("services.storage", ("services.orchestrator", "services.simulator", "api")),
    ("services", ("api", "main")),
]

# Circles still being taken apart, each as its modules in import order.
KNOWN_CYCLES: set[tuple[str, ...]] = set()
# Upward imports still being removed: (importer, imported).
KNOWN_UPWARD: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(path: Path) -> str:
    """The package a relative import in this file starts from."""
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_that_run(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under `node`, wherever it is, except in the body of `if TYPE_CHECKING:`."""
    if isinstance(node, ast.If) and _type_checking(node.test):
        children: list[ast.AST] = list(node.orelse)
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from imports_that_run(child)


def project_module(name: str, modules: set[str]) -> str | None:
    """The project module an import of `name` runs: the longest known prefix (None: not ours)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    """Each project module and the project modules it imports."""
    modules = {module_name(path) for path in SOURCES}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for path in SOURCES:
        importer = module_name(path)
        for node in imports_that_run(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    package = package_of(path).split(".")
                    anchor = ".".join(package[:len(package) - node.level + 1])
                    base = f"{anchor}.{base}" if base else anchor
                names = [f"{base}.{alias.name}" for alias in node.names]
            for name in names:
                imported = project_module(name, modules)
                if imported is not None and imported != importer:
                    graph[importer].add(imported)
    return graph


def knots(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def a_cycle(graph: dict[str, set[str]], knot: set[str]) -> tuple[str, ...]:
    """The shortest circle through the knot's first module, in import order."""
    start = min(knot)
    paths: dict[str, tuple[str, ...]] = {start: (start,)}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & knot):
                if target == start:
                    return paths[node]
                if target not in paths:
                    paths[target] = (*paths[node], target)
                    following.append(target)
        frontier = following
    raise AssertionError(f"{sorted(knot)} holds no circle through {start}")


def shown(cycle: tuple[str, ...]) -> str:
    return " -> ".join((*cycle, cycle[0]))


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    def under(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    return {(importer, imported) for importer, targets in graph.items() for imported in targets
            for low_layer, forbidden in LAYERS if under(importer, low_layer)
            and any(under(imported, high) for high in forbidden)}


def test_no_module_imports_itself_in_a_circle():
    graph = import_graph()
    known = {frozenset(cycle) for cycle in KNOWN_CYCLES}
    lines = []
    for knot in knots(graph):
        if frozenset(knot) in known:
            continue
        cycle = a_cycle(graph, knot)
        more = f"   (all in this knot: {', '.join(sorted(knot))})" if len(knot) > len(cycle) else ""
        lines.append(f"  {shown(cycle)}{more}")
    assert not lines, "import circles (break them, e.g. pass the dependency in):\n" + "\n".join(lines)


def test_no_layer_imports_upwards():
    upward = sorted(upward_imports(import_graph()) - KNOWN_UPWARD)
    message = "\n".join(f"  {importer} imports {imported}" for importer, imported in upward)
    assert not upward, f"upward imports (services/ never imports api/ or main; storage is the lowest):\n{message}"


def test_known_exceptions_still_exist():
    graph = import_graph()
    present = {frozenset(knot) for knot in knots(graph)}
    fixed = [shown(cycle) for cycle in sorted(KNOWN_CYCLES) if frozenset(cycle) not in present]
    fixed += [f"{a} imports {b}" for a, b in sorted(KNOWN_UPWARD - upward_imports(graph))]
    assert not fixed, "fixed, so delete from KNOWN_CYCLES / KNOWN_UPWARD:\n  " + "\n  ".join(fixed)


def test_the_graph_sees_deferred_imports_and_skips_type_checking_ones():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
                     "def f():\n    import c\n")
    seen = [alias.name for node in imports_that_run(tree) for alias in node.names]
    assert seen == ["TYPE_CHECKING", "b", "c"]
