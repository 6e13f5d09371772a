"""The daemon's lifecycle in process (``shell/app.py``): the real ``Daemon`` on the in-process executor.

Start-up fails at each of its steps and nothing is left running; a signal during a slow start-up ends
it gracefully; a second signal stops a drain at once; a refused second daemon creates nothing; a
dropped video becomes a result."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from daemon import protocol as msg
from daemon.cli.client import request
from daemon.core import models
from daemon.jobs.factory import make_executor
from daemon.jobs.inline import InlineExecutor
from daemon.jobs.store import JobState, JobStore
from daemon.shell import app
from daemon.shell.app import AlreadyRunning, Daemon, StateLock
from tests.conftest import PROJECT
from tests.shell.daemonkit import Connection, InlineFactory, running, settings_for, short_dir

pytestmark = pytest.mark.usefixtures("isolated_config")


class Injected(RuntimeError):
    """The failure a test puts into one start-up step."""


def fail(*args, **kwargs):
    raise Injected("injected failure")


async def afail(*args, **kwargs):
    raise Injected("injected failure")


STEPS = ("lock", "models", "store", "executor", "socket", "workers", "warm_up", "watcher", "commands")


def inject(step: str, monkeypatch, factory: InlineFactory) -> None:
    """Make start-up step ``step`` raise ``Injected``."""
    if step == "lock":
        monkeypatch.setattr(StateLock, "acquire", fail)
    elif step == "models":
        monkeypatch.setattr(app, "check_setup", fail)
    elif step == "store":
        monkeypatch.setattr(app, "JobStore", fail)
    elif step == "executor":
        monkeypatch.setattr(InlineFactory, "__call__", fail)
    elif step == "socket":
        monkeypatch.setattr(app.ProgressServer, "start", afail)
    elif step == "workers":
        monkeypatch.setattr(InlineExecutor, "start", afail)
    elif step == "warm_up":
        monkeypatch.setattr(app.Runner, "warm_up", afail)
    elif step == "watcher":
        monkeypatch.setattr(app.Intake, "watch", fail)
    elif step == "commands":
        monkeypatch.setattr(app, "Commands", fail)


@pytest.fixture
def root():
    with short_dir() as path:
        yield path


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_any_start_up_step_leaves_nothing_running(step, root, tiny_models, monkeypatch):
    settings = settings_for(root, tiny_models, plots=True)  # plots: warm_up starts the results thread
    factory = InlineFactory()
    inject(step, monkeypatch, factory)
    stores: list[JobStore] = []
    if step != "store":
        real_store = app.JobStore

        def tracked_store(path):
            stores.append(real_store(path))
            return stores[-1]

        monkeypatch.setattr(app, "JobStore", tracked_store)
    threads_before = set(threading.enumerate())
    handlers_before = {sig: signal.getsignal(sig) for sig in app.SIGNALS}

    with pytest.raises(Injected):
        asyncio.run(Daemon(settings, factory).run())

    assert not settings.socket_path.exists(), "the control socket was left behind"
    assert all(store._conn is None for store in stores), "the job store was left open"
    assert len(factory.closes) == len(factory.made), "an executor was made and never closed"
    assert all(factory.closes), "nothing ran: a failed start-up ends the workers at once"
    assert set(threading.enumerate()) <= threads_before, "a thread was left running"
    assert {sig: signal.getsignal(sig) for sig in app.SIGNALS} == handlers_before
    if step != "lock":
        lock = StateLock(settings.state)
        lock.acquire()  # the state lock was released
        lock.release()


def test_a_failure_after_the_workers_started_leaves_no_worker_process(root, tiny_models, monkeypatch):
    """The real process pool: its workers are ended when a later start-up step fails."""
    settings = settings_for(root, tiny_models)
    monkeypatch.setattr(app.Runner, "warm_up", afail)
    started: list[psutil.Process] = []
    real_start = app.Runner.__init__

    def note_workers(self, store, executor, *args, **kwargs):
        started.extend(p for p in psutil.Process().children(recursive=True)  # not multiprocessing's
                       if "resource_tracker" not in " ".join(p.cmdline()))  # resource tracker (local.py)
        real_start(self, store, executor, *args, **kwargs)

    monkeypatch.setattr(app.Runner, "__init__", note_workers)
    with pytest.raises(Injected):
        asyncio.run(Daemon(settings, make_executor).run())
    assert started, "the workers had started before the failure"
    gone, alive = psutil.wait_procs(started, timeout=10)
    assert not alive, f"worker processes left running: {alive}"
    assert not settings.socket_path.exists()


def test_the_model_files_are_hashed_once_at_start(root, tiny_models, monkeypatch):
    """The set check_setup hashed is the one the process pool's workers must load: the pool does not hash
    it again (each file read once in full, not twice: seconds for real models on a slow disk)."""
    settings = settings_for(root, tiny_models)
    hashed: list[str] = []
    real = models.sha256_of

    def counted(path, *args, **kwargs):
        hashed.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(models, "sha256_of", counted)

    async def start_and_stop() -> None:
        async with running(Daemon(settings, make_executor)):
            pass

    asyncio.run(start_and_stop())
    assert sorted(hashed) == ["mtl.onnx", "retinaface.onnx", "star.onnx"]


class SlowStart(InlineFactory):
    """An executor whose workers take for ever to load (a big model on a slow disk)."""

    def __init__(self):
        super().__init__()
        self.entered = asyncio.Event()

    def __call__(self, settings, on_restart, models=None):
        executor = super().__call__(settings, on_restart, models)

        async def slow_start():
            self.entered.set()
            await asyncio.Event().wait()

        executor.start = slow_start  # type: ignore[method-assign]
        return executor


def test_sigterm_while_the_workers_load_exits_gracefully(root, tiny_models):
    settings = settings_for(root, tiny_models)
    factory = SlowStart()
    handler_before = signal.getsignal(signal.SIGTERM)

    async def scenario():
        daemon = Daemon(settings, factory)
        task = asyncio.create_task(daemon.run())
        await factory.entered.wait()
        client = await Connection.open(settings.socket_path)
        starting = await client.ask(msg.Status())
        assert starting.ok and starting.data["state"] == "starting"
        assert (await client.ask(msg.Subscribe())).ok
        os.kill(os.getpid(), signal.SIGTERM)
        stopping = await client.event(msg.DaemonStopping)
        await client.close()
        return await asyncio.wait_for(task, 30), stopping

    code, stopping = asyncio.run(scenario())
    assert code == 0
    assert "SIGTERM" in stopping.reason
    assert factory.closes == [True]  # the half-started workers are ended
    assert not settings.socket_path.exists()
    assert signal.getsignal(signal.SIGTERM) == handler_before


def test_a_second_signal_stops_a_drain_at_once(root, tiny_models, synthetic_video):
    """A shard that never ends: the first SIGTERM waits for it (stop timeout 600 s), the second ends it."""
    settings = settings_for(root, tiny_models, stop_timeout_seconds=600)
    started = asyncio.Event()

    async def hang(task, progress):
        started.set()
        await asyncio.Event().wait()

    factory = InlineFactory(hang)
    video = synthetic_video(frames=8, width=32, height=32)

    async def scenario():
        daemon = Daemon(settings, factory)
        async with running(daemon) as task:
            client = await Connection.open(settings.socket_path)
            assert (await client.ask(msg.Subscribe())).ok
            os.replace(video, settings.inbox / video.name)
            await started.wait()
            os.kill(os.getpid(), signal.SIGTERM)
            await daemon._stop.wait()
            assert not task.done()
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(asyncio.shield(task), 30)  # well inside the 600 s stop timeout
            await client.close()

    asyncio.run(scenario())
    assert factory.closes == [True]
    with JobStore(settings.database_path) as store:  # the job runs again after a restart
        assert [j.state for j in store.jobs()] == [JobState.RUNNING]


def test_a_refused_second_daemon_creates_no_folder(root, tiny_models):
    settings = settings_for(root, tiny_models)
    settings.state.mkdir(parents=True)
    holder = StateLock(settings.state)
    holder.acquire()
    try:
        with pytest.raises(AlreadyRunning):
            asyncio.run(Daemon(settings, InlineFactory()).run())
    finally:
        holder.release()
    assert not settings.inbox.exists() and not settings.outbox.exists()
    assert sorted(p.name for p in settings.state.iterdir()) == ["aud.lock"]


def test_a_dropped_video_becomes_a_result(root, tiny_models, synthetic_video):
    settings = settings_for(root, tiny_models)
    factory = InlineFactory()
    video = synthetic_video(frames=8, width=32, height=32)

    async def scenario():
        daemon = Daemon(settings, factory)
        async with running(daemon):
            client = await Connection.open(settings.socket_path)
            assert (await client.ask(msg.Subscribe())).ok
            os.replace(video, settings.inbox / video.name)
            done = await asyncio.wait_for(client.event(msg.JobDone), 60)
            status = await client.ask(msg.Status())
            await client.close()
            return done, status

    done, status = asyncio.run(scenario())
    assert Path(done.csv).is_file() and done.frames == 8
    assert status.data["counts"]["done"] == 1
    assert (settings.inbox / ".done" / "clip.mp4").is_file()  # moved: the outbox told the watcher (wired in)
    assert factory.closes == [False]  # drained: the workers stop gently


def test_aud_run_stopped_while_its_executor_starts_exits_0(tmp_path, tiny_models):
    """A real ``aud run``: its executor waits on a Dask scheduler that accepts the connection and never
    answers (a slow start that lasts until the connect timeout); SIGTERM ends it gracefully, at once."""
    pytest.importorskip("distributed")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever speaks
    address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
    with short_dir() as root, silent:
        state = root / "st"
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--inbox", str(root / "in"), "--outbox", str(root / "out"),
             "--state", str(state), "--models", str(tiny_models), "--provider", "cpu", "--executor", "dask",
             "--dask-scheduler", address], stderr=subprocess.PIPE, text=True, cwd=PROJECT)
        try:
            log = []
            for line in proc.stderr:  # the daemon says when its socket listens
                log.append(line)
                if "control socket listening" in line:
                    break
            else:
                raise AssertionError("aud run ended before its socket listened:\n" + "".join(log))
            reply = asyncio.run(request(state / "aud.sock", msg.Status()))
            assert reply.ok and reply.data["state"] == "starting"
            proc.send_signal(signal.SIGTERM)
            _, rest = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = "".join(log) + rest
    assert proc.returncode == 0, output
    assert "stopped during start-up" in output and "Traceback" not in output
    assert not (state / "aud.sock").exists()
