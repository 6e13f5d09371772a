"""Tests for daemon.jobs.local: the process pool behind the executor port, with real worker processes
running the tiny models (tests/tinymodels.py) on synthetic videos.

Timing facts these tests rely on (measured on this 2-core machine, `.venv/bin/python /tmp/lp_probe.py`
style runs): a tiny-model worker measures a 64x64 frame in about 2 ms and starts (spawn, imports, model
load) in about 2 s. "Long" shards below are 4000 frames (about 8 s of work): a test that kills or
times out a long shard acts within its first second, so the shard is still running on any CPU that
is not 8 times slower than this one.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon.core.models import ModelError
from daemon.core.pipeline import Pipeline, PipelineOptions
from daemon.core.providers import worker_threads
from daemon.core.shard import ShardTask, run_shard
from daemon.core.video import VideoInfo, probe
from daemon.jobs.executor import (
    ExecutorUnavailable,
    FailureKind,
    ShardFailed,
    ShardTimedOut,
    WorkerDied,
)
from daemon.jobs.local import ProcessExecutor
from tests import tinymodels
from tests.conftest import PROJECT

LONG = 4000  # frames of the long video (about 8 s of tiny-model work)
RESOURCE_TRACKER = "multiprocessing.resource_tracker"


def our_children() -> list[psutil.Process]:
    """Our descendants except multiprocessing's resource tracker: ``spawn`` starts that helper once per
    parent, it is no worker and it exits on its own when the parent does."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if not any(RESOURCE_TRACKER in part for part in child.cmdline()):
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Every test must end with no worker left; kill stragglers so none outlives its test."""
    before = {p.pid for p in our_children()}
    yield
    left = [p for p in our_children() if p.pid not in before]
    for p in left:
        p.kill()
    psutil.wait_procs(left, timeout=10)
    assert not left, f"processes left running: {[p.pid for p in left]}"


def run(main: Callable[[], Coroutine[Any, Any, None]], limit: float = 60.0) -> None:
    """Run an async test body on a fresh loop, bounded so a hang fails the test instead of stalling."""
    async def bounded():
        await asyncio.wait_for(main(), limit)
    asyncio.run(bounded())


def pid_of(worker_name: str) -> int:
    return int(worker_name.rsplit(":", 1)[1])


@pytest.fixture
def video(synthetic_video) -> Callable[[int], VideoInfo]:
    """``video(frames)``: a probed 64x64 synthetic video (each length written once per test)."""
    made: dict[int, VideoInfo] = {}

    def get(frames: int) -> VideoInfo:
        if frames not in made:
            made[frames] = probe(synthetic_video(frames=frames, name=f"clip{frames}.mp4"))
        return made[frames]

    return get


class Watch:
    """A progress callback that records calls and lets a test await the first one."""

    def __init__(self):
        self.calls: list[int] = []
        self.first = asyncio.Event()

    def __call__(self, frames: int) -> None:
        self.calls.append(frames)
        self.first.set()


def shared_pipes(pids: list[int]) -> dict[tuple[int, int], set[str]]:
    """Pipes and sockets open in two of ``pids`` at once (Linux: read from /proc/<pid>/fd)."""
    held = {}
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        held[pid] = {os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)}
        held[pid] = {target for target in held[pid] if target.startswith(("pipe:", "socket:"))}
    return {(a, b): held[a] & held[b] for a in pids for b in pids if a < b and held[a] & held[b]}


def assert_no_shared_lifelines(ex: ProcessExecutor) -> None:
    """No worker holds a pipe of another worker (its lifeline write end above all): ``spawn`` passes a
    child only what it is given. Workers do share one pipe, the resource tracker's, which we allow."""
    if not Path("/proc/self/fd").is_dir():
        return  # macOS: no /proc; the parent-death test covers the consequence
    tracker = [p.pid for p in psutil.Process().children() if any(RESOURCE_TRACKER in c for c in p.cmdline())]
    tracker_pipes = set().union(*shared_pipes(tracker + [pid_of(w.name) for w in ex.workers()]).values()) \
        if tracker else set()
    pids = [pid_of(w.name) for w in ex.workers()]
    shared = {pair: pipes - tracker_pipes for pair, pipes in shared_pipes(pids).items()}
    assert not any(shared.values()), f"workers share pipes: {shared}"


# --- start ------------------------------------------------------------------------------------------

def test_start_warms_every_worker_and_returns_providers(tiny_models: Path):
    async def main():
        ex = ProcessExecutor(PipelineOptions(tiny_models), 2)
        try:
            providers = await ex.start()
            assert providers == {"detector": "CPUExecutionProvider", "multitask": "CPUExecutionProvider",
                                 "landmarks": "CPUExecutionProvider"}
            infos = ex.workers()
            assert len(infos) == 2 and ex.capacity == 2
            children = {p.pid for p in our_children()}
            for info in infos:  # ready = the worker reported its sessions: provider and threads come from it
                assert pid_of(info.name) in children
                assert info.provider == "CPUExecutionProvider"
                assert info.threads == worker_threads(2)
                assert (info.tasks_done, info.busy) == (0, False)
            assert_no_shared_lifelines(ex)
            await ex.wait_available()  # returns at once
        finally:
            await ex.close()
    run(main)


def test_bad_model_fails_start_with_its_model_error_and_leaves_no_process(tmp_path: Path):
    models = tinymodels.write_set(tmp_path / "models", mtl=tinymodels.multitask(size=112))

    async def main():
        ex = ProcessExecutor(PipelineOptions(models), 2)
        with pytest.raises(ModelError, match=r"mtl\.onnx.*must be 224x224"):
            await ex.start()
        assert our_children() == []
        await ex.close()  # harmless after a failed start
    run(main)


# --- shards -----------------------------------------------------------------------------------------

def test_shard_rows_equal_run_shard_in_process_and_progress_arrives(tiny_models: Path, video):
    """Byte-equal: the worker runs the same code on the same options; pickling must not change a bit."""
    info = video(300)
    task = ShardTask.of(info, 20, 300, label="shard 1")

    async def main():
        ex = ProcessExecutor(PipelineOptions(tiny_models, batch_size=4), 1)
        try:
            await ex.start()
            watch = Watch()
            result = await ex.run(task, progress=watch)
            expected = run_shard(Pipeline(ex.options), task)
            assert (result.start, result.stop, result.frames) == (20, 300, 280)
            assert result.worker == ex.workers()[0].name
            assert result.rows.rows == expected.rows.rows == 280
            for name in expected.rows:
                assert result.rows[name].dtype == expected.rows[name].dtype, name
                assert result.rows[name].tobytes() == expected.rows[name].tobytes(), name
            assert result.rows.success.all()  # the tiny detector's face is found: real numbers compared
            # progress: during the shard (70 batches), increasing, and throttled to about 4 a second
            assert watch.calls and watch.calls == sorted(watch.calls) and watch.calls[-1] <= 280
            assert len(watch.calls) <= result.seconds / 0.25 + 1
            assert ex.workers()[0].tasks_done == 1
        finally:
            await ex.close()
    run(main)


def test_a_killed_worker_fails_only_its_shard_and_is_replaced(tiny_models: Path, video):
    long, medium, short = video(LONG), video(400), video(40)
    restarts: list[str] = []

    async def main():
        ex = ProcessExecutor(PipelineOptions(tiny_models), 2, on_restart=restarts.append)
        try:
            await ex.start()
            watch_a, watch_b = Watch(), Watch()
            a = asyncio.ensure_future(ex.run(ShardTask.of(long, 0, LONG, label="shard A"), progress=watch_a))
            await watch_a.first.wait()
            (victim,) = [pid_of(w.name) for w in ex.workers() if w.busy]  # only A runs yet
            b = asyncio.ensure_future(ex.run(ShardTask.of(medium, 0, 400, label="shard B"), progress=watch_b))
            await watch_b.first.wait()  # B runs beside A
            os.kill(victim, signal.SIGKILL)
            with pytest.raises(WorkerDied, match=rf":{victim} was killed by SIGKILL") as died:
                await a
            assert pid_of(died.value.worker) == victim
            result_b = await b  # the innocent shard completes, not re-run, on the other worker
            assert result_b.frames == 400 and pid_of(result_b.worker) != victim
            await ex.replacements_done()
            assert ex.restarts == 1 and len(restarts) == 1 and str(victim) in restarts[0]
            pids = {pid_of(w.name) for w in ex.workers()}
            assert len(pids) == 2 and victim not in pids and not psutil.pid_exists(victim)
            assert pids <= {p.pid for p in our_children()}
            assert_no_shared_lifelines(ex)  # the replacement was spawned while another worker ran
            third = await ex.run(ShardTask.of(short, 0, 40, label="shard C"))
            assert third.frames == 40
        finally:
            await ex.close()
    run(main)


def test_a_shard_past_its_timeout_has_its_worker_replaced(tiny_models: Path, video):
    long, short = video(LONG), video(40)

    async def main():
        ex = ProcessExecutor(PipelineOptions(tiny_models), 1)
        try:
            await ex.start()
            before = pid_of(ex.workers()[0].name)
            began = time.monotonic()
            with pytest.raises(ShardTimedOut, match="shard T ran longer than 0.5 s") as timed_out:
                await ex.run(ShardTask.of(long, 0, LONG, label="shard T"), timeout=0.5)
            # bound: 0.5 s limit + SIGTERM grace (1 s) + reaping; the shard alone needs about 8 s
            assert time.monotonic() - began < 4.0
            assert pid_of(timed_out.value.worker) == before and not psutil.pid_exists(before)
            await ex.replacements_done()
            assert ex.restarts == 1 and pid_of(ex.workers()[0].name) != before
            assert (await ex.run(ShardTask.of(short, 0, 40))).frames == 40
        finally:
            await ex.close()
    run(main)


def test_shard_errors_come_back_typed_and_the_worker_survives_them_and_sigint(tiny_models: Path, video):
    short = video(12)

    async def main():
        ex = ProcessExecutor(PipelineOptions(tiny_models), 1)
        try:
            await ex.start()
            pid = pid_of(ex.workers()[0].name)
            # Ctrl-C in a terminal reaches the whole process group: the worker ignores it (SIG_IGN
            # discards the signal when it is sent, so nothing is pending after os.kill returns)
            os.kill(pid, signal.SIGINT)
            with pytest.raises(ShardFailed, match="ends at frame 12") as bad_input:
                await ex.run(ShardTask(short.path, 0, 50, None, label="too long"))
            assert bad_input.value.kind is FailureKind.INPUT and short.path in str(bad_input.value)
            with pytest.raises(ShardFailed, match=r"^(ZeroDivisionError|ValueError): ") as internal:
                await ex.run(ShardTask(short.path, 0, 12, None, step=0, label="step 0"))
            assert internal.value.kind is FailureKind.INTERNAL
            assert "Traceback" in internal.value.traceback and pid_of(internal.value.worker) == pid
            assert (await ex.run(ShardTask.of(short, 0, 12))).frames == 12
            assert ex.restarts == 0 and pid_of(ex.workers()[0].name) == pid
        finally:
            await ex.close()
    run(main)


# --- closing and parent death -----------------------------------------------------------------------

def test_close_lets_a_running_shard_finish_then_leaves_no_process(tiny_models: Path, video):
    medium = video(400)

    async def main():
        ex = ProcessExecutor(PipelineOptions(tiny_models), 2)
        await ex.start()
        watch = Watch()
        running = asyncio.ensure_future(ex.run(ShardTask.of(medium, 0, 400), progress=watch))
        await watch.first.wait()
        await ex.close()
        assert (await running).frames == 400  # finished, not cut short
        assert our_children() == []
        await ex.close()  # idempotent
        with pytest.raises(ExecutorUnavailable):
            await ex.run(ShardTask.of(medium, 0, 4))
    run(main)


def test_close_kill_ends_a_running_shard_promptly(tiny_models: Path, video):
    long = video(LONG)

    async def main():
        ex = ProcessExecutor(PipelineOptions(tiny_models), 2)
        await ex.start()
        watch = Watch()
        running = asyncio.ensure_future(ex.run(ShardTask.of(long, 0, LONG), progress=watch))
        await watch.first.wait()
        began = time.monotonic()
        await ex.close(kill=True)
        with pytest.raises(ExecutorUnavailable, match="closed"):
            await running
        # SIGKILL and reaping take milliseconds; the shard alone would need about 8 s
        assert time.monotonic() - began < 2.0
        assert our_children() == []
    run(main)


PARENT = """
import asyncio, json, sys
from pathlib import Path
from daemon.core.pipeline import PipelineOptions
from daemon.jobs.local import ProcessExecutor

async def main():
    ex = ProcessExecutor(PipelineOptions(Path(sys.argv[1])), 2)
    await ex.start()
    print(json.dumps([w.name for w in ex.workers()]), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_workers_exit_when_their_parent_is_killed(tiny_models: Path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tiny_models)], cwd=PROJECT,
                              stdout=subprocess.PIPE, text=True)
    tree: list[psutil.Process] = []
    try:
        ready, _, _ = select.select([parent.stdout], [], [], 60)
        assert ready, "the parent did not start its workers within 60 s"
        names = json.loads(parent.stdout.readline())
        tree = psutil.Process(parent.pid).children(recursive=True)  # workers and the resource tracker
        assert {pid_of(n) for n in names} <= {p.pid for p in tree}
        parent.kill()
        parent.wait(10)
        _, alive = psutil.wait_procs(tree, timeout=10)
        # a zombie has exited (an init that does not reap is not ours to fix)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"still running 10 s after the parent's SIGKILL: {[p.pid for p in alive]}"
    finally:
        for p in tree:
            if p.is_running():
                p.kill()
        parent.kill()
        parent.wait(10)
        parent.stdout.close()
