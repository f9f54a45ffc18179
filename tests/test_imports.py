"""The project's packages import one another without a cycle, and every one of them is under the import contracts.

The graph is grimp's (what import-linter checks the contracts on): every import of the packages `make lint` checks
(pyproject.toml `[tool.importlinter] root_packages`), those made inside functions or only for type checking too.
One cycle is by design: the twin's route registration (`sim/twin/server.py` registers the routes of its modules,
which name its `TwinApp` for their types). Any other cycle fails, but the one listed in KNOWN_CYCLES; and what runs
when a module is imported (type-checking imports left out) has no cycle at all."""

from __future__ import annotations

import ast
import sys

import grimp
import pytest

from tests.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
ROOT_PACKAGES = PYPROJECT["tool"]["importlinter"]["root_packages"]

# The twin's route registration: the server hands its app to the modules whose routes it registers (each with a
# `register(router, app)`) and to the drift that answers before and after them (`Drift.apply(app)`); each of them
# imports the server back for the app's type, under TYPE_CHECKING alone.
SERVER = "sim.twin.server"
TWIN = REPO / "sim" / "twin"
ROUTE_MODULES = {
    f"sim.twin.{path.stem}"
    for path in TWIN.glob("*.py")
    if any(isinstance(n, ast.FunctionDef) and n.name == "register" for n in ast.parse(path.read_text()).body)
} | {"sim.twin.drift"}

# Cycles known and let be (none: the Stage contract, pipeline/stage.py, sits below both the graph and the runner).
# A cycle not listed here, nor in the twin's route registration, fails.
KNOWN_CYCLES: list[set[str]] = []


def _cycles(imports: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module: each set of modules that import one another."""
    reach: dict[str, set[str]] = {}
    for start in imports:
        seen, todo = set(), [start]
        while todo:
            for nxt in imports.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    components: list[set[str]] = []
    for module in sorted(imports):
        component = {module} | {other for other in reach[module] if module in reach.get(other, ())}
        if len(component) > 1 and component not in components:
            components.append(component)
    return components


def _graph(type_checking: bool) -> dict[str, set[str]]:
    graph = grimp.build_graph(*ROOT_PACKAGES, exclude_type_checking_imports=not type_checking, cache_dir=None)
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


EVERY_IMPORT = _graph(type_checking=True)  # in functions and under TYPE_CHECKING too
AT_IMPORT_TIME = _graph(type_checking=False)  # what runs when a module is imported


def _route_registration(component: set[str], every: dict[str, set[str]], at_import: dict[str, set[str]]) -> bool:
    """A cycle of the twin's server and modules of the twin alone, closed only by the route modules' imports of the
    server for types: without those, no two of its modules import each other."""
    if SERVER not in component or not all(m.startswith("sim.twin.") for m in component):
        return False
    typing_only = {m for m in ROUTE_MODULES & component if SERVER not in at_import[m]}
    rest = {m: {n for n in every[m] if n in component and not (n == SERVER and m in typing_only)} for m in component}
    return not _cycles(rest)


def _new_cycles(every: dict[str, set[str]], at_import: dict[str, set[str]]) -> list[list[str]]:
    return [
        sorted(c) for c in _cycles(every) if not _route_registration(c, every, at_import) and c not in KNOWN_CYCLES
    ]


def test_no_import_cycle_but_the_twins_route_registration():
    assert {m.split(".")[0] for m in EVERY_IMPORT} == set(ROOT_PACKAGES)
    assert len(ROUTE_MODULES) >= 6 and EVERY_IMPORT[SERVER] >= ROUTE_MODULES
    new = _new_cycles(EVERY_IMPORT, AT_IMPORT_TIME)
    assert not new, f"modules that import one another (break the cycle, or move what both need lower): {new}"


def test_at_import_time_no_module_imports_itself_back():
    """What runs when a module is imported (type-checking imports left out) has no cycle at all: not even the twin's
    route registration, nor the known cycle."""
    assert _cycles(AT_IMPORT_TIME) == []


PLANTED = [  # (importer, imported, for types alone)
    ("core.hashing", "pipeline.build", False),  # core importing the top
    ("pipeline.sources.demo_volume", "sim.demo_world.world", False),  # a source importing the simulator
    ("pipeline.runner", "pipeline.stages.common", True),  # the work model naming a stage's types
    ("sim.twin.cache", "sim.twin.info", False),  # inside the twin, a cycle the server has no part in
    ("sim.twin.meshing", SERVER, False),  # a route module importing the server when it is imported
    ("sim.twin.limits", SERVER, True),  # a module that registers no route importing the server back
]


@pytest.mark.parametrize(("importer", "imported", "typing_only"), PLANTED)
def test_a_new_cycle_is_found(importer: str, imported: str, typing_only: bool):
    every = {module: set(found) for module, found in EVERY_IMPORT.items()}
    at_import = {module: set(found) for module, found in AT_IMPORT_TIME.items()}
    every[importer].add(imported)
    if not typing_only:
        at_import[importer].add(imported)
    assert _new_cycles(every, at_import)


def test_every_package_is_under_the_import_contracts():
    """A package at the top of the repository is installed (setuptools) and checked by `make lint` and here."""
    on_disk = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "benchmarks"}
    installed = {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert on_disk == installed == set(ROOT_PACKAGES)


def test_the_work_model_imports_no_source():
    """The Stage contract, the graph and the runner merge what a unit met as plain data: none imports a source."""
    for module in ("pipeline.stage", "pipeline.graph", "pipeline.runner"):
        sources = {m for m in EVERY_IMPORT[module] if m.startswith("pipeline.sources")}
        assert not sources, (module, sources)


def test_only_the_runner_writes_a_marker():
    """Every unit of work is sealed by the runner (`runner.seal`): no other module of the project imports the
    marker writer, so none can say "done" its own way (issue 26: the bank's roots, its selection and the release
    had hand-written markers)."""
    writers = set()
    for package in ROOT_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
                if any(n.split(".")[-1] == "write_marker" for n in names):
                    writers.add(str(path.relative_to(REPO)))
    assert writers == {"pipeline/runner.py"}
