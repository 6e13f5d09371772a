"""``docs/reliability.md`` names, for every fault tried, the test that shows it: each named test exists
(a renamed or moved test would leave the table pointing at nothing), and no row is left a placeholder."""

from __future__ import annotations

import ast
import re

from tests.conftest import PROJECT

DOC = PROJECT / "docs" / "reliability.md"
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def defined_tests(path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_the_table_names_exists():
    text = DOC.read_text()
    named = NAMED.findall(text)
    assert len(named) > 100
    missing = [f"{file}::{name}" for file, name in named
               if not (PROJECT / file).is_file() or name not in defined_tests(PROJECT / file)]
    assert missing == []


def test_every_row_names_a_test_and_none_is_a_placeholder():
    rows = [line for line in DOC.read_text().splitlines()
            if line.startswith("| ") and not line.startswith(("| what was tried", "| place", "|---"))]
    rows = [r for r in rows if r.count("|") >= 4 and not r.startswith("| `")]  # the fault tables
    placeholders = [r[:80] for r in rows if "being finished" in r or not NAMED.search(r.rsplit("|", 2)[-2])]
    assert placeholders == []
