"""A shard run in this process, and the set-up of a worker process."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from daemon.core import providers, worker
from daemon.core.pipeline import Pipeline, PipelineOptions
from daemon.core.shard import ShardTask, run_shard
from daemon.core.video import probe, read_range


def test_run_shard_in_process(tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=14, width=64, height=48)
    info = probe(video)
    opts = PipelineOptions(models_dir=tiny_models, provider="cpu", batch_size=3, cache_dir=tmp_path / "cache")
    pipeline = Pipeline(opts)
    seen = []
    done = run_shard(pipeline, ShardTask.of(info, 5, 11, label="job 1 shard 0"), seen.append)
    assert (done.start, done.stop, done.frames) == (5, 11, 6)
    assert done.providers["multitask"] == "CPUExecutionProvider"
    assert done.seconds > 0 and ":" in done.worker
    assert seen == [1, 2, 3, 4, 5, 6]  # as each frame finishes (its landmarks), not only per batch of 3
    assert done.rows.frame.tolist() == list(range(5, 11)) and done.rows.success.all()
    expected = Pipeline(opts).run(read_range(video, 5, 11))
    for name, arr in expected.items():
        np.testing.assert_array_equal(done.rows[name], arr, err_msg=name)


def test_run_shard_every_nth_frame(tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=14, width=64, height=48)
    info = probe(video)
    opts = PipelineOptions(models_dir=tiny_models, provider="cpu", cache_dir=tmp_path / "cache")
    done = run_shard(Pipeline(opts), ShardTask.of(info, 3, 14, step=4))
    assert done.frames == 3 and done.rows.frame.tolist() == [3, 7, 11]
    full = Pipeline(opts).run(read_range(video, 0, 14))
    np.testing.assert_array_equal(done.rows.au, full.au[[3, 7, 11]])
    np.testing.assert_array_equal(done.rows.timestamp, np.asarray(info.timestamps)[[3, 7, 11]])


def native_threads() -> tuple[list[int], int]:
    import cv2
    import threadpoolctl

    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()], cv2.getNumThreads()


@pytest.mark.parametrize("workers,threads", [(2, 0), (1, 1), (1, 3)])
def test_a_prepared_process_limits_blas_and_opencv_to_its_share_of_the_cores(tiny_models, tmp_path, workers,
                                                                              threads):
    opts = PipelineOptions(models_dir=tiny_models, provider="cpu", workers=workers, threads=threads,
                           cache_dir=tmp_path / "cache")
    expected = providers.worker_threads(workers, threads)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=worker.prepare_process, initargs=(opts,)) as pool:
        blas, opencv = pool.submit(native_threads).result(timeout=120)
    assert blas and set(blas) == {expected}
    assert opencv == expected


def test_release_freed_memory_runs_anywhere():
    worker.release_freed_memory()  # glibc: malloc_trim(0); elsewhere: nothing to do
