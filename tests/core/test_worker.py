"""Shard planning, and the worker's task functions run in this process."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest

from daemon.core import providers, worker
from daemon.core.extract import make_pool
from daemon.core.pipeline import Pipeline, PipelineOptions
from daemon.core.results import FrameResults
from daemon.core.video import probe, read_range
from daemon.core.worker import ShardTask, plan_shards

GRID = list(product([1, 2, 3, 5, 9, 10, 47, 48, 49, 96, 97, 275, 1000], [1, 7, 48], [1, 2, 3, 4, 8]))


def check_cover(ranges, frames, shard_frames):
    covered = [i for start, stop in ranges for i in range(start, stop)]
    assert covered == list(range(frames))  # every frame exactly once, in order
    assert all(0 < stop - start <= shard_frames for start, stop in ranges)


@pytest.mark.parametrize("frames,shard_frames,workers", GRID)
def test_plan_covers_every_frame_once(frames, shard_frames, workers):
    check_cover(plan_shards(frames, shard_frames, workers), frames, shard_frames)


@pytest.mark.parametrize("frames", [0, -3])
def test_plan_of_nothing(frames):
    assert plan_shards(frames, 48, 4) == []


@pytest.mark.parametrize("frames,workers", [(1, 1), (2, 2), (10, 4), (12, 4), (30, 8), (100, 8), (96, 2), (8, 8)])
def test_plan_gives_every_worker_a_shard(frames, workers):
    assert len(plan_shards(frames, 48, workers)) >= workers


@pytest.mark.parametrize("frames,shard_frames,workers", [(1000, 48, 2), (1000, 48, 3), (275, 32, 2), (5000, 32, 8)])
def test_plan_shards_shrink_towards_the_end(frames, shard_frames, workers):
    ranges = plan_shards(frames, shard_frames, workers)
    check_cover(ranges, frames, shard_frames)
    sizes = [stop - start for start, stop in ranges]
    full = (frames - 4 * workers * shard_frames) // shard_frames  # while plenty remains: full shards
    assert sizes[:full] == [shard_frames] * full
    assert sizes == sorted(sizes, reverse=True)  # shrinking
    assert max(sizes[-workers:]) <= shard_frames // 16  # each worker's last shard is small
    assert len(ranges) < frames / shard_frames + 4 * workers + 8  # but not many more than equal shards


def test_plan_shards_guided_sizes():
    assert [b - a for a, b in plan_shards(275, 32, 2)] == [32, 32, 32, 32, 32, 29, 22, 16, 12, 9, 7, 5, 4, 3, 2, 2, 2, 2]


def test_plan_fewer_frames_than_workers():
    assert plan_shards(3, 48, 8) == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize("frames,workers", [(9, 4), (5, 4), (20, 8)])
def test_plan_gives_every_worker_a_shard_for_any_short_video(frames, workers):
    ranges = plan_shards(frames, 48, workers)
    check_cover(ranges, frames, 48)
    assert len(ranges) >= workers


# --- task functions ------------------------------------------------------------------------------------------

@pytest.fixture
def fresh_worker(monkeypatch):
    monkeypatch.setattr(worker, "_pipeline", None)


def test_pipeline_before_init_is_an_error(fresh_worker):
    with pytest.raises(RuntimeError, match="not initialised"):
        worker.pipeline()


def test_run_shard_in_process(fresh_worker, tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=14, width=64, height=48)
    info = probe(video)
    opts = PipelineOptions(models_dir=tiny_models, provider="cpu", batch_size=3, cache_dir=tmp_path / "cache")
    worker.init_worker(opts)
    assert worker.warm_up() == {"detector": "CPUExecutionProvider", "multitask": "CPUExecutionProvider",
                                "landmarks": "CPUExecutionProvider"}
    out = tmp_path / "shard-5-11.npz"
    done = worker.run_shard(ShardTask(str(video), 5, 11, info.timestamps[4], str(out)))
    assert (done.start, done.stop, done.frames) == (5, 11, 6)
    assert done.providers["multitask"] == "CPUExecutionProvider"
    assert done.seconds > 0
    saved = FrameResults.load(out)
    assert saved.frame.tolist() == list(range(5, 11)) and saved.success.all()
    expected = Pipeline(opts).run(read_range(video, 5, 11))
    for name, arr in expected.arrays().items():
        np.testing.assert_array_equal(getattr(saved, name), arr, err_msg=name)


# --- worker initialisation in real worker processes ---------------------------------------------------------

def native_threads() -> tuple[list[int], int]:
    import cv2
    import threadpoolctl

    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()], cv2.getNumThreads()


@pytest.mark.parametrize("workers,threads", [(2, 0), (1, 1), (1, 3)])
def test_workers_limit_blas_and_opencv_to_their_share_of_the_cores(tiny_models, tmp_path, workers, threads):
    opts = PipelineOptions(models_dir=tiny_models, provider="cpu", workers=workers, threads=threads,
                           cache_dir=tmp_path / "cache")
    expected = providers.worker_threads(workers, threads)
    with make_pool(opts, 1) as pool:
        pool.submit(worker.warm_up).result(timeout=120)  # sessions built on the shared arena
        blas, opencv = pool.submit(native_threads).result(timeout=60)
    assert blas and set(blas) == {expected}
    assert opencv == expected


def test_release_freed_memory_runs_anywhere():
    worker.release_freed_memory()  # glibc: malloc_trim(0); elsewhere: nothing to do
