"""A shard: the unit of work a worker runs. The task says which frames of which video; the result
carries the measured rows back by value (no file on the worker's disk).

``run_shard`` is pure apart from reading the video: the same function runs in a local worker
process, a Dask worker or the test suite's in-process executor.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from .pipeline import Pipeline
from .results import FaceRows
from .video import VideoInfo, read_range


@dataclass(frozen=True)
class ShardTask:
    video: str
    start: int  # first frame, 0-based
    stop: int  # one past the last frame
    previous_timestamp: float | None  # probe timestamp of frame start-1 (verifies the seek)
    step: int = 1  # measure every step-th frame of [start, stop) (aud extract --every)
    label: str = ""  # for messages: "job 3 shard 7"

    @classmethod
    def of(cls, info: VideoInfo, start: int, stop: int, step: int = 1, label: str = "") -> ShardTask:
        """The task for frames [start, stop) of a probed video (``info`` supplies the seek check)."""
        return cls(info.path, start, stop, info.timestamps[start - 1] if start else None, step, label)

    @property
    def frames(self) -> int:
        """How many frames the shard measures."""
        return len(range(self.start, self.stop, self.step))


@dataclass(frozen=True)
class ShardResult:
    start: int
    stop: int
    frames: int  # frames measured
    rows: FaceRows
    seconds: float
    worker: str  # host:pid
    providers: dict[str, str]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_shard(pipeline: Pipeline, task: ShardTask, progress: Callable[[int], None] | None = None) -> ShardResult:
    """Decode the task's frames and measure them; ``progress(frames done)`` as batches finish."""
    began = time.perf_counter()
    frames = read_range(task.video, task.start, task.stop, task.previous_timestamp, step=task.step)
    rows = pipeline.run(frames, progress)
    return ShardResult(task.start, task.stop, task.frames, rows, time.perf_counter() - began,
                       worker_name(), dict(pipeline.providers))
