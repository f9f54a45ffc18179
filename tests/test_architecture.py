"""ARCHITECTURE.md §8 names, per rule, the fast test that pins it: every test it names exists, and the ones in its
"fast test" column are in `make test-fast` (not marked slow, no slow fixture among their parameters)."""

from __future__ import annotations

import ast
import functools
import re

from tests.conftest import REPO, SLOW_FIXTURES

SECTION = "## 8. Testing: each rule and the fast test that pins it"
NAMED = re.compile(r"`((?:[\w/]+\.py)?)::(test_\w+)(?:\[[^\]`]*\])?`")  # a parameter id may follow


def _named(cell: str, last_path: list[str]) -> list[tuple[str, str]]:
    """(path, test) of each `path::name` or `::name` (the previous path's) in a table cell."""
    out = []
    for path, name in NAMED.findall(cell):
        if path:
            last_path[0] = path
        out.append((last_path[0], name))
    return out


@functools.cache  # a file is named in many rows: parsed once
def _tests(path: str) -> dict[str, ast.FunctionDef]:
    tree = ast.parse((REPO / "tests" / path).read_text())
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def _marked_slow(fn: ast.FunctionDef) -> bool:
    return any(ast.unparse(d) == "pytest.mark.slow" for d in fn.decorator_list)


def test_every_test_the_testing_table_names_exists_and_the_fast_ones_are_fast():
    text = (REPO / "ARCHITECTURE.md").read_text()
    assert SECTION in text
    rows = [line for line in text.split(SECTION, 1)[1].splitlines() if line.startswith("| ") and "::" in line]
    assert len(rows) >= 50
    fast_named = 0
    for row in rows:
        cells = row.strip("|").split(" | ")
        last = [""]
        fast = _named(cells[1], last)
        assert fast, f"no fast test for: {cells[0]}"
        for column, named in ((1, fast), (2, _named(cells[2], last) if len(cells) > 2 else [])):
            for path, name in named:
                found = _tests(path)
                assert name in found, f"{path}::{name} (ARCHITECTURE.md §8) does not exist"
                if column == 1:
                    fn = found[name]
                    slow_args = SLOW_FIXTURES & {a.arg for a in fn.args.args}
                    assert not _marked_slow(fn) and not slow_args, f"{path}::{name} is not a fast test"
                    fast_named += 1
    assert fast_named >= 100
