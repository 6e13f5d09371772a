"""A running job in memory, and how a started job becomes one (the job store holds the durable truth).

``prepare`` checks the input is still the job's content, probes it and plans its shards, or resumes
the plan the store holds (computing again the stored shards of an older format). It runs off the
event loop (it reads the file and the store).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import protocol as msg
from ..core.schema import SHARD_FORMAT
from ..core.shard import ShardTask
from ..core.video import VideoError, VideoInfo
from . import estimate, inputs
from .history import History
from .plan import TimeSelection, plan_selection
from .store import Job, JobStore

log = logging.getLogger("aud.runner")


class JobFailure(Exception):
    """Why a job cannot go on, in words for the user; ``set_aside`` False leaves the input alone."""

    def __init__(self, reason: str, set_aside: bool = True):
        super().__init__(reason)
        self.set_aside = set_aside


@dataclass
class ActiveJob:
    """A running job: its video, its shards' frames and how far it has come."""

    job: Job
    path: Path
    info: VideoInfo
    ranges: dict[int, tuple[int, int]]
    expected: np.ndarray  # the frame indexes the job measures
    frames_done: int  # committed
    identity: tuple[int, int, int, int]
    every: int = 1
    in_flight: dict[int, int] = field(default_factory=dict)  # shard -> frames finished so far
    started: float = field(default_factory=time.monotonic)
    frames_this_run: int = 0
    waiting: str | None = None  # why the job cannot go on now (its result cannot be written or committed yet)
    finishing: bool = False
    recent_fps: float | None = None  # the recent done jobs' rate: this job's estimate until it has its own

    @property
    def frames_total(self) -> int:
        return len(self.expected)

    @property
    def frames_seen(self) -> int:
        return self.frames_done + sum(self.in_flight.values())

    @property
    def fps(self) -> float:
        elapsed = time.monotonic() - self.started
        seen = self.frames_this_run + sum(self.in_flight.values())
        return seen / elapsed if elapsed > 0 else 0.0

    @property
    def rate(self) -> estimate.Rate | None:
        """What the time left is estimated from (``estimate.job_rate``)."""
        return estimate.job_rate(self.frames_this_run, self.fps, self.recent_fps)

    @property
    def eta_s(self) -> float | None:
        return estimate.seconds(self.frames_total - self.frames_seen, self.rate)

    @property
    def eta_basis(self) -> str | None:
        rate = self.rate
        return None if rate is None else str(rate.basis)

    def running(self) -> estimate.Running:
        return estimate.Running(self.frames_total - self.frames_seen, self.rate)

    def progress(self) -> msg.JobProgress:
        rate = self.rate
        return msg.JobProgress(job=self.job.id, file=self.job.name, frames_done=self.frames_seen,
                               frames_total=self.frames_total, fps=round(self.fps, 3),
                               eta_s=estimate.seconds(self.frames_total - self.frames_seen, rate),
                               eta_basis=None if rate is None else str(rate.basis), frames_saved=self.frames_done)

    def committed(self, index: int, frames: int) -> None:
        """A shard's rows are in the job store: its frames count as saved."""
        self.in_flight.pop(index, None)
        self.frames_done += frames
        self.frames_this_run += frames

    def frames(self, index: int) -> str:
        """A shard's frames in words (1-based, as a player shows them)."""
        start, stop = self.ranges[index]
        return f"frames {start + 1}-{stop}"

    def task(self, index: int) -> ShardTask:
        start, stop = self.ranges[index]
        return ShardTask.of(self.info, start, stop, self.every, f"job {self.job.id} shard {index}")

    def unchanged(self) -> bool:
        """The input is as it was when the job started (or gone: every frame was read before it went)."""
        try:
            return inputs.identity(self.path) == self.identity
        except FileNotFoundError:
            return True


def prepare(store: JobStore, job: Job, selection: TimeSelection, shard_frames: int, workers: int,
            probe_video: Callable[[Path], VideoInfo]) -> ActiveJob:
    """Check the input is still this job's content (hashed again only when the file's identity is not
    the one recorded when it was hashed), probe it and plan (or resume) its shards; raises JobFailure
    with the reason it cannot run."""
    path = Path(job.source)
    try:
        identity = inputs.identity(path)
        if inputs.identity_text(identity) != job.identity:  # unknown, or the file changed since it was hashed
            if inputs.fingerprint(path) != job.fingerprint:
                raise JobFailure(f"{path} was replaced by different content before it was processed; "
                                 f"the new content is a job of its own", set_aside=False)
            store.set_identity(job.id, inputs.identity_text(identity))
        info = probe_video(path)
    except FileNotFoundError:
        raise JobFailure(f"{path} was moved or deleted before it was processed") from None
    except VideoError as exc:
        raise JobFailure(str(exc)) from None
    except OSError as exc:
        raise JobFailure(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if job.frames_total is not None and job.frames_total != info.frames:
        raise JobFailure(f"the video changed while it was being processed "
                         f"({job.frames_total} frames before, {info.frames} now)")
    frames = selection.frames(info)
    expected = np.asarray(frames.frames(info.frames), dtype=np.int64)
    if expected.size == 0:
        raise JobFailure(f"{path}: no frames selected (the video has {info.frames} frames, "
                         f"{info.timestamps[-1]:.2f} s)")
    ranges = plan_selection(info.frames, frames, shard_frames, workers)
    shards = store.shards(job.id)
    if not shards:
        store.set_plan(job.id, info.frames, info_json(info, job), ranges)
        shards = store.shards(job.id)
    stale = [s.index for s in shards if s.done and s.format != SHARD_FORMAT]
    if stale:  # results of another aud version: compute them again
        log.info("job %s: %d stored shard(s) of an older format are computed again", job.id, len(stale))
        store.redo_shards(job.id, stale)
        shards = store.shards(job.id)
    done = sum(len(range(s.start, s.stop, frames.step)) for s in shards if s.done)
    return ActiveJob(job=store.get(job.id) or job, path=path, info=info,
                     ranges={s.index: (s.start, s.stop) for s in shards}, expected=expected,
                     frames_done=done, identity=identity, every=selection.every,
                     recent_fps=estimate.recent_rate(History(store).recent_rates(estimate.RECENT_JOBS)))


def pending(store: JobStore, job_id: int) -> list[int]:
    """The job's shards still to be computed."""
    return [s.index for s in store.shards(job_id) if not s.done]


def info_json(info: VideoInfo, job: Job) -> str:
    """The video's properties as the job store keeps them."""
    return json.dumps({**info.properties(), "fingerprint": job.fingerprint})
