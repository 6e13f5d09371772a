"""Output sits above the core: nothing in ``daemon/core`` imports ``daemon.output`` (or matplotlib), and the output
package imports only the core and itself (never the job runner, the shell or the command line)."""

from __future__ import annotations

import ast
from pathlib import Path

import daemon

PACKAGE = Path(daemon.__file__).resolve().parent


def imported(path: Path) -> set[str]:
    """The absolute module names ``path`` imports (relative imports resolved against its package)."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py"))


def test_the_core_imports_no_output_and_no_plotting():
    assert modules("core")
    for path in modules("core"):
        bad = {n for n in imported(path) if n.startswith(("daemon.output", "daemon.plot", "matplotlib"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_output_imports_only_the_core_and_itself():
    assert modules("output")
    for path in modules("output"):
        ours = {n for n in imported(path) if n.startswith("daemon.")}
        bad = {n for n in ours if not n.startswith(("daemon.core", "daemon.output"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"
