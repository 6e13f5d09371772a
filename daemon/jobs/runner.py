"""The one job runner: plan a video into shards, dispatch them, retry, assemble, write.

``aud extract`` runs it on a throw-away job store until every job has ended; the daemon runs it for
its whole life, fed by the inbox. The job store is the single source of truth: a shard is done when
its rows are committed there, a job is done when its CSV is written and recorded, so a runner killed at
any instant resumes where the store says it was.

Policies, each small:

* which shard runs next: ``FairScheduler`` (round-robin across running jobs; within a job, the shard
  that continues where an idle worker's open capture stands, so each worker reads its lane of the
  video in order without seeking);
* a shard whose worker died or that timed out is retried up to ``shard_retries`` times, alone of all
  the shards in flight (the executor tells which one it was); a shard whose own code failed is not
  retried: bad input fails the job with the reason, an internal error fails it with the reason and
  is logged with its traceback;
* an executor that cannot run anything (a cluster's scheduler gone) costs no attempt: the runner
  waits until it is back;
* a destination that cannot take the result yet (disk full) is retried every ``output_retry_seconds``
  when set, else the job fails.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import output
from .. import protocol as msg
from ..core.mirror_video import render_inspection_videos
from ..core.results import FaceRows, ShardFormatError
from ..core.schema import SHARD_FORMAT
from ..core.shard import ShardResult, ShardTask
from ..core.video import VideoError, VideoInfo, probe
from . import inputs
from .executor import Executor, ExecutorUnavailable, FailureKind, ShardFailed, ShardTimedOut, WorkerDied
from .plan import FrameSelection, plan_selection
from .scheduler import FairScheduler
from .store import Job, JobState, JobStore

log = logging.getLogger("aud.runner")

# the destination cannot take the CSV for a reason that is the filesystem's, not the job's
WAIT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


@dataclass(frozen=True)
class TimeSelection:
    """``aud extract --start/--end/--every``: seconds, turned into frames per video."""

    start_s: float = 0.0
    end_s: float | None = None
    every: int = 1

    def frames(self, info: VideoInfo) -> FrameSelection:
        stamps = np.asarray(info.timestamps)
        start = int(np.searchsorted(stamps, self.start_s - 1e-9)) if self.start_s > 0 else 0
        stop = None if self.end_s is None else int(np.searchsorted(stamps, self.end_s - 1e-9))
        return FrameSelection(start, stop, self.every)


@dataclass(frozen=True)
class RunnerConfig:
    output: output.OutputOptions
    key: str  # what shapes the output (models, settings): part of a job's identity
    sidecar: dict  # the run's part of every sidecar: models, providers, options, packages
    shard_frames: int = 32
    shard_retries: int = 2
    shard_timeout_seconds: float | None = None
    output_retry_seconds: float | None = None  # None: a destination that cannot take the CSV fails the job
    selection: TimeSelection = field(default_factory=TimeSelection)


class Destination(Protocol):
    """Where results go and what becomes of inputs: the outbox and inbox folders for the daemon, the
    paths given on the command line for ``aud extract``."""

    def csv_path(self, job: Job) -> Path:
        """The main CSV's path for this job (raises OSError when the folder cannot be made)."""

    def input_after(self, job: Job) -> Path:
        """Where the input will be once the job is done (for the sidecar)."""

    def done(self, job: Job, csv: Path) -> None:
        """The result is written and recorded: e.g. move the input to .done."""

    def failed(self, job: Job, reason: str, set_aside: bool) -> None:
        """The job failed or was cancelled: e.g. move the input to .failed with the reason."""


@dataclass
class ActiveJob:
    """A running job in memory (the store holds the durable truth)."""

    job: Job
    path: Path
    info: VideoInfo
    ranges: dict[int, tuple[int, int]]
    expected: np.ndarray  # the frame indexes the job measures
    frames_done: int  # committed
    identity: tuple[int, int, int, int]
    in_flight: dict[int, int] = field(default_factory=dict)  # shard -> frames finished so far
    failures: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    frames_this_run: int = 0
    waiting: str | None = None  # why the finished job's result cannot be written yet
    finishing: bool = False

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
    def eta_s(self) -> float | None:
        fps = self.fps
        return round((self.frames_total - self.frames_seen) / fps, 1) if fps > 0 else None

    def progress(self) -> msg.JobProgress:
        return msg.JobProgress(job=self.job.id, file=self.job.name, frames_done=self.frames_seen,
                               frames_total=self.frames_total, fps=round(self.fps, 3), eta_s=self.eta_s,
                               frames_saved=self.frames_done)


class JobFailure(Exception):
    """Why a job cannot go on, in words for the user; ``set_aside`` False leaves the input alone."""

    def __init__(self, reason: str, set_aside: bool = True):
        super().__init__(reason)
        self.set_aside = set_aside


class Runner:
    def __init__(self, store: JobStore, executor: Executor, config: RunnerConfig, destination: Destination,
                 publish: Callable[[msg.Event], None] = lambda event: None,
                 probe_video: Callable[[Path], VideoInfo] = probe):
        self.store = store
        self.executor = executor
        self.config = config
        self.destination = destination
        self.publish = publish
        self.probe_video = probe_video
        self.active: dict[int, ActiveJob] = {}
        self.scheduler = FairScheduler()
        self.paused = False
        self.unavailable: str | None = None  # why the executor cannot run shards now
        self.providers: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()  # work: shards and result writing (drained on stop)
        self._waits: set[asyncio.Task] = set()  # waits for the executor or the destination (cancelled on stop)
        self._running_shards = 0
        # results are written on one thread: one at a time, and matplotlib's fonts opened once (it keeps
        # each thread's font files open)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="aud-results")

    # --- the loop --------------------------------------------------------------------------------

    async def warm_up(self) -> None:
        """Load what writing the first result needs (the plot's library and fonts) on the writer thread."""
        if self.config.output.plots:
            from ..output import plot

            await asyncio.get_running_loop().run_in_executor(self._writer, plot.warm_up)

    def close(self) -> None:
        """The writer thread ends (after a result being written)."""
        self._writer.shutdown(wait=True)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def idle(self) -> bool:
        return not self.active and not self.store.jobs([JobState.QUEUED]) and not self._tasks and not self._waits

    async def run(self, until_idle: bool = False) -> None:
        """Start queued jobs and keep the executor busy until ``stop()`` (or, with ``until_idle``,
        until no job is queued or running)."""
        for job in self.store.recover():
            log.info("resuming job %s (%s) after an interrupted run", job.id, job.name)
        while not self._stopping.is_set():
            self._wake.clear()
            if not self.paused and self.unavailable is None:
                await self._start_queued()
                self._dispatch()
            if until_idle and self.idle():
                return
            await self._wake.wait()

    async def drain(self, timeout: float) -> bool:
        """Let running shards finish (each is committed as it ends) within ``timeout``; False when
        some were still running (they stay pending in the store and run again after a restart)."""
        for wait in list(self._waits):
            wait.cancel()
        await asyncio.gather(*self._waits, return_exceptions=True)
        if not self._tasks:
            return True
        _, still = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)
        return not still

    def _spawn(self, coro, wait: bool = False) -> None:
        task = asyncio.create_task(coro)
        (self._waits if wait else self._tasks).add(task)
        task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._waits.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal error in the runner", exc_info=task.exception())
        self._wake.set()

    # --- starting jobs ---------------------------------------------------------------------------

    async def _start_queued(self) -> None:
        """Plan as many queued jobs as it takes to fill the executor, oldest first."""
        while self.scheduler.pending() < self.executor.capacity - self._running_shards:
            queued = self.store.jobs([JobState.QUEUED])
            if not queued or self._stopping.is_set():
                return
            await self._start(queued[0])

    async def _start(self, job: Job) -> None:
        if job.key != self.config.key:  # queued under other settings (or models): compute afresh
            await asyncio.to_thread(self.store.rekey, job.id, self.config.key)
        job = await asyncio.to_thread(self.store.start, job.id)
        path = Path(job.source)
        self.publish(msg.JobStarted(job=job.id, file=job.name, frames_total=job.frames_total))
        log.info("job %s started: %s", job.id, path)
        try:
            active = await asyncio.to_thread(self._prepare, job, path)
        except JobFailure as exc:
            return await self._fail(job, str(exc), exc.set_aside)
        self.active[job.id] = active
        pending = [s.index for s in self.store.shards(job.id) if not s.done]
        self.scheduler.add(job.id, active.info.path, {i: active.ranges[i] for i in pending})
        if not pending:
            self._spawn(self._finish(active))

    def _prepare(self, job: Job, path: Path) -> ActiveJob:
        """Check the input is still this job's content, probe it and plan (or resume) its shards."""
        try:
            identity = inputs.identity(path)
            if inputs.fingerprint(path) != job.fingerprint:
                raise JobFailure(f"{path} was replaced by different content before it was processed; "
                                 f"the new content is a job of its own", set_aside=False)
            info = self.probe_video(path)
        except FileNotFoundError:
            raise JobFailure(f"{path} was moved or deleted before it was processed") from None
        except VideoError as exc:
            raise JobFailure(str(exc)) from None
        except OSError as exc:
            raise JobFailure(f"{path}: cannot be read: {exc.strerror or exc}") from None
        if job.frames_total is not None and job.frames_total != info.frames:
            raise JobFailure(f"the video changed while it was being processed "
                             f"({job.frames_total} frames before, {info.frames} now)")
        selection = self.config.selection.frames(info)
        expected = np.asarray(selection.frames(info.frames), dtype=np.int64)
        if expected.size == 0:
            raise JobFailure(f"{path}: no frames selected (the video has {info.frames} frames, "
                             f"{info.timestamps[-1]:.2f} s)")
        ranges = plan_selection(info.frames, selection, self.config.shard_frames, self.executor.capacity)
        shards = self.store.shards(job.id)
        if not shards:
            self.store.set_plan(job.id, info.frames, _info_json(info, job), ranges)
            shards = self.store.shards(job.id)
        stale = [s.index for s in shards if s.done and s.format != SHARD_FORMAT]
        if stale:  # results of another aud version: compute them again
            log.info("job %s: %d stored shard(s) of an older format are computed again", job.id, len(stale))
            self.store.redo_shards(job.id, stale)
            shards = self.store.shards(job.id)
        done = sum(len(range(s.start, s.stop, selection.step)) for s in shards if s.done)
        return ActiveJob(job=self.store.get(job.id) or job, path=path, info=info,
                         ranges={s.index: (s.start, s.stop) for s in shards}, expected=expected,
                         frames_done=done, identity=identity)

    # --- shards ----------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        resume = self.executor.resume_points()
        while self._running_shards < self.executor.capacity:
            picked = self.scheduler.next(resume)
            if picked is None:
                return
            job_id, index = picked
            active = self.active.get(job_id)
            if active is None:
                continue
            self._running_shards += 1
            active.in_flight[index] = 0
            self._spawn(self._run_shard(active, index))

    def _task(self, active: ActiveJob, index: int) -> ShardTask:
        start, stop = active.ranges[index]
        return ShardTask.of(active.info, start, stop, self.config.selection.every,
                            f"job {active.job.id} shard {index}")

    async def _run_shard(self, active: ActiveJob, index: int) -> None:
        job_id = active.job.id
        task = self._task(active, index)

        def progress(frames: int) -> None:
            if self.active.get(job_id) is active and index in active.in_flight:
                active.in_flight[index] = frames
                self.publish(active.progress())

        result = None
        try:
            if self.active.get(job_id) is not active:
                return  # cancelled or failed before it started
            await asyncio.to_thread(self.store.mark_dispatched, job_id, index)
            result = await self.executor.run(task, timeout=self.config.shard_timeout_seconds, progress=progress)
        except (WorkerDied, ShardTimedOut) as exc:
            return await self._shard_lost(active, index, exc)
        except ExecutorUnavailable as exc:
            return self._executor_lost(active, index, str(exc))
        except ShardFailed as exc:
            if exc.kind is FailureKind.INTERNAL:
                log.error("%s failed on %s: %s\n%s", task.label, exc.worker, exc, exc.traceback)
                return await self._fail_active(active, f"internal error on frames {task.start + 1}-{task.stop}: {exc}")
            return await self._fail_active(active, str(exc))
        finally:
            self._running_shards -= 1
            if result is None:  # a shard that ended without rows no longer counts as seen
                active.in_flight.pop(index, None)
            self._wake.set()
        if self.active.get(job_id) is not active:
            return  # cancelled or failed meanwhile: the result is not wanted
        await self._commit(active, index, result)

    async def _commit(self, active: ActiveJob, index: int, result: ShardResult) -> None:
        """Store the rows; until they are stored the shard's frames count as seen, not saved (so the
        frames shown never go backwards)."""
        active.in_flight[index] = result.frames
        self.scheduler.finished(active.job.id, index)
        await asyncio.to_thread(self.store.shard_done, active.job.id, index, result.rows.to_bytes(), SHARD_FORMAT)
        active.in_flight.pop(index, None)
        active.frames_done += result.frames
        active.frames_this_run += result.frames
        self.publish(active.progress())
        if not active.in_flight and self.scheduler.pending(active.job.id) == 0 and not active.finishing:
            active.finishing = True
            self._spawn(self._finish(active))

    async def _shard_lost(self, active: ActiveJob, index: int, exc: WorkerDied | ShardTimedOut) -> None:
        if self.active.get(active.job.id) is not active:
            return
        start, stop = active.ranges[index]
        active.failures[index] = active.failures.get(index, 0) + 1
        what = "timed out" if isinstance(exc, ShardTimedOut) else "lost its worker"
        if active.failures[index] > self.config.shard_retries:
            return await self._fail_active(active, f"frames {start + 1}-{stop} {what} {active.failures[index]} "
                                                   f"times (last: {exc})")
        log.warning("job %s frames %d-%d %s (%s); retrying", active.job.id, start + 1, stop, what, exc)
        self.scheduler.retry(active.job.id, index)

    def _executor_lost(self, active: ActiveJob, index: int, reason: str) -> None:
        if self.active.get(active.job.id) is active:
            self.scheduler.retry(active.job.id, index)
        if self.unavailable is None:
            self.unavailable = reason
            log.warning("the executor is unavailable (%s); waiting for it", reason)
            self.publish(msg.ExecutorUnavailable(reason=reason))
            self._spawn(self._await_executor(), wait=True)

    async def _await_executor(self) -> None:
        await self.executor.wait_available()
        log.info("the executor is available again")
        self.unavailable = None
        self.publish(msg.ExecutorAvailable())

    # --- endings ---------------------------------------------------------------------------------

    async def _finish(self, active: ActiveJob) -> None:
        job = active.job
        try:
            changed = inputs.identity(active.path) != active.identity
        except FileNotFoundError:
            changed = False  # every frame was read before it went; the result stands
        if changed:
            return await self._fail_active(active, f"{active.path} changed while it was being processed; the "
                                                   f"result was discarded (the new content is a job of its own)", False)
        try:
            csv = await asyncio.to_thread(self.destination.csv_path, job)
        except OSError as exc:
            return await self._cannot_write(active, f"cannot make the result's folder: {exc.strerror or exc}", exc)
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._write, active, csv)
        except ShardFormatError as exc:  # a stored shard unreadable: compute the job's shards again
            log.warning("job %s: %s; computing its shards again", job.id, exc)
            indexes = [s.index for s in self.store.shards(job.id)]
            await asyncio.to_thread(self.store.redo_shards, job.id, indexes)
            active.frames_done, active.finishing = 0, False
            self.scheduler.add(job.id, active.info.path, {i: active.ranges[i] for i in indexes})
            return
        except OSError as exc:
            await asyncio.to_thread(output.discard_partial, csv, self.config.output)
            return await self._cannot_write(active, f"cannot write the result to {csv.parent}: "
                                                    f"{exc.strerror or exc}", exc)
        except output.AssemblyError as exc:
            log.exception("job %s could not be assembled", job.id)
            return await self._fail_active(active, f"internal error: {exc}")
        await asyncio.to_thread(self.store.finish, job.id, str(csv))
        del self.active[job.id]
        await asyncio.to_thread(self.store.release_results, job.id)
        try:
            await asyncio.to_thread(self.destination.done, job, csv)
        except OSError as exc:
            log.error("job %s: the result is written but the input could not be moved: %s", job.id, exc)
        wall = time.monotonic() - active.started
        log.info("job %s done: %d frames in %.1f s (%.2f frames/s) -> %s", job.id, active.frames_total, wall,
                 active.fps, csv)
        self.publish(msg.JobDone(job=job.id, file=job.name, csv=str(csv), frames=active.frames_total,
                                 fps=round(active.fps, 3)))
        self._wake.set()

    async def _cannot_write(self, active: ActiveJob, reason: str, exc: OSError) -> None:
        """A full, read-only or forbidding destination: wait and retry (the daemon), else fail the job."""
        if exc.errno in WAIT_ERRNOS and self.config.output_retry_seconds is not None:
            return self._wait_for_destination(active, reason)
        return await self._fail_active(active, reason)

    def _write(self, active: ActiveJob, csv: Path) -> None:
        job, info = active.job, active.info
        rows = output.assemble([FaceRows.from_bytes(b) for b in self.store.shard_results(job.id)], active.expected)
        rows = output.written_rows(rows, self.config.output)  # faces = "primary": the person followed only
        tables = output.build_tables(rows, self.config.output, info.width, info.height)
        wall = time.monotonic() - active.started
        sidecar = {
            "video": str(self.destination.input_after(job)),
            "received_as": job.source,
            "video_properties": info.properties(),
            "fingerprint": job.fingerprint,
            "job": job.id,
            "job_key": job.key,
            "frames": active.frames_total,
            "rows": len(rows),
            "frames_with_face": int(len(np.unique(rows.frame[rows.success]))),
            "faces": int(np.nanmax(tables["main"]["face_id"]) + 1) if rows.success.any() else 0,
            **self.config.sidecar,
            "wall_seconds": round(wall, 3),
            "frames_per_second": round(active.frames_this_run / wall, 3) if wall > 0 else None,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        videos = None
        if self.config.output.mirror and self.config.output.mirror_videos:
            def videos(folder: Path) -> None:
                faces = output.inspection_faces(rows, info.frames)
                render_inspection_videos(active.path, faces, folder, csv.stem, info.fps or 30.0)
        output.write_outputs(csv, tables, sidecar, self.config.output, title=f"{job.name} (job {job.id})",
                             videos=videos)

    def _wait_for_destination(self, active: ActiveJob, reason: str) -> None:
        """Keep the finished job (its stored results and its input); try again after a while."""
        if active.waiting != reason:
            log.warning("job %s (%s): %s; retrying every %g s", active.job.id, active.job.name, reason,
                        self.config.output_retry_seconds)
        active.waiting = reason

        async def retry() -> None:
            await asyncio.sleep(self.config.output_retry_seconds or 0)  # a retry period, not a wait for an event
            if self.active.get(active.job.id) is active and not self._stopping.is_set():
                await self._finish(active)

        self._spawn(retry(), wait=True)

    async def _fail_active(self, active: ActiveJob, reason: str, set_aside: bool = True) -> None:
        if self.active.get(active.job.id) is not active:
            return
        await self._fail(active.job, reason, set_aside)

    async def _fail(self, job: Job, reason: str, set_aside: bool = True) -> None:
        """Record the failure first, then let the destination keep the input with the reason."""
        self.active.pop(job.id, None)
        self.scheduler.remove(job.id)
        await asyncio.to_thread(self._record_end, job, reason, set_aside, self.store.fail)
        log.info("job %s failed: %s", job.id, reason)
        self.publish(msg.JobFailed(job=job.id, file=job.name, reason=reason))
        self._wake.set()

    async def cancel(self, job_id: int) -> Job:
        """Cancel a queued or running job (a shard in flight finishes; its result is dropped)."""
        queued_or_running = self.store.get(job_id)
        if queued_or_running is None:
            raise ValueError(f"no job {job_id}")
        self.active.pop(job_id, None)
        self.scheduler.remove(job_id)
        job = await asyncio.to_thread(self._record_end, queued_or_running, "cancelled by the user", True,
                                      self.store.cancel)
        log.info("job %s cancelled", job_id)
        self.publish(msg.JobCancelled(job=job_id, file=job.name))
        self._wake.set()
        return job

    def _record_end(self, job: Job, reason: str, set_aside: bool, transition: Callable[[int, str], Job]) -> Job:
        """In a thread: the store's transition (committed first), then the input set aside with the reason."""
        ended = transition(job.id, reason)
        self.store.release_results(job.id)
        try:
            self.destination.failed(ended, reason, set_aside)
        except OSError as exc:
            log.error("job %s ended (%s) and its input could not be set aside: %s", job.id, reason, exc)
        return ended


def _info_json(info: VideoInfo, job: Job) -> str:
    return json.dumps({**info.properties(), "fingerprint": job.fingerprint})
