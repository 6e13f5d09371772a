"""A job's transitions, each committed in the job store before anything acts on it, then announced.

A job starts (re-keyed first when it was queued under other settings: its results are computed
afresh); it ends in the order that survives a crash: the store's transition, then its stored shard
results dropped, then its input dealt with (the destination: ``.done``, or ``.failed`` with the
reason), then the event."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from .. import protocol as msg
from .active import ActiveJob
from .patient import PatientStore
from .store import Job, JobStore, StoreError
from .writer import Destination

log = logging.getLogger("aud.runner")


class Transitions:
    def __init__(self, store: JobStore, destination: Destination, call: PatientStore,
                 publish: Callable[[msg.Event], None]):
        self.store = store
        self.destination = destination
        self.call = call
        self.publish = publish

    async def start(self, job: Job, key: str) -> Job:
        """queued -> running, under ``key`` (the settings and models now)."""
        if job.key != key:  # queued under other settings (or models): compute afresh
            await self.call(None, f"re-key job {job.id}", self.store.rekey, job.id, key)
        job = await self.call(None, f"start job {job.id}", self.store.start, job.id)
        self.publish(msg.JobStarted(job=job.id, file=job.name, frames_total=job.frames_total))
        log.info("job %s started: %s", job.id, job.source)
        return job

    async def done(self, active: ActiveJob, csv: Path) -> None:
        """After the store has the job done: its results dropped, its input moved, the event."""
        job = active.job
        try:
            await self.call(None, "drop the stored results", self.store.release_results, job.id)
            await self.call.offload(self.destination.done, job, csv)
        except (OSError, StoreError) as exc:
            log.error("job %s: the result is written but %s", job.id, exc)
        log.info("job %s done: %d frames in %.1f s (%.2f frames/s) -> %s", job.id, active.frames_total,
                 time.monotonic() - active.started, active.fps, csv)
        self.publish(msg.JobDone(job=job.id, file=job.name, csv=str(csv), frames=active.frames_total,
                                 fps=round(active.fps, 3)))

    async def failed(self, job: Job, reason: str, set_aside: bool = True) -> None:
        """The failure recorded, then the input kept with the reason, then the event; the event even
        when the store cannot record the failure (the job is then taken up again at the next start)."""
        try:
            await self._end(job, reason, set_aside, self.store.fail)
        except ValueError as exc:  # it ended meanwhile (cancelled while it failed): nothing to record
            log.warning("job %s: %s", job.id, exc)
            return
        except StoreError:
            log.error("job %s failed (%s) and the job store cannot record it", job.id, reason)
            self.publish(msg.JobFailed(job=job.id, file=job.name, reason=reason))
            raise
        log.info("job %s failed: %s", job.id, reason)
        self.publish(msg.JobFailed(job=job.id, file=job.name, reason=reason))

    async def cancelled(self, job: Job) -> Job:
        ended = await self._end(job, "cancelled by the user", True, self.store.cancel)
        log.info("job %s cancelled", job.id)
        self.publish(msg.JobCancelled(job=job.id, file=ended.name))
        return ended

    async def _end(self, job: Job, reason: str, set_aside: bool, transition: Callable[[int, str], Job]) -> Job:
        ended = await self.call(None, f"record the end of job {job.id}", transition, job.id, reason)
        await self.call(None, "drop the stored results", self.store.release_results, job.id)
        try:
            await self.call.offload(self.destination.failed, ended, reason, set_aside)
        except OSError as exc:
            log.error("job %s ended (%s) and its input could not be set aside: %s", job.id, reason, exc)
        return ended
