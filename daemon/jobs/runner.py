"""The one job runner: plan a video into shards, dispatch them, retry, assemble, write.

``aud extract`` runs it on a throw-away job store until every job has ended; the daemon runs it for
its whole life, fed by the inbox. The job store is the single source of truth: a shard is done when
its rows are committed there, a job is done when its CSV is written and recorded, so a runner killed at
any instant resumes where the store says it was.

The runner coordinates small pieces, each with its own module:

* ``FairScheduler`` (scheduler.py): which shard runs next;
* ``active.prepare`` (active.py): a started job checked, probed and planned into an ``ActiveJob``;
* ``ShardRetry`` (retry.py): what becomes of a shard that ended without a result, on a try budget
  the job store keeps across restarts; ``Waits``: how long a finished job waits for its destination
  or for a job store that cannot commit (a full disk), its reason shown in ``status``;
* ``ResultsWriter`` (writer.py): the result's files, on a thread of its own.

Nothing strands a job: an exception nobody foresaw while starting, running, committing or finishing
a job fails the job with its reason. Blocking calls (the store, the destination's moves) go through
``offload``: a thread by default, run inline in tests so that their order is fixed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import protocol as msg
from ..core import output
from ..core.schema import SHARD_FORMAT
from ..core.shard import ShardResult
from ..core.video import VideoInfo, probe
from .active import ActiveJob, JobFailure, pending, prepare
from .executor import Executor
from .plan import TimeSelection
from .retry import ShardRetry, Verdict, Waits
from .scheduler import FairScheduler
from .store import Job, JobState, JobStore, StoreError
from .writer import Destination, ResultsWriter, ShardFormatError, Unwritable

log = logging.getLogger("aud.runner")

Offload = Callable[..., Awaitable[Any]]  # offload(fn, *args): fn(*args) off the event loop


async def inline(fn: Callable[..., Any], /, *args: Any) -> Any:
    """An ``Offload`` that runs the call where it is (tests: store calls end in the order they start)."""
    return fn(*args)


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

    @property
    def retry(self) -> ShardRetry:
        return ShardRetry.of(self.shard_retries, self.shard_timeout_seconds)

    @property
    def waits(self) -> Waits:
        return Waits(retry_s=self.output_retry_seconds, store_pause_s=self.store_pause_seconds)


class Dropped(Exception):
    """The work in hand is no longer wanted: the runner stops, or its job ended meanwhile."""


class Runner:
    def __init__(self, store: JobStore, executor: Executor, config: RunnerConfig, destination: Destination,
                 publish: Callable[[msg.Event], None] = lambda event: None,
                 probe_video: Callable[[Path], VideoInfo] = probe, offload: Offload = asyncio.to_thread):
        self.store = store
        self.executor = executor
        self.config = config
        self.destination = destination
        self.publish = publish
        self.probe_video = probe_video
        self.offload = offload
        self.retry, self.waits = config.retry, config.waits
        self.writer = ResultsWriter(destination, config.output, config.sidecar)
        self.active: dict[int, ActiveJob] = {}
        self.scheduler = FairScheduler()
        self.paused = False
        self.unavailable: str | None = None  # why the executor cannot run shards now
        self.waiting: str | None = None  # why no job can start or end now (the job store cannot commit)
        self.providers: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()  # work: shards and result writing (drained on stop)
        self._waits: set[asyncio.Task] = set()  # waits for the executor (cancelled on stop)
        self._running_shards = 0

    # --- the loop --------------------------------------------------------------------------------

    async def warm_up(self) -> None:
        await self.writer.warm_up()

    def close(self) -> None:
        self.writer.close()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self, until_idle: bool = False) -> None:
        """Start queued jobs and keep the executor busy until ``stop()`` (or, with ``until_idle``,
        until no job is queued or running)."""
        try:
            for job in await self._store(None, "take up interrupted jobs", self.store.recover):
                log.info("resuming job %s (%s) after an interrupted run", job.id, job.name)
            while not self._stopping.is_set():
                self._wake.clear()
                if not self.paused and self.unavailable is None:
                    await self._start_queued()
                    self._dispatch()
                if until_idle and await self._idle():
                    return
                await self._wake.wait()
        except Dropped:
            return

    async def _idle(self) -> bool:
        if self.active or self._tasks or self._waits:
            return False
        return not await self._store(None, "read the queue", self.store.jobs, [JobState.QUEUED])

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

    def _spawn(self, work: Awaitable[None], active: ActiveJob | None = None, wait: bool = False) -> None:
        task = asyncio.create_task(self._guarded(work, active))
        (self._waits if wait else self._tasks).add(task)
        task.add_done_callback(self._task_ended)

    async def _guarded(self, work: Awaitable[None], active: ActiveJob | None) -> None:
        """A job's work; an exception nobody handled fails the job with its reason."""
        try:
            await work
        except Dropped:
            pass
        except Exception as exc:
            log.error("job %s: internal error in the runner", active and active.job.id, exc_info=exc)
            if active is not None:
                await self._fail_active(active, _reason(exc))

    def _task_ended(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._waits.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal error in the runner", exc_info=task.exception())
        self._wake.set()

    async def _pause(self, seconds: float) -> bool:
        """A retry period (not a wait for an event), cut short by ``stop()``; False when stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _store(self, active: ActiveJob | None, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """A job store call off the loop. While the store cannot commit (a full disk) the job (or the
        runner) waits with the reason shown and tries again (``Waits.store``), then fails."""
        tries = 0
        while True:
            try:
                result = await self.offload(call, *args)
            except StoreError as exc:
                tries += 1
                pause = self.waits.store(tries)
                if pause is None or self._stopping.is_set():
                    raise
                self._note_wait(active, f"the job store cannot {what}: {exc}; trying again in {pause:g} s")
            else:
                if tries:
                    self._note_wait(active, None)
                return result
            if not await self._pause(pause) or (active is not None and self.active.get(active.job.id) is not active):
                raise Dropped(what)

    def _note_wait(self, active: ActiveJob | None, reason: str | None) -> None:
        if reason is not None and reason != (active.waiting if active else self.waiting):
            log.warning("job %s: %s", active.job.id, reason) if active else log.warning("%s", reason)
        if active is not None:
            active.waiting = reason
        else:
            self.waiting = reason

    # --- starting jobs ---------------------------------------------------------------------------

    async def _start_queued(self) -> None:
        """Plan as many queued jobs as it takes to fill the executor, oldest first."""
        while self.scheduler.pending() < self.executor.capacity - self._running_shards:
            queued = await self._store(None, "read the queue", self.store.jobs, [JobState.QUEUED])
            if not queued or self._stopping.is_set():
                return
            await self._start(queued[0])

    async def _start(self, job: Job) -> None:
        try:
            if job.key != self.config.key:  # queued under other settings (or models): compute afresh
                await self._store(None, f"re-key job {job.id}", self.store.rekey, job.id, self.config.key)
            job = await self._store(None, f"start job {job.id}", self.store.start, job.id)
            self.publish(msg.JobStarted(job=job.id, file=job.name, frames_total=job.frames_total))
            log.info("job %s started: %s", job.id, job.source)
            active = await self._store(None, f"plan job {job.id}", prepare, self.store, job, self.config.selection,
                                       self.config.shard_frames, self.executor.capacity, self.probe_video)
            left = await self._store(None, f"read job {job.id}'s shards", pending, self.store, job.id)
        except JobFailure as exc:
            return await self._fail(job, str(exc), exc.set_aside)
        except Dropped:
            raise
        except Exception as exc:
            log.error("job %s could not start", job.id, exc_info=exc)
            return await self._fail(job, _reason(exc))
        self.active[job.id] = active
        self.scheduler.add(job.id, active.info.path, {i: active.ranges[i] for i in left})
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
        job_id = active.job.id

        def progress(frames: int) -> None:
            if self.active.get(job_id) is active and index in active.in_flight:
                active.in_flight[index] = frames
                self.publish(active.progress())

        result: ShardResult | None = None
        tries: int | None = None
        failure: Exception | None = None
        try:
            if self.active.get(job_id) is not active:
                return  # cancelled or failed before it started
            what = f"count a run of {active.frames(index)}"
            tries = await self._store(active, what, self.store.mark_dispatched, job_id, index)
            result = await self.executor.run(active.task(index), timeout=self.retry.timeout_s, progress=progress)
        except asyncio.CancelledError:  # the runner stops: not the shard's fault
            if tries is not None:
                await self.offload(self.store.undo_dispatch, job_id, index)
            raise
        except Exception as exc:
            if tries is None:
                raise
            failure = exc
        finally:
            self._running_shards -= 1
            if result is None:  # a shard that ended without rows no longer counts as seen
                active.in_flight.pop(index, None)
            self._wake.set()
        if failure is not None:
            return await self._shard_ended(active, index, failure, tries or 0)
        if result is not None and self.active.get(job_id) is active:  # else: cancelled or failed meanwhile
            await self._commit(active, index, result)

    async def _shard_ended(self, active: ActiveJob, index: int, exc: Exception, tries: int) -> None:
        decision = self.retry.decide(exc, tries, active.frames(index))
        if not decision.costs_try:
            await self._store(active, "take back a run", self.store.undo_dispatch, active.job.id, index)
        if decision.verdict is Verdict.WAIT:
            return self._executor_lost(active, index, decision.reason)
        if self.active.get(active.job.id) is not active:
            return
        if decision.verdict is Verdict.RETRY:
            log.warning("job %s %s; retrying (try %d of %d)", active.job.id, decision.reason, tries + 1,
                        self.retry.max_tries)
            return self.scheduler.retry(active.job.id, index)
        if decision.traceback:
            log.error("job %s: %s\n%s", active.job.id, decision.reason, decision.traceback)
        await self._fail_active(active, decision.reason)

    async def _commit(self, active: ActiveJob, index: int, result: ShardResult) -> None:
        """Store the rows; until they are stored the shard's frames count as seen, not saved (so the
        frames shown never go backwards)."""
        active.in_flight[index] = result.frames
        self.scheduler.finished(active.job.id, index)
        await self._store(active, f"store the result of {active.frames(index)}", self.store.shard_done,
                          active.job.id, index, result.rows.to_bytes(), SHARD_FORMAT)
        active.in_flight.pop(index, None)
        active.frames_done += result.frames
        active.frames_this_run += result.frames
        self.publish(active.progress())
        if not active.in_flight and self.scheduler.pending(active.job.id) == 0 and not active.finishing:
            active.finishing = True
            self._spawn(self._finish(active), active)

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
        while True:
            parts = await self._store(active, "read the job's results", self.store.shard_results, job.id)
            try:
                csv = await self.writer.write(active, parts)
                break
            except Unwritable as exc:
                pause = self.waits.destination(exc.cause)
                if pause is None:
                    return await self._fail_active(active, str(exc))
                if active.waiting != str(exc):
                    log.warning("job %s (%s): %s; retrying every %g s", job.id, job.name, exc, pause)
                active.waiting = str(exc)  # its input and stored results kept
            except ShardFormatError as exc:  # a stored shard unreadable: compute the job's shards again
                log.warning("job %s: %s; computing its shards again", job.id, exc)
                indexes = list(active.ranges)
                await self._store(active, "compute the shards again", self.store.redo_shards, job.id, indexes)
                active.frames_done, active.finishing = 0, False
                return self.scheduler.add(job.id, active.info.path, dict(active.ranges))
            except JobFailure as exc:
                return await self._fail_active(active, str(exc), exc.set_aside)
            if not await self._pause(pause) or self.active.get(job.id) is not active:
                return
        await self._store(active, f"record job {job.id} as done", self.store.finish, job.id, str(csv))
        del self.active[job.id]
        try:
            await self._store(None, "drop the stored results", self.store.release_results, job.id)
            await self.offload(self.destination.done, job, csv)
        except (OSError, StoreError) as exc:
            log.error("job %s: the result is written but %s", job.id, exc)
        log.info("job %s done: %d frames in %.1f s (%.2f frames/s) -> %s", job.id, active.frames_total,
                 time.monotonic() - active.started, active.fps, csv)
        self.publish(msg.JobDone(job=job.id, file=job.name, csv=str(csv), frames=active.frames_total,
                                 fps=round(active.fps, 3)))
        self._wake.set()

    async def _fail_active(self, active: ActiveJob, reason: str, set_aside: bool = True) -> None:
        if self.active.get(active.job.id) is active:
            await self._fail(active.job, reason, set_aside)

    async def _fail(self, job: Job, reason: str, set_aside: bool = True) -> None:
        """Record the failure first, then let the destination keep the input with the reason."""
        self.active.pop(job.id, None)
        self.scheduler.remove(job.id)
        try:
            await self._end(job, reason, set_aside, self.store.fail)
        finally:
            log.info("job %s failed: %s", job.id, reason)
            self.publish(msg.JobFailed(job=job.id, file=job.name, reason=reason))
            self._wake.set()

    async def cancel(self, job_id: int) -> Job:
        """Cancel a queued or running job (a shard in flight finishes; its result is dropped)."""
        queued_or_running = await self.offload(self.store.get, job_id)
        if queued_or_running is None:
            raise ValueError(f"no job {job_id}")
        self.active.pop(job_id, None)
        self.scheduler.remove(job_id)
        job = await self._end(queued_or_running, "cancelled by the user", True, self.store.cancel)
        log.info("job %s cancelled", job_id)
        self.publish(msg.JobCancelled(job=job_id, file=job.name))
        self._wake.set()
        return job

    async def _end(self, job: Job, reason: str, set_aside: bool, transition: Callable[[int, str], Job]) -> Job:
        """The store's transition (committed first), then the input set aside with the reason."""
        try:
            ended = await self._store(None, f"record the end of job {job.id}", transition, job.id, reason)
        except ValueError as exc:  # it ended meanwhile (cancelled while it failed, or the reverse)
            log.warning("job %s: %s", job.id, exc)
            return job
        await self._store(None, "drop the stored results", self.store.release_results, job.id)
        try:
            await self.offload(self.destination.failed, ended, reason, set_aside)
        except OSError as exc:
            log.error("job %s ended (%s) and its input could not be set aside: %s", job.id, reason, exc)
        return ended


def _reason(exc: Exception) -> str:
    """A job's failure reason for an exception nobody foresaw."""
    return str(exc) if isinstance(exc, StoreError) else f"internal error: {type(exc).__name__}: {exc}"
