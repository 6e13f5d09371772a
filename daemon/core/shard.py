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
from .video import Reader, VideoInfo


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
    continued: bool = False  # read on from the worker's open capture (no open, no seek)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_shard(pipeline: Pipeline, task: ShardTask, progress: Callable[[int], None] | None = None,
              reader: Reader | None = None) -> ShardResult:
    """Decode the task's frames and measure them; ``progress(frames done)`` as batches finish.

    A worker passes the ``reader`` it keeps, so a shard that starts where its last one ended reads on
    without a seek; without one, the video is opened for this shard alone."""
    began = time.perf_counter()
    own = reader is None
    reader = Reader() if reader is None else reader
    continued = reader.continues(task.video, task.start)
    try:
        frames = reader.frames(task.video, task.start, task.stop, task.previous_timestamp, step=task.step)
        rows = pipeline.run(frames, progress)
    finally:
        if own:
            reader.close()
    return ShardResult(task.start, task.stop, task.frames, rows, time.perf_counter() - began,
                       worker_name(), dict(pipeline.providers), continued)
