"""The Dask executor against a real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, with the
tiny models and synthetic videos. Every test body runs on uvloop, the daemon's event loop.

Results are compared byte for byte with ``run_shard`` in this process: the same code, libraries and CPU,
with one thread in every pool on both sides, compute the same floats (no reduction is split across
threads differently), so there is no tolerance to choose; a wrong frame, crop or model differs by far more.

Readiness is never waited for by sleeping: the client's own connection retries (bounded by its timeout),
``wait_for_workers`` (bounded), Dask events (a shard's progress, which names its worker), and futures.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import threadpoolctl
import uvloop
from distributed import Client

from daemon.core.models import ModelError
from daemon.core.pipeline import Pipeline, PipelineOptions
from daemon.core.shard import ShardResult, ShardTask, run_shard
from daemon.core.video import probe
from daemon.jobs import dask_worker
from daemon.jobs.dask_executor import DaskExecutor, NoWorkers, SchedulerUnreachable
from daemon.jobs.executor import (
    ExecutorUnavailable,
    FailureKind,
    ShardFailed,
    ShardTimedOut,
    WorkerDied,
)
from tests import tinymodels
from tests.conftest import frame_pattern
from tests.jobs.daskcluster import Cluster, free_port

CPU = "CPUExecutionProvider"
# a shard of LONG_FRAMES 64x64 frames takes ~4 s with the tiny models (1.6 s for 400 frames in one
# process, measured on this 2-core machine): ample time to kill its worker after its first progress
# event, which arrives within a batch (4 frames, ~20 ms) of its start
LONG_FRAMES = 1000


def on_uvloop(body: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 120.0) -> Any:
    async def bounded():
        return await asyncio.wait_for(body(), timeout)
    return uvloop.run(bounded())


def write_video(path: Path, frames: int, size: int = 64) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (size, size))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    try:
        for i in range(frames):
            writer.write(frame_pattern(i, size, size))
    finally:
        writer.release()
    return path


def in_process(models: Path, task: ShardTask) -> ShardResult:
    """The shard computed here, as a worker computes it: one thread everywhere."""
    with threadpoolctl.threadpool_limits(1):
        return run_shard(Pipeline(PipelineOptions(models, threads=1)), task)


def assert_same_rows(got: ShardResult, want: ShardResult) -> None:
    assert (got.start, got.stop, got.frames) == (want.start, want.stop, want.frames)
    for name in want.rows:
        a, b = got.rows[name], want.rows[name]
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tinymodels.write_set(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def own_cluster(tmp_path):
    (tmp_path / "cluster").mkdir()
    cluster = Cluster(tmp_path / "cluster")
    yield cluster
    cluster.stop()


def executor(cluster: Cluster, models: Path, path_map: dict[str, str] | None = None) -> DaskExecutor:
    return DaskExecutor(cluster.address, PipelineOptions(models), path_map, connect_timeout=30, worker_wait=60,
                        status_interval=0.5)


async def refreshed(ex: DaskExecutor, ready: Callable[[list], bool], seconds: float = 15.0) -> list:
    """``ex.workers()`` once ``ready`` holds for it (polled for up to ``seconds``). The plugins' state
    rides on worker heartbeats (about one a second here): there is no event a client can wait on."""
    for _ in range(int(seconds / 0.1)):
        await ex.refresh()
        if ready(ex.workers()):
            break
        await asyncio.sleep(0.1)
    return ex.workers()


class ProgressWatch:
    """A second client subscribed to the shards' progress events, which name the worker and its pid."""

    def __init__(self, client: Client):
        self.client = client
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        client.subscribe_topic(dask_worker.PROGRESS_TOPIC, lambda event: self.events.put_nowait(event[1]))

    async def next(self, wanted: Callable[[dict], bool] = lambda event: True) -> dict:
        """The next progress event (``key``, ``done``, ``worker``, ``pid``) that is ``wanted``."""
        while True:
            event = await self.events.get()
            if wanted(event):
                return event


def test_shards_equal_in_process_runs_and_workers_are_listed(shared_cluster, models, tmp_path):
    video = write_video(tmp_path / "clip.mp4", 40)
    info = probe(video)
    tasks = [ShardTask.of(info, a, b, label=f"shard {a}") for a, b in ((0, 13), (13, 27), (27, 40))]
    tasks.append(ShardTask.of(info, 3, 40, step=3, label="every third"))
    want = [in_process(models, t) for t in tasks]

    async def body():
        ex = executor(shared_cluster, models)
        try:
            providers = await ex.start()
            assert providers == {"detector": CPU, "multitask": CPU, "landmarks": CPU}
            await ex.client.wait_for_workers(2, timeout=60)
            seen: list[int] = []
            got = await asyncio.gather(*(ex.run(t, timeout=60, progress=seen.append) for t in tasks))
            for g, w in zip(got, want):
                assert_same_rows(g, w)
                assert g.providers == providers
            assert all(0 < n <= 40 for n in seen)
            # the plugins' counters ride on the workers' heartbeats: refresh until they show all 4 shards
            listed = await refreshed(ex, lambda ws: sum(w.tasks_done for w in ws) >= len(tasks))
            assert len(listed) == 2 and ex.capacity == 2
            assert {w.provider for w in listed} == {CPU} and {w.threads for w in listed} == {1}
            assert {w.name for w in listed} == set((await ex.client.scheduler.identity())["workers"])
            assert sum(w.tasks_done for w in listed) == len(tasks)
            assert {int(w.extra["pid"]) for w in listed} >= {int(g.worker.rsplit(":", 1)[1]) for g in got}
        finally:
            await ex.close()

    on_uvloop(body)


def test_path_map_finds_the_video_or_names_the_path_and_the_worker(shared_cluster, models, tmp_path):
    real = write_video(tmp_path / "mount" / "lab" / "clip.mp4", 12)
    daemon_prefix = "/aud-test-volume-that-does-not-exist/lab"
    info = probe(real)
    task = ShardTask.of(info, 0, 12, label="mapped")
    want = in_process(models, task)

    async def body():
        ex = executor(shared_cluster, models, {daemon_prefix: str(tmp_path / "mount" / "lab")})
        try:
            await ex.start()
            # the daemon's path exists only after mapping
            assert not os.path.exists(f"{daemon_prefix}/clip.mp4")
            got = await ex.run(ShardTask(f"{daemon_prefix}/clip.mp4", 0, 12, None, label="mapped"), timeout=60)
            assert_same_rows(got, want)
            addresses = {w.name for w in ex.workers()}
            # a path that exists nowhere: INPUT failure naming the mapped and the given path and the worker
            with pytest.raises(ShardFailed) as failed:
                await ex.run(ShardTask(f"{daemon_prefix}/missing.mp4", 0, 4, None, label="missing"), timeout=60)
            assert failed.value.kind is FailureKind.INPUT
            assert str(tmp_path / "mount" / "lab" / "missing.mp4") in str(failed.value)
            assert f"{daemon_prefix}/missing.mp4" in str(failed.value)
            assert failed.value.worker in addresses and failed.value.worker in str(failed.value)
            # a path outside the map that does not exist: named as given
            with pytest.raises(ShardFailed) as failed:
                await ex.run(ShardTask(str(tmp_path / "nowhere.mp4"), 0, 4, None), timeout=60)
            assert failed.value.kind is FailureKind.INPUT and str(tmp_path / "nowhere.mp4") in str(failed.value)
            # a file that is there but is not a video: INPUT, the decoder's reason, the worker
            (tmp_path / "mount" / "lab" / "notes.mp4").write_text("not a video")
            with pytest.raises(ShardFailed) as failed:
                await ex.run(ShardTask(f"{daemon_prefix}/notes.mp4", 0, 4, None), timeout=60)
            assert failed.value.kind is FailureKind.INPUT and "notes.mp4" in str(failed.value)
            assert failed.value.worker in str(failed.value)
        finally:
            await ex.close()

    on_uvloop(body)


def test_timeout_cancels_the_shard_and_restarts_its_worker(shared_cluster, models, tmp_path):
    frames = 3 * LONG_FRAMES  # >= 3 s even on a CPU several times faster than this one
    video = write_video(tmp_path / "long.mp4", frames)
    info = probe(video)
    after = ShardTask.of(info, 0, 8, label="after")
    want = in_process(models, after)

    async def body():
        ex = executor(shared_cluster, models)
        try:
            await ex.start()
            await ex.client.wait_for_workers(2, timeout=60)
            before = {w.name for w in await refreshed(ex, lambda ws: len(ws) == 2)}
            with pytest.raises(ShardTimedOut) as timed_out:  # 1 s: a fraction of the shard's time
                await ex.run(ShardTask.of(info, 0, frames, label="long"), timeout=1.0)
            assert timed_out.value.worker in before and "long" in str(timed_out.value)
            # restarted by its nanny: a new process at a new address, with the models loaded again
            now = await refreshed(ex, lambda ws: len(ws) == 2 and timed_out.value.worker not in {w.name for w in ws}
                                  and {w.provider for w in ws} == {CPU})
            assert timed_out.value.worker not in {w.name for w in now} and len(now) == 2
            assert_same_rows(await ex.run(after, timeout=60), want)
        finally:
            await ex.close()

    on_uvloop(body)


def test_workers_with_other_model_files_are_refused(shared_cluster, models):
    async def body():
        ex = DaskExecutor(shared_cluster.address, PipelineOptions(models), connect_timeout=30,
                          hashes={"detector": "0" * 64, "multitask": "1" * 64, "landmarks": "2" * 64})
        try:
            with pytest.raises(ModelError) as refused:
                await ex.start()
            message = str(refused.value)
            assert "worker tcp://127.0.0.1:" in message and str(models / "retinaface.onnx") in message
            assert "0" * 64 in message and "sha256" in message
        finally:
            await ex.close()
        # the workers closed themselves and were started again; the plugin is gone from the scheduler,
        # so they come back clean and a daemon with the right files runs on them
        good = executor(shared_cluster, models)
        try:
            await good.start()
            await good.client.wait_for_workers(2, timeout=60)
        finally:
            await good.close()

    on_uvloop(body)


def test_unreachable_scheduler_names_the_address(models):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there

    async def body():
        ex = DaskExecutor(address, PipelineOptions(models), connect_timeout=2)
        with pytest.raises(SchedulerUnreachable) as raised:
            await ex.start()
        assert address in str(raised.value) and raised.value.address == address
        assert isinstance(raised.value, ExecutorUnavailable)
        await ex.close()

    on_uvloop(body)


def test_no_worker_within_worker_wait_names_the_scheduler(models, tmp_path):
    cluster = Cluster(tmp_path, workers=0)
    try:
        async def body():
            ex = DaskExecutor(cluster.address, PipelineOptions(models), connect_timeout=30, worker_wait=1)
            try:
                with pytest.raises(NoWorkers) as none:
                    await ex.start()
                assert cluster.address in str(none.value) and "dask worker" in str(none.value)
                assert ex.client is None  # a failed start closed its client
            finally:
                await ex.close()

        on_uvloop(body)
    finally:
        cluster.stop()


def test_worker_killed_mid_shard_reschedules_then_reports_worker_died(own_cluster, models, tmp_path):
    video = write_video(tmp_path / "long.mp4", LONG_FRAMES)
    task = ShardTask.of(probe(video), 0, LONG_FRAMES, label="long")
    want = in_process(models, task)

    async def body():
        ex = executor(own_cluster, models)
        watch = None
        try:
            await ex.start()
            await ex.client.wait_for_workers(2, timeout=60)
            watch = ProgressWatch(await Client(own_cluster.address, asynchronous=True, set_as_default=False))
            # one worker killed mid-shard: the scheduler reschedules the shard; same rows, other process
            run = asyncio.create_task(ex.run(task, timeout=90))
            first = await watch.next()
            os.kill(first["pid"], signal.SIGKILL)
            got = await run
            assert_same_rows(got, want)
            assert int(got.worker.rsplit(":", 1)[1]) != first["pid"]
            # both workers that try it killed: past allowed-failures (1), WorkerDied naming the last one
            run = asyncio.create_task(ex.run(task, timeout=90))
            first = await watch.next(lambda e: e["key"] != first["key"])  # this shard's, not the last one's
            os.kill(first["pid"], signal.SIGKILL)
            second = await watch.next(lambda e: e["key"] == first["key"] and e["pid"] != first["pid"])
            os.kill(second["pid"], signal.SIGKILL)
            with pytest.raises(WorkerDied) as died:
                await run
            assert died.value.worker == second["worker"] and second["worker"] in str(died.value)
        finally:
            if watch is not None:
                await watch.client.close()
            await ex.close()

    try:
        on_uvloop(body)
    except BaseException:
        print(own_cluster.logs())
        raise


def test_scheduler_lost_mid_shard_then_back_on_the_same_port(own_cluster, models, tmp_path):
    video = write_video(tmp_path / "long.mp4", LONG_FRAMES)
    info = probe(video)
    long_task = ShardTask.of(info, 0, LONG_FRAMES, label="long")
    short_task = ShardTask.of(info, 100, 120, label="after")
    want = in_process(models, short_task)

    async def body():
        ex = executor(own_cluster, models)
        try:
            await ex.start()
            started = asyncio.Event()
            run = asyncio.create_task(ex.run(long_task, timeout=90, progress=lambda n: started.set()))
            await started.wait()
            own_cluster.stop_scheduler()  # SIGTERM: `dask scheduler` stops as systemctl stop would
            with pytest.raises(ExecutorUnavailable) as lost:
                await run
            assert own_cluster.address in str(lost.value)
            with pytest.raises(ExecutorUnavailable):  # nothing runs while it is gone
                await ex.run(short_task, timeout=60)
            own_cluster.start_scheduler()
            await asyncio.wait_for(ex.wait_available(), 90)
            got = await ex.run(short_task, timeout=60)
            assert_same_rows(got, want)
            assert {w.provider for w in await refreshed(ex, lambda ws: {w.provider for w in ws} == {CPU})} == {CPU}
        finally:
            await ex.close()

    try:
        on_uvloop(body)
    except BaseException:
        print(own_cluster.logs())
        raise
