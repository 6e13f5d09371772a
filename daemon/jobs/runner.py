"""The one job runner: plan a video into shards, dispatch them, retry, assemble, write.

``aud extract`` runs it on a throw-away job store until every job has ended; the daemon runs it for
its whole life, fed by the inbox. The job store is the single source of truth: a shard is done when
its rows are committed there, a job is done when its CSV is written and recorded, so a runner killed at
any instant resumes where the store says it was.

The runner coordinates small pieces, each with its own module:

* ``FairScheduler`` (scheduler.py): which shard runs next;
* ``active.prepare`` (active.py): a started job checked, probed and planned into an ``ActiveJob``;
* ``attempt`` (attempt.py): one run of a shard, counted in the job store first; ``ShardRetry``
  (retry.py) decides what becomes of a shard that ended without a result, on that durable count;
* ``Availability`` (availability.py): an executor that cannot run shards is waited for;
* ``PatientStore`` (patient.py): store calls off the loop; a store that cannot commit (a full disk)
  is a wait, its reason shown in ``status`` (``Waits``, retry.py, says how long);
* ``ResultsWriter`` (writer.py): the result's files, on a thread of its own, waiting while the
  destination cannot take them;
* ``Transitions`` (transitions.py): a job's start and end, committed in the store, then announced;
* ``Tasks`` (tasks.py): the background work, drained or cancelled on stop.

Nothing strands a job: an exception nobody foresaw while starting, running, committing or finishing
a job fails the job with its reason. Blocking calls (the store, the destination's moves) go through
``offload``: a thread by default, run inline in tests so that their order is fixed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import msgspec

from .. import output
from .. import protocol as msg
from ..core.schema import SHARD_FORMAT
from ..core.shard import ShardResult
from ..core.video import VideoInfo, probe
from . import estimate
from .active import ActiveJob, JobFailure, pending, prepare
from .attempt import attempt
from .availability import Availability
from .executor import Executor
from .patient import Offload, PatientStore, inline
from .plan import TimeSelection
from .retry import Decision, ShardRetry, Verdict, Waits
from .scheduler import FairScheduler
from .store import Job, JobState, JobStore, StoreError
from .tasks import Dropped, Tasks
from .transitions import Transitions
from .writer import Destination, ResultsWriter, ShardFormatError

__all__ = ["Destination", "Runner", "RunnerConfig", "inline"]

log = logging.getLogger("aud.runner")

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
    store_pause_seconds: float = 1.0  # without output_retry_seconds: between a failed store commit's tries
    openface2_dir: Path | None = None  # au_models "openface2"/"both": <models>/openface2 (the finishing step)
    openface2_only: bool = False  # au_models "openface2": OpenFace 3.0's AU columns left out

    @property
    def retry(self) -> ShardRetry:
        return ShardRetry.of(self.shard_retries, self.shard_timeout_seconds)

    @property
    def waits(self) -> Waits:
        return Waits(retry_s=self.output_retry_seconds, store_pause_s=self.store_pause_seconds)


class Runner:
    def __init__(self, store: JobStore, executor: Executor, config: RunnerConfig, destination: Destination,
                 publish: Callable[[msg.Event], None] = lambda event: None,
                 probe_video: Callable[[Path], VideoInfo] = probe, offload: Offload = asyncio.to_thread):
        self.store = store
        self.executor = executor
        self.config = config
        self.publish = publish
        self.probe_video = probe_video
        self.retry = config.retry
        self.active: dict[int, ActiveJob] = {}
        self.scheduler = FairScheduler()
        self.paused = False
        self.providers: dict[str, str] = {}
        self.tasks = Tasks(ended=self.wake)
        self.call = PatientStore(config.waits, self.tasks, self._current, offload)
        self.availability = Availability(executor, self.tasks, publish)
        self.writer = ResultsWriter(destination, config.output, config.sidecar, config.openface2_dir,
                                    config.openface2_only)
        self.transitions = Transitions(store, destination, self.call, publish)
        self._wake = asyncio.Event()
        self._running_shards = 0
        self._waiting_jobs: list[Job] = []  # the queued jobs as last read (for the queue's estimate)

    @property
    def unavailable(self) -> str | None:
        """Why the executor cannot run shards now, or None: what a shard that came back unavailable said,
        else what the executor says of itself (a pool whose workers cannot start, while no job runs)."""
        return self.availability.reason or self.executor.unavailable()

    @property
    def waiting(self) -> str | None:
        """Why no job can start or end now (the job store cannot commit), or None."""
        return self.call.waiting

    def _current(self, active: ActiveJob) -> bool:
        return self.active.get(active.job.id) is active

    # --- the loop --------------------------------------------------------------------------------

    async def warm_up(self) -> None:
        await self.writer.warm_up()

    def close(self) -> None:
        self.writer.close()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self.tasks.stop()
        self._wake.set()

    async def drain(self, timeout: float) -> bool:
        """Let running shards finish (each is committed as it ends) within ``timeout``; False when
        some were still running (they stay pending in the store and run again after a restart)."""
        return await self.tasks.drain(timeout)

    async def run(self, until_idle: bool = False) -> None:
        """Start queued jobs and keep the executor busy until ``stop()`` (or, with ``until_idle``,
        until no job is queued or running)."""
        try:
            for job in await self.call(None, "take up interrupted jobs", self.store.recover):
                log.info("resuming job %s (%s) after an interrupted run", job.id, job.name)
            while not self.tasks.stopping.is_set():
                self._wake.clear()
                # only a shard that came back unavailable holds the loop (Availability wakes it again);
                # an executor that says it is unavailable is still given shards: they come back so
                if not self.paused and self.availability.reason is None:
                    await self._start_queued()
                    self._dispatch()
                if until_idle and not self.active and not self.tasks.busy and not await self._queued():
                    return
                await self._wake.wait()
        except Dropped:
            return

    async def _queued(self) -> list[Job]:
        self._waiting_jobs = await self.call(None, "read the queue", self.store.jobs, [JobState.QUEUED])
        return self._waiting_jobs

    def _progress(self, active: ActiveJob) -> msg.JobProgress:
        """A job's progress, with the time left of the queue (its running jobs, and the queued jobs as
        the runner last read them)."""
        ahead = estimate.queue([a.running() for a in self.active.values()], self._waiting_jobs, active.recent_fps)
        return msgspec.structs.replace(active.progress(), queue_eta_s=ahead.eta_s, queue_eta_unknown=ahead.unknown)

    def _spawn(self, work: Awaitable[None], active: ActiveJob) -> None:
        """A job's work; an exception nobody handled fails the job with its reason."""
        self.tasks.spawn(work, lambda exc: self._fail(active, _reason(exc)))

    # --- starting jobs ---------------------------------------------------------------------------

    async def _start_queued(self) -> None:
        """Plan as many queued jobs as it takes to fill the executor, oldest first."""
        while self.scheduler.pending() < self.executor.capacity - self._running_shards:
            queued = await self._queued()
            if not queued or self.tasks.stopping.is_set():
                return
            await self._start(queued[0])

    async def _start(self, job: Job) -> None:
        try:
            job = await self.transitions.start(job, self.config.key)
            active = await self.call(None, f"plan job {job.id}", prepare, self.store, job, self.config.selection,
                                     self.config.shard_frames, self.executor.capacity, self.probe_video)
            left = await self.call(None, f"read job {job.id}'s shards", pending, self.store, job.id)
        except Dropped:
            raise
        except Exception as exc:  # whatever it was, the job ends with it
            if not isinstance(exc, JobFailure):
                log.error("job %s could not start", job.id, exc_info=exc)
            return await self._end_failed(job, _reason(exc), getattr(exc, "set_aside", True))
        self.active[job.id] = active
        self._waiting_jobs = [j for j in self._waiting_jobs if j.id != job.id]
        self.scheduler.add(job.id, active.info.path, {i: active.ranges[i] for i in left})
        self.publish(self._progress(active))  # its frame count and first estimate (the recent jobs' rate)
        if not left:
            active.finishing = True
            self._spawn(self._finish(active), active)

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
            self._spawn(self._run_shard(active, index), active)

    async def _run_shard(self, active: ActiveJob, index: int) -> None:
        def progress(frames: int) -> None:
            if self._current(active) and index in active.in_flight:
                active.in_flight[index] = frames
                self.publish(self._progress(active))

        outcome: ShardResult | Decision | None = None
        try:
            if self._current(active):  # else cancelled or failed before it started
                outcome = await attempt(self.executor, self.store, self.call, self.retry, active, index, progress)
        finally:
            self._running_shards -= 1
            if not isinstance(outcome, ShardResult):  # a shard that ended without rows no longer counts as seen
                active.in_flight.pop(index, None)
            self._wake.set()
        if isinstance(outcome, Decision):
            await self._shard_failed(active, index, outcome)
        elif outcome is not None and self._current(active):  # else: cancelled or failed meanwhile
            await self._commit(active, index, outcome)

    async def _shard_failed(self, active: ActiveJob, index: int, decision: Decision) -> None:
        if decision.verdict is Verdict.WAIT:
            if self._current(active):
                self.scheduler.retry(active.job.id, index)
            return self.availability.lost(decision.reason)
        if not self._current(active):
            return
        if decision.verdict is Verdict.RETRY:
            log.warning("job %s %s; retrying", active.job.id, decision.reason)
            return self.scheduler.retry(active.job.id, index)
        if decision.traceback:
            log.error("job %s: %s\n%s", active.job.id, decision.reason, decision.traceback)
        await self._fail(active, decision.reason)

    async def _commit(self, active: ActiveJob, index: int, result: ShardResult) -> None:
        """Store the rows; until they are stored the shard's frames count as seen, not saved (so the
        frames shown never go backwards)."""
        active.in_flight[index] = result.frames
        self.scheduler.finished(active.job.id, index)
        await self.call(active, f"store the result of {active.frames(index)}", self.store.shard_done,
                        active.job.id, index, result.rows.to_bytes(), SHARD_FORMAT)
        active.committed(index, result.frames)
        self.publish(self._progress(active))
        if not active.in_flight and self.scheduler.pending(active.job.id) == 0 and not active.finishing:
            active.finishing = True
            self._spawn(self._finish(active), active)

    # --- endings ---------------------------------------------------------------------------------

    async def _finish(self, active: ActiveJob) -> None:
        job = active.job
        read = partial(self.call, active, "read the job's results", self.store.shard_results, job.id)
        try:
            csv = await self.writer.deliver(active, read, self.call)
        except ShardFormatError as exc:  # a stored shard unreadable: compute the job's shards again
            log.warning("job %s: %s; computing its shards again", job.id, exc)
            await self.call(active, "compute the shards again", self.store.redo_shards, job.id, list(active.ranges))
            active.frames_done, active.finishing = 0, False
            return self.scheduler.add(job.id, active.info.path, dict(active.ranges))
        except JobFailure as exc:
            return await self._fail(active, str(exc), exc.set_aside)
        if self._current(active):  # not cancelled while it was written
            await self.call(active, f"record job {job.id} as done", self.store.finish, job.id, str(csv),
                            round(active.fps, 3))
            del self.active[job.id]
            await self.transitions.done(active, csv)

    async def _fail(self, active: ActiveJob, reason: str, set_aside: bool = True) -> None:
        if self._current(active):
            await self._end_failed(active.job, reason, set_aside)

    async def _end_failed(self, job: Job, reason: str, set_aside: bool = True) -> None:
        self.active.pop(job.id, None)
        self.scheduler.remove(job.id)
        await self.transitions.failed(job, reason, set_aside)

    async def cancel(self, job_id: int) -> Job:
        """Cancel a queued or running job (a shard in flight finishes; its result is dropped)."""
        queued_or_running = await self.call.offload(self.store.get, job_id)
        if queued_or_running is None:
            raise ValueError(f"no job {job_id}")
        self.active.pop(job_id, None)
        self.scheduler.remove(job_id)
        return await self.transitions.cancelled(queued_or_running)


def _reason(exc: Exception) -> str:
    """A job's failure reason for an exception: the user's words for a foreseen one, else named an
    internal error."""
    if isinstance(exc, (JobFailure, StoreError)):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"
