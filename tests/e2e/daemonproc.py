"""A real `aud run` subprocess on temporary directories, and a subscriber that records its events."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.conftest import SHARED

MODELS = SHARED / "models" / "openface3"


class Subscriber:
    """Reads the daemon's JSON Lines events in a thread; tests wait on them with ``wait_for``."""

    def __init__(self, socket_path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(socket_path))
        self.sock.sendall(b'{"type": "subscribe", "id": 1}\n')
        self.events: list[dict] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with self.sock.makefile("rb") as f:
            for line in f:
                self._queue.put(json.loads(line))
        self._queue.put(None)

    def wait_for(self, predicate, timeout: float = 300.0) -> dict:
        """The first (new or recorded) event matching ``predicate``; AssertionError on timeout/EOF."""
        for event in self.events:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching event within {timeout} s; saw {self.events}") from None
            if event is None:
                raise AssertionError(f"the daemon closed the socket; saw {self.events}")
            self.events.append(event)
            if predicate(event):
                return event

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class DaemonProcess:
    """``aud run`` on ``root``/{inbox,outbox,state}; ``start()`` returns once it says it is ready."""

    def __init__(self, root: Path | None = None, workers: int = 2, env: dict | None = None,
                 preexec_fn=None, models: Path = MODELS, **settings):
        # AF_UNIX paths are short (104 bytes on macOS): keep the state dir near /tmp
        self.root = Path(root or tempfile.mkdtemp(prefix="aud-e2e-", dir="/tmp"))
        self.inbox, self.outbox, self.state = (self.root / n for n in ("inbox", "outbox", "state"))
        self.workers = workers
        self.env = {"AUD_SETTLE_SECONDS": "0.5", "AUD_RESCAN_SECONDS": "2", "AUD_SHARD_FRAMES": "16",
                    "AUD_UNOPENABLE_GRACE_SECONDS": "3", **(env or {})}
        self.env.update({f"AUD_{k.upper()}": str(v) for k, v in settings.items()})
        self.preexec_fn = preexec_fn  # run in the child before exec (e.g. to drop capabilities)
        self.models = models
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []

    @property
    def socket_path(self) -> Path:
        return self.state / "aud.sock"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "daemon", "run", "--inbox", str(self.inbox), "--outbox",
                str(self.outbox), "--state", str(self.state), "--models", str(self.models),
                "--workers", str(self.workers), "--provider", "cpu"]

    def start(self, timeout: float = 120.0) -> DaemonProcess:
        self.inbox.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(self.command(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, env=env, preexec_fn=self.preexec_fn)
        ready = threading.Event()

        def pump() -> None:
            for line in self.proc.stderr:
                self.log.append(line)
                if " aud.daemon INFO ready: " in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            raise AssertionError("aud run did not become ready:\n" + "".join(self.log))
        return self

    def subscribe(self) -> Subscriber:
        return Subscriber(self.socket_path)

    def request(self, command: dict, timeout: float = 10.0) -> dict:
        return request(self.socket_path, command, timeout)

    def status(self) -> dict:
        reply = self.request({"type": "status", "id": "status"})
        assert reply["ok"], reply
        return reply["data"]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 120.0) -> int:
        return self.proc.wait(timeout)

    def kill_hard(self) -> None:
        """SIGKILL the daemon and its workers (a power cut, as far as the files can tell)."""
        pids = _children(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(150)
            except subprocess.TimeoutExpired:
                self.kill_hard()

    def outbox_files(self) -> list[str]:
        return sorted(p.relative_to(self.outbox).as_posix() for p in self.outbox.rglob("*")
                      if p.is_file() and not is_summary(p, self.outbox))


def is_summary(path: Path, outbox: Path) -> bool:
    """The outbox's index.html (the static summary, rewritten after each job) or its temp file."""
    from daemon.shell.summary import INDEX_NAME

    # the temp file is ``.index.html.<random>.tmp`` (core.atomic.exclusive_temp)
    return path.parent == outbox and (path.name == INDEX_NAME or (path.name.startswith(f".{INDEX_NAME}.")
                                                                   and path.name.endswith(".tmp")))


def request(socket_path: Path, command: dict, timeout: float = 10.0) -> dict:
    """Send one command on a fresh connection and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(json.dumps(command).encode() + b"\n")
        with sock.makefile("rb") as f:
            for line in f:
                message = json.loads(line)
                if message["type"] == "reply":
                    return message
    raise AssertionError(f"the daemon closed the connection without replying to {command}")


def _children(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
