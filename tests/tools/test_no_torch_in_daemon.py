"""The daemon, its workers and the CLI never import PyTorch, and a missing model set tells the user the one
command that fixes it."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import daemon.core
import daemon.shell
from tests.tools.conftest import aud, isolated_env


def test_daemon_core_shell_and_cli_do_not_import_torch():
    modules = ["daemon.cli"] + [f"{pkg.__name__}.{m.name}" for pkg in (daemon.core, daemon.shell)
                                for m in pkgutil.iter_modules(pkg.__path__)]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert len(modules) > 20  # every module of both packages was imported


def first_run_message(stderr: str, directory: Path) -> None:
    message = " ".join(stderr.split())
    assert f"aud models fetch --accept-license --to {directory}" in message
    assert len(stderr.strip().splitlines()) <= 3  # one message (wrapped at most by the terminal width)


def test_first_run_without_models_names_the_fetch_command(tmp_path, synthetic_video):
    env = isolated_env(tmp_path)
    missing, empty = tmp_path / "no-models", tmp_path / "empty-models"
    empty.mkdir()
    for directory in (missing, empty):
        check = aud(["models", "check", "--models", str(directory)], env, timeout=120)
        assert check.returncode == 2
        first_run_message(check.stderr, directory)
        extract = aud(["extract", str(synthetic_video(frames=2)), "--models", str(directory)], env, timeout=120)
        assert extract.returncode == 2
        first_run_message(extract.stderr, directory)
    run = aud(["run", "--models", str(empty), "--inbox", str(tmp_path / "in"), "--outbox", str(tmp_path / "out"),
               "--state", str(tmp_path / "state")], env, timeout=120)
    assert run.returncode == 2
    first_run_message(run.stderr, empty)
