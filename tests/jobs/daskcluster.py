"""A real Dask cluster on 127.0.0.1 for tests: a ``dask scheduler`` and ``dask worker`` processes started
from this virtualenv's ``dask`` command.

A ``dask worker`` exits when its scheduler goes away (distributed has no worker reconnection), so each
worker here runs under a small supervisor thread that starts it again when it exits, as systemd's
``Restart=always`` would on a lab machine. Every process is its own process group, killed with its
children when the cluster stops.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

DASK = Path(sys.executable).with_name("dask")
ALLOWED_FAILURES = 1  # a shard whose worker dies is rescheduled once, then reported (KilledWorker)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process group (a nanny closes its worker), SIGKILL it if it outlives ``grace``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # and any child the nanny left behind
    except ProcessLookupError:
        pass
    proc.wait()


class SupervisedWorker:
    """One ``dask worker`` process, started again whenever it exits, until ``stop``."""

    def __init__(self, address: str, log: Path, env: dict[str, str], wrapper: tuple[str, ...] = ()):
        self.command = [*wrapper, str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                        "--death-timeout", "120", "--local-directory", str(log.parent / "dask-scratch")]
        self.log, self.env = log, env
        self.starts = 0
        self._stopping = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                with open(self.log, "ab") as out:
                    self._proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                                  env=self.env, start_new_session=True)
                self.starts += 1
            self._proc.wait()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            _kill_group(proc)
        self._thread.join(timeout=30)


class Cluster:
    """A scheduler on ``port`` (a free one by default) and ``workers`` supervised workers, each started
    through ``wrapper`` when given (a command that ends by exec-ing its arguments, e.g. ``unshare``)."""

    def __init__(self, directory: Path, workers: int = 2, port: int | None = None, wrapper: tuple[str, ...] = ()):
        self.directory = directory
        self.port = port or free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(ALLOWED_FAILURES),
                    "OMP_NUM_THREADS": "1"}
        self.scheduler: subprocess.Popen | None = None
        self.start_scheduler()
        self.workers = [SupervisedWorker(self.address, directory / f"worker{i}.log", self.env, wrapper)
                        for i in range(workers)]

    def start_scheduler(self) -> None:
        with open(self.directory / "scheduler.log", "ab") as out:
            self.scheduler = subprocess.Popen(
                [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)

    def stop_scheduler(self) -> None:
        assert self.scheduler is not None
        _kill_group(self.scheduler)

    def logs(self) -> str:
        """The tail of every log, for assertion messages."""
        parts = []
        for path in sorted(self.directory.glob("*.log")):
            parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-25:]))
        return "\n".join(parts)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.scheduler is not None:
            _kill_group(self.scheduler)
