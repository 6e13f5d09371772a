"""What runs inside a worker process: one ``Pipeline`` per process, and shard tasks.

``init_worker`` is the ``ProcessPoolExecutor`` initializer: it loads the ONNX sessions once per process
(the only module-level state of the project, set up explicitly here). ``run_shard`` decodes its own
frame range, runs the pipeline and writes the results atomically to the path it was given, so nothing
but small task descriptions crosses between processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import threadpoolctl

from . import providers
from .pipeline import Pipeline, PipelineOptions
from .video import VideoInfo, read_range

_pipeline: Pipeline | None = None
_init_error: Exception | None = None  # why init_worker could not load the models (raised by tasks)


def init_worker(options: PipelineOptions) -> None:
    """Pool initializer. Workers ignore SIGINT: Ctrl-C in a terminal signals the whole process group,
    and only the parent should act on it (finish or stop the running shards), not every worker die
    mid-task with a KeyboardInterrupt. Every native thread pool of the worker gets the worker's share
    of the cores (see ``limit_threads``), and its sessions share one memory arena."""
    global _pipeline, _init_error
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads(providers.worker_threads(options.workers, options.threads))
    providers.share_cpu_arena()
    try:
        _pipeline = Pipeline(options)
        release_freed_memory()
    except Exception as exc:  # a raising initializer breaks the pool without a word: report it instead
        _init_error = exc


def limit_threads(threads: int) -> None:
    """BLAS (numpy's matmuls in the crop resize) and OpenCV to ``threads`` threads, like ONNX Runtime.

    Left at their default (one thread per core), BLAS threads spin after each matmul and take a core
    from the other workers' inference. Two one-thread pipelines side by side at 1920x1080
    (``bench/stages.py``): 575 and 578 ms a frame with the defaults, 509 and 542 ms set up as
    workers (MTL crop 15 -> 4 ms, MTL 35 -> 18-21 ms, STAR 383 -> 352-370 ms)."""
    threadpoolctl.threadpool_limits(limits=threads)
    cv2.setNumThreads(threads)


def release_freed_memory() -> None:
    """Hand the memory that loading the models freed (the parsed ONNX files) back to the system.

    glibc keeps freed heap memory for reuse, so each worker would hold about the size of the model
    files twice while idle between jobs; measured after loading, MTL 216 -> 111 MB and STAR 146 ->
    70 MB of RSS (at the peak of a run the gain is smaller: ~30 MB a worker, as later allocations
    reuse freed memory). Other C libraries (macOS) have no ``malloc_trim``."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def pipeline() -> Pipeline:
    if _init_error is not None:
        raise _init_error
    if _pipeline is None:
        raise RuntimeError("worker not initialised: init_worker() was not run in this process")
    return _pipeline


@dataclass(frozen=True)
class ShardTask:
    video: str
    start: int  # first frame, 0-based
    stop: int  # one past the last frame
    previous_timestamp: float | None  # probe timestamp of frame start-1 (verifies the seek)
    out_path: str  # where the .npz results go

    @classmethod
    def of(cls, video: str | Path, info: VideoInfo, start: int, stop: int, out_path: str | Path) -> "ShardTask":
        """The task for frames [start, stop) of a probed video (``info`` supplies the seek check)."""
        return cls(str(video), start, stop, info.timestamps[start - 1] if start else None, str(out_path))


@dataclass(frozen=True)
class ShardDone:
    start: int
    stop: int
    frames: int
    seconds: float
    pid: int
    providers: dict[str, str]


def run_shard(task: ShardTask) -> ShardDone:
    began = time.perf_counter()
    pipe = pipeline()
    frames = read_range(task.video, task.start, task.stop, task.previous_timestamp)
    results = pipe.run(frames)
    results.save(Path(task.out_path))
    return ShardDone(task.start, task.stop, len(results), time.perf_counter() - began, os.getpid(),
                     dict(pipe.providers))


def warm_up() -> dict[str, str]:
    """A no-op task that returns once the worker's sessions are loaded (pool start-up timing)."""
    return dict(pipeline().providers)


def plan_shards(frames: int, shard_frames: int, workers: int) -> list[tuple[int, int]]:
    """Frame ranges [start, stop) covering the video in order, at most ``shard_frames`` long.

    Guided: each shard is half of an equal share of the frames that remain (capped at
    ``shard_frames``), so shards shrink towards the end of the video. The workers take shards as
    they become free, so one that runs faster takes more of the small final shards and all finish
    nearly together, instead of one idling while another finishes a full-size shard. Shards never
    get smaller than a sixteenth of ``shard_frames`` (each costs a seek: ~40 ms at 1920x1080), nor so
    large that a short video leaves a worker without one."""
    if frames <= 0:
        return []
    workers = max(1, min(workers, frames))
    smallest = max(1, min(shard_frames // 16, frames // workers))
    ranges, start = [], 0
    while start < frames:
        remaining = frames - start
        size = min(remaining, max(smallest, min(shard_frames, -(-remaining // (2 * workers)))))
        ranges.append((start, start + size))
        start += size
    return ranges
