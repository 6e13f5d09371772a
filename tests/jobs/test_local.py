"""Tests for daemon.jobs.local: the process pool behind the executor port, with real worker processes
running the tiny models (tests/tinymodels.py) on synthetic videos.

Timing: "long" shards are 4000 frames of a 64x64 video. The tests act on a long shard within about a
second of its first progress message (kill it, time it out after 0.5 s, close the pool), while the whole
shard takes seconds: the tiny models cost 2.2 to 5.4 ms a frame in a worker on this shared 2-core machine
(three runs under load; see the localpool report for the command). A long shard that finished early
would fail the test loudly (``assert not a.done()``, or a result where an error was expected), never
pass it by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import onnx
import psutil
import pytest

from daemon.core.models import ModelError
from daemon.core.pipeline import Pipeline, PipelineOptions
from daemon.core.providers import worker_threads
from daemon.core.shard import ShardTask, run_shard
from daemon.core.video import VideoInfo, probe
from daemon.jobs.executor import (
    Backoff,
    ExecutorUnavailable,
    FailureKind,
    ShardFailed,
    ShardTimedOut,
    WorkerDied,
)
from daemon.jobs.local import ProcessExecutor, WorkerStartError, remote_error
from daemon.jobs.local_worker import Failed
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


def pipes_of(pid: int) -> set[str]:
    """The pipes and sockets ``pid`` has open (Linux: the targets of /proc/<pid>/fd)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    targets = set()
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(FileNotFoundError):  # closed while we looked
            targets.add(os.readlink(fd_dir / fd))
    return {t for t in targets if t.startswith(("pipe:", "socket:"))}


def assert_no_shared_lifelines(ex: ProcessExecutor) -> None:
    """No worker holds a pipe of another worker (a lifeline's end above all): ``spawn`` passes a child
    only what it is given. The one pipe workers do share is the resource tracker's (multiprocessing
    hands every spawned child its write end); the tracker shares nothing else with them."""
    if not Path("/proc/self/fd").is_dir():
        return  # macOS: no /proc; the parent-death test covers the consequence
    held = {pid_of(w.name): pipes_of(pid_of(w.name)) for w in ex.workers()}
    trackers = [p.pid for p in psutil.Process().children() if any(RESOURCE_TRACKER in c for c in p.cmdline())]
    tracker_pipes = pipes_of(trackers[0]) if trackers else set()
    with_tracker = {frozenset(pipes & tracker_pipes) for pipes in held.values()}
    assert len(with_tracker) == 1 and len(next(iter(with_tracker))) <= 1, \
        f"workers share more than the tracker's pipe with it: {with_tracker}"
    shared = {(a, b): (held[a] & held[b]) - tracker_pipes for a in held for b in held if a < b}
    assert not any(shared.values()), f"workers share pipes: {shared}"



def test_a_shard_runs_on_the_worker_whose_capture_it_continues(tiny_models: Path, video):
    """A worker keeps its capture open where its shard ended: the shard that starts there goes to it
    and reads on (``continued``); a shard that continues nobody's goes to the worker with no capture."""
    info = video(60)
    task = lambda a, b: ShardTask.of(info, a, b)  # noqa: E731

    async def main():
        ex = ProcessExecutor(PipelineOptions(tiny_models), 2)
        try:
            await ex.start()
            assert ex.resume_points() == []
            first = await ex.run(task(0, 6))
            assert ex.resume_points() == [(info.path, 6)] and not first.continued
            second = await ex.run(task(30, 36))  # continues nobody: the other worker, keeping the first's
            assert second.worker != first.worker and not second.continued
            assert sorted(ex.resume_points()) == [(info.path, 6), (info.path, 36)]
            on_a, on_b = await asyncio.gather(ex.run(task(36, 42)), ex.run(task(8, 12)))  # 8: 2 frames on
            assert (on_a.worker, on_a.continued) == (second.worker, True)
            assert (on_b.worker, on_b.continued) == (first.worker, True)
            behind = await ex.run(task(3, 4))  # behind both captures: opened afresh
            assert not behind.continued
        finally:
            await ex.close()
    run(main)


def test_an_idle_worker_lets_go_of_its_video(tiny_models: Path, video):
    """The open capture is kept between shards, not overnight: a worker that waits READER_IDLE_SECONDS
    for its next shard closes it (the video may be moved or deleted once its job ends)."""
    from daemon.jobs.local_worker import READER_IDLE_SECONDS

    info = video(12)

    def holds_video(pid: int) -> bool:
        fd_dir = Path(f"/proc/{pid}/fd")
        return any(os.readlink(fd_dir / fd) == info.path for fd in os.listdir(fd_dir))

    async def main():
        ex = ProcessExecutor(PipelineOptions(tiny_models), 1)
        try:
            await ex.start()
            done = await ex.run(ShardTask.of(info, 0, 6))
            pid = pid_of(done.worker)
            ended = time.monotonic()
            assert holds_video(pid) and ex.resume_points() == [(info.path, 6)]
            while holds_video(pid):
                assert time.monotonic() - ended < READER_IDLE_SECONDS + 10, "the worker kept its video open"
                await asyncio.sleep(0.1)
            assert time.monotonic() - ended >= READER_IDLE_SECONDS - 0.5
            assert ex.resume_points() == []  # the parent no longer routes a shard to the closed capture
        finally:
            await ex.close()
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to see a worker's open files (Linux)")
    run(main)

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


def test_start_errors_cross_the_process_boundary_as_a_matching_type():
    assert type(remote_error(Failed("ModelError", "m.onnx: bad", "tb", False))) is ModelError
    assert str(remote_error(Failed("ModelError", "m.onnx: bad", "tb", False))) == "m.onnx: bad"
    other = remote_error(Failed("Fail", "onnxruntime says no", "Traceback ...", False))
    assert isinstance(other, WorkerStartError) and str(other) == "Fail: onnxruntime says no"
    assert other.traceback == "Traceback ..."


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
            assert not a.done(), "shard A finished before the test could kill its worker"
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


class Restarts:
    """``on_restart`` for a test: records every reason, and lets it await the n-th reason that
    contains a phrase (each replacement, each failed attempt to start one, is one call)."""

    def __init__(self):
        self.reasons: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self._changed.set()

    async def wait_for(self, phrase: str, count: int = 1) -> list[str]:
        while len(hits := [r for r in self.reasons if phrase in r]) < count:
            self._changed.clear()
            await self._changed.wait()
        return hits


QUICK_RESTART = Backoff(first=0.05, cap=0.2)  # attempts close together: the test sees several of them


def test_a_pool_whose_replacement_cannot_start_waits_unavailable_and_recovers(tiny_models: Path, video):
    """Issue 22 item 1: one failed restart used to leave the pool at 0 workers and fail every later shard
    ("no worker process is left") for good. Now the replacement is tried again with backoff, the pool
    is unavailable meanwhile (the runner waits: no shard fails), and it runs shards again once the
    model file is back, with no restart of the pool."""
    short = video(12)
    mtl, aside = tiny_models / "mtl.onnx", tiny_models / "mtl.onnx.aside"

    async def main():
        restarts = Restarts()
        ex = ProcessExecutor(PipelineOptions(tiny_models), 1, on_restart=restarts, restart=QUICK_RESTART)
        try:
            await ex.start()
            assert ex.unavailable() is None
            mtl.rename(aside)  # the replacement will not find its model
            assert (await ex.run(ShardTask.of(short, 0, 12))).frames == 12  # the warm worker still runs
            os.kill(pid_of(ex.workers()[0].name), signal.SIGKILL)  # idle: noticed by its pipe's EOF
            failed = await restarts.wait_for("could not start", count=2)  # tried again, not given up
            assert "mtl.onnx" in failed[0] and "trying again in 0.05 s" in failed[0]
            assert "trying again in 0.1 s" in failed[1]  # the delay grows
            assert ex.workers() == []
            reason = ex.unavailable()
            assert reason is not None and "no worker process can start" in reason and "mtl.onnx" in reason
            with pytest.raises(ExecutorUnavailable, match=r"no worker process can start.*mtl\.onnx"):
                await ex.run(ShardTask.of(short, 0, 12))
            back = asyncio.ensure_future(ex.wait_available())
            await restarts.wait_for("could not start", count=3)  # still unavailable one attempt later
            assert not back.done()
            aside.rename(mtl)
            await back  # the next attempt starts a worker: available again, without a new pool
            assert ex.unavailable() is None and len(ex.workers()) == 1
            assert (await ex.run(ShardTask.of(short, 0, 12))).frames == 12
            assert ex.restarts == 1  # one replacement, several attempts
        finally:
            await ex.close()
    run(main)


def test_a_run_waiting_for_a_worker_learns_the_pool_became_unavailable(tiny_models: Path, video):
    """A shard that waits for a worker while the only replacement fails to start raises
    ExecutorUnavailable (the runner keeps it and waits), not ShardFailed."""
    long, short = video(LONG), video(12)

    async def main():
        restarts = Restarts()
        ex = ProcessExecutor(PipelineOptions(tiny_models), 1, on_restart=restarts, restart=QUICK_RESTART)
        try:
            await ex.start()
            watch = Watch()
            a = asyncio.ensure_future(ex.run(ShardTask.of(long, 0, LONG, label="shard A"), progress=watch))
            await watch.first.wait()
            b = asyncio.ensure_future(ex.run(ShardTask.of(short, 0, 12, label="shard B")))  # waits for a worker
            (tiny_models / "mtl.onnx").write_bytes(b"not a model")
            os.kill(pid_of(ex.workers()[0].name), signal.SIGKILL)
            with pytest.raises(WorkerDied):
                await a
            with pytest.raises(ExecutorUnavailable, match=r"mtl\.onnx"):
                await b
        finally:
            await ex.close()
    run(main)


def test_a_worker_refuses_a_model_file_swapped_since_the_set_was_hashed(tiny_models: Path, video):
    """Issue 22 item 2: a model file swapped for another valid model of the same signature (other
    weights) used to be loaded by the next replacement while the job key and sidecars kept the old
    sha256. The worker now checks the files against the set the parent hashed and refuses; the pool
    says why (unavailable, naming the file); the original bytes back (a copy: another inode, so it is
    hashed) let it run again."""
    short = video(12)
    mtl = tiny_models / "mtl.onnx"
    original = mtl.read_bytes()

    async def main():
        restarts = Restarts()
        ex = ProcessExecutor(PipelineOptions(tiny_models), 1, on_restart=restarts, restart=QUICK_RESTART)
        try:
            await ex.start()
            before = await ex.run(ShardTask.of(short, 0, 12))
            swapped = tiny_models / "other.onnx"
            onnx.save(tinymodels.multitask(seed=7), str(swapped))  # same signature, other weights
            swapped.replace(mtl)
            os.kill(pid_of(ex.workers()[0].name), signal.SIGKILL)
            (failed, *_) = await restarts.wait_for("could not start")
            assert "ModelsChanged" in failed and str(mtl) in failed and "changed on disk since aud started" in failed
            with pytest.raises(ExecutorUnavailable, match="restart aud"):
                await ex.run(ShardTask.of(short, 0, 12))
            mtl.write_bytes(original)  # the same bytes, written anew: new mtime, same sha256
            await ex.wait_available()
            after = await ex.run(ShardTask.of(short, 0, 12))
            assert after.rows.to_bytes() == before.rows.to_bytes()  # the hashed model's results
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


def test_a_cancelled_shard_has_its_worker_replaced_and_close_waits_boundedly(tiny_models: Path, video):
    long = video(LONG)
    restarts: list[str] = []

    async def main():
        ex = ProcessExecutor(PipelineOptions(tiny_models), 1, on_restart=restarts.append, close_timeout=0.5)
        await ex.start()
        first = pid_of(ex.workers()[0].name)
        watch = Watch()
        running = asyncio.ensure_future(ex.run(ShardTask.of(long, 0, LONG, label="shard X"), progress=watch))
        await watch.first.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await ex.replacements_done()
        assert ex.restarts == 1 and "shard X was cancelled" in restarts[0]
        assert not psutil.pid_exists(first) and pid_of(ex.workers()[0].name) != first
        watch = Watch()
        running = asyncio.ensure_future(ex.run(ShardTask.of(long, 0, LONG), progress=watch))
        await watch.first.wait()
        began = time.monotonic()
        await ex.close()  # waits at most close_timeout (0.5 s) for the shard, then ends the worker
        assert time.monotonic() - began < 3.0  # 0.5 s + SIGKILL and reaping (milliseconds) + load
        with pytest.raises(ExecutorUnavailable, match="closed"):
            await running
        assert our_children() == []
    run(main)


PARENT = """
import asyncio, json, sys
from pathlib import Path
from daemon.core.pipeline import PipelineOptions
from daemon.core.shard import ShardTask
from daemon.jobs.local import ProcessExecutor

async def main():
    ex = ProcessExecutor(PipelineOptions(Path(sys.argv[1])), 2)
    await ex.start()
    print(json.dumps([w.name for w in ex.workers()]), flush=True)
    await asyncio.gather(*(ex.run(ShardTask(fifo, 0, 10, None)) for fifo in sys.argv[2:]))

asyncio.run(main())
"""


def exited(process: psutil.Process) -> bool:
    """Gone, or a zombie (it has exited; reaping it is its parent's business: init's, here)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def open_for_writing(fifo: Path, timeout: float) -> int:
    """Open ``fifo`` for writing; returns once a reader (a worker's decoder) has opened it."""
    fds: list[int] = []
    opener = threading.Thread(target=lambda: fds.append(os.open(fifo, os.O_WRONLY)), daemon=True)
    opener.start()
    opener.join(timeout)
    if opener.is_alive():  # unblock our own open, then fail
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        opener.join()
        os.close(fds[0])
        raise AssertionError(f"no worker opened {fifo} within {timeout:g} s")
    return fds[0]


def test_busy_workers_exit_when_their_parent_is_killed(tiny_models: Path, tmp_path: Path):
    """The parent runs two shards whose videos are FIFOs that we hold open without writing: both
    workers are busy and silent (blocked reading), so only the lifeline can tell them the parent died."""
    fifos = [tmp_path / "a.fifo", tmp_path / "b.fifo"]
    for fifo in fifos:
        os.mkfifo(fifo)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tiny_models), *map(str, fifos)], cwd=PROJECT,
                              stdout=subprocess.PIPE, text=True)
    out = parent.stdout
    assert out is not None
    tree: list[psutil.Process] = []
    writers: list[int] = []
    try:
        ready, _, _ = select.select([out], [], [], 60)
        assert ready, "the parent did not start its workers within 60 s"
        names = json.loads(out.readline())
        tree = psutil.Process(parent.pid).children(recursive=True)  # workers and the resource tracker
        assert {pid_of(n) for n in names} <= {p.pid for p in tree}
        writers = [open_for_writing(fifo, 60) for fifo in fifos]  # both workers now block reading
        parent.kill()
        parent.wait(10)
        _, alive = psutil.wait_procs(tree, timeout=10)
        # a zombie has exited (an init that does not reap is not ours to fix)
        alive = [p for p in alive if not exited(p)]
        assert not alive, f"still running 10 s after the parent's SIGKILL: {[p.pid for p in alive]}"
    finally:
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        for fd in writers:
            os.close(fd)
        parent.kill()
        parent.wait(10)
        out.close()


def test_a_large_result_arrives_whole_on_uvloop(tiny_models: Path, video):
    """The daemon and ``aud extract`` run on uvloop, whose ``add_reader`` makes the pipe non-blocking: a
    result larger than the pipe's buffer (64 KiB on Linux) arrives in pieces, and reading it must wait
    for the rest, not take the pause for a dead worker (before the fix: "killed by SIGKILL" after 5 s)."""
    uvloop = pytest.importorskip("uvloop")
    info = video(300)
    task = ShardTask.of(info, 0, 300)

    async def main():
        ex = ProcessExecutor(PipelineOptions(tiny_models, batch_size=4), 1)
        try:
            await ex.start()
            result = await asyncio.wait_for(ex.run(task), 60)
            assert len(result.rows.to_bytes()) > 4 * 65536  # really larger than the pipe's buffer
            assert result.rows.frame.tolist() == list(range(300)) and ex.restarts == 0
        finally:
            await ex.close()

    uvloop.run(main())
