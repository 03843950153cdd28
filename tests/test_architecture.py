"""The arrows of docs/architecture.md, read from the source with ``ast`` (imports inside functions count).

Floors: the method library (``vice`` outside ``vice.launch``) <- the orchestration (``vice.launch`` and
the deprecated re-exports) and ``analysis`` beside it; ``benchmarks`` and ``tests`` sit on top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vice", "analysis", "benchmarks")
#: Old module paths kept as re-exports for one release: they belong to the orchestration.
#: The tracking's read side: what analysis may import of the orchestration (docs/architecture.md).
READ_SIDE = frozenset(
    {
        "vice.launch.tracking.client",
        "vice.launch.tracking.identity",
        "vice.launch.tracking.names",
        "vice.launch.tracking.params",
        "vice.launch.tracking.read",
    }
)
#: Modules over :data:`MAX_LINES`, each with its reason. Library entries are the library side's to split.
LONG_MODULES = {
    "analysis.tables": "one builder per paper table (1-6), each short; splitting would scatter the tables",
    "analysis.claims": "the paper's claims as data plus their test; one responsibility",
    "analysis.figures": "the three figures' data, table and plot",
    "vice.launch.tune.driver": "the driver's loop and its four Optuna transitions (ask, report, collect, reconcile)",
    "vice.data.views": "Algorithm 1 end to end (centre, boxes, crops, masking, mutual relabelling); photometric is its own",
    "vice.evaluate.run": "library side (issue 11)",
    "vice.data.labelled": "library side (issue 11)",
}
MAX_LINES = 400
#: UPPER_CASE names defined in more than one module on purpose (true coincidences): name -> modules.
SHARED_CONSTANTS = {
    # Two different files: a job's run dir lock (job.lock) and a study's driver lock (driver.lock).
    "LOCK_FILE": {"vice.launch.job", "vice.launch.tune.cli"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = modules()


def resolve(importer: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[importer].name == "__init__.py"
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports(name: str) -> Iterator[tuple[str, bool]]:
    """Project modules ``name`` imports, and whether at module level (True) or inside a function."""
    tree = ast.parse(MODULES[name].read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = resolve(name, node)
            targets = [
                f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names
            ]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, id(node) in top or _in_type_checking(tree, node)


def _in_type_checking(tree: ast.Module, node: ast.AST) -> bool:
    for block in tree.body:
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test):
            if any(node is inner for inner in ast.walk(block)):
                return True
    return False


EDGES = {name: sorted(set(imports(name))) for name in MODULES}


def floor(name: str) -> str:
    if name.startswith("vice.launch"):
        return "orchestration"
    if name.startswith("vice"):
        return "library"
    return name.split(".")[0]


def test_the_library_never_imports_the_orchestration_or_analysis() -> None:
    found = {
        (name, target)
        for name, targets in EDGES.items()
        if floor(name) == "library"
        for target, _ in targets
        if floor(target) in ("orchestration", "analysis")
    }
    assert found == set()


def test_analysis_imports_only_the_read_side_of_the_orchestration() -> None:
    found = {
        (name, target)
        for name, targets in EDGES.items()
        if floor(name) == "analysis"
        for target, _ in targets
        if floor(target) == "orchestration" and target not in READ_SIDE
    }
    assert found == set()


def test_the_read_side_imports_only_the_library_and_itself() -> None:
    found = {
        (name, target)
        for name in READ_SIDE
        for target, _ in EDGES[name]
        if floor(target) != "library" and target not in READ_SIDE
    }
    assert found == set()


def test_no_import_cycle_even_through_imports_inside_functions() -> None:
    graph = {name: {t for t, _ in targets} for name, targets in EDGES.items()}
    cycles: set[frozenset[str]] = set()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.add(frozenset(component))

    for name in sorted(graph):
        if name not in index:
            connect(name)
    assert cycles == set()


def test_each_upper_case_constant_is_defined_once() -> None:
    defined: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                for leaf in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(leaf, ast.Name) and leaf.id.isupper() and len(leaf.id) > 1:
                        defined.setdefault(leaf.id, set()).add(name)
    twice = {
        constant: where
        for constant, where in defined.items()
        if len(where) > 1 and where != SHARED_CONSTANTS.get(constant)
    }
    assert twice == {}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_stays_short_or_says_why(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES or name in LONG_MODULES, f"{name} has {lines} lines"


def test_the_allowlists_name_real_modules() -> None:
    assert set(LONG_MODULES) <= set(MODULES)
    assert READ_SIDE <= set(MODULES)
