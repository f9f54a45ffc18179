"""No code path sets the process environment (issue 26 item 7): tokens and configs are handed explicitly (the twin
build gives its token in `BuildContext.cave_token` and its config as the work dir's own; a subprocess gets an `env`
of its own). A variable set in `os.environ` outlives what set it and reaches every later client of the process (a
token meant for the twin sent to a real server), and a worker process started elsewhere never sees it. The tests
themselves may set it (pytest's monkeypatch undoes it): only the product, the simulator and the benchmarks are
read."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = ("pipeline", "core", "sim", "config", "render", "split_assign", "shard", "benchmarks")
_MUTATORS = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}


def _is_environ(node: ast.AST) -> bool:
    """`os.environ` or a bare `environ` (imported from os)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def environment_writes(source: str) -> list[int]:
    """Lines of `source` that set or delete a variable of the process environment: `os.environ[k] = v` (and
    `del`, augmented assignment), `os.environ.update / setdefault / pop / ...`, `os.putenv`, `os.unsetenv`, any
    `setenv` (pytest's, outside the tests)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        if any(isinstance(t, ast.Subscript) and _is_environ(t.value) for t in targets):
            lines.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name in ("putenv", "unsetenv", "setenv") or (name in _MUTATORS and _is_environ(node.func.value)):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_the_check_finds_every_way_of_setting_the_environment():
    planted = (
        "import os\nfrom os import environ\n"
        "os.environ['CAVE_TOKEN'] = 't'\n"
        "environ['A'] = 'b'\n"
        "os.environ.update(A='b')\n"
        "os.environ.setdefault('A', 'b')\n"
        "os.putenv('A', 'b')\n"
        "del os.environ['A']\n"
        "monkeypatch.setenv('A', 'b')\n"
        "x = os.environ['A']\n"  # reading is not setting
        "env = {**os.environ, 'A': 'b'}\n"  # a subprocess's own env is not this process's
        "y = os.environ.get('A')\n"
    )
    assert environment_writes(planted) == [3, 4, 5, 6, 7, 8, 9]


def test_no_code_path_sets_the_environment():
    """The product, the simulator and the benchmarks (bench_latency once set CAVE_TOKEN) never set it."""
    found = []
    for package in CODE:
        for path in sorted((REPO / package).rglob("*.py")):
            for line in environment_writes(path.read_text()):
                found.append(f"{path.relative_to(REPO)}:{line}")
    assert found == [], f"code that sets the process environment: {found}"
