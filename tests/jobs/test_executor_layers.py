"""The executors' modules import one way (issue 21 items 3 and 6).

* The port (``executor.py``) imports the core only: none of its implementations, so no circle
  executor <-> local <-> dask; ``factory.py`` is the one module that knows every implementation.
* Each executor keeps its two ends apart: the worker side (``local_worker``, ``dask_worker``: what runs
  in the spawned process or on the Dask worker) imports the core and the port only (``dask_worker``
  also ``pathmap``, which a worker needs to find the video), never the daemon side.

Static (the modules' import statements, function-level ones included) and dynamic (what importing a
worker module loads).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT

JOBS = PROJECT / "daemon" / "jobs"
WORKER_SIDE = {"local_worker": {"executor"}, "dask_worker": {"executor", "pathmap"}}
IMPLEMENTATIONS = {"local", "local_worker", "dask_executor", "dask_worker", "inline"}


def imported(module: Path) -> set[str]:
    """Every daemon module ``module`` imports (relative imports resolved), anywhere in it."""
    package = ["daemon", *module.parent.relative_to(PROJECT / "daemon").parts]
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            names = [name] if node.module else [f"{name}.{a.name}" for a in node.names]
            found.update(n for n in names if n.startswith("daemon"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("daemon"))
    return found


def jobs_modules(names: set[str]) -> set[str]:
    return {n.split(".")[2] for n in names if n.startswith("daemon.jobs.")}


def test_the_port_imports_none_of_its_implementations():
    deps = imported(JOBS / "executor.py")
    assert deps and all(d.startswith("daemon.core.") for d in deps), deps


def test_only_the_factory_knows_the_implementations():
    for module in JOBS.glob("*.py"):
        if module.stem in {"factory", *IMPLEMENTATIONS}:
            continue
        knows = jobs_modules(imported(module)) & IMPLEMENTATIONS
        assert not knows, f"{module.name} imports {knows}: go through the port (executor) and factory"
    assert jobs_modules(imported(JOBS / "factory.py")) >= {"local", "dask_executor"}
    assert "factory" not in jobs_modules(imported(JOBS / "local.py") | imported(JOBS / "dask_executor.py"))


@pytest.mark.parametrize("worker, allowed", WORKER_SIDE.items())
def test_worker_side_modules_import_the_core_and_the_port_only(worker, allowed):
    deps = imported(JOBS / f"{worker}.py")
    permitted = {f"daemon.jobs.{name}" for name in allowed}
    outside = {d for d in deps if not d.startswith("daemon.core.") and d not in permitted}
    assert not outside, f"{worker} imports {outside}"


@pytest.mark.parametrize("worker", sorted(WORKER_SIDE))
def test_importing_a_worker_module_loads_no_daemon_side_module(worker):
    code = ("import importlib, sys\n"
            f"importlib.import_module('daemon.jobs.{worker}')\n"
            "print(sorted(m for m in sys.modules if m.startswith('daemon.') and not m.startswith('daemon.core')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    loaded = set(ast.literal_eval(result.stdout))
    assert loaded <= {"daemon.jobs", *(f"daemon.jobs.{m}" for m in {worker, *WORKER_SIDE[worker]})}, loaded
