"""The control socket's commands: status, submit, cancel, pause, resume, each with a typed reply."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from .. import protocol as msg
from ..config import Settings
from ..jobs import estimate
from ..jobs.executor import Executor
from ..jobs.history import History
from ..jobs.runner import Runner
from ..jobs.spec import package_versions
from ..jobs.store import JobState
from .errors import CommandError
from .intake import Intake


class Commands:
    def __init__(self, settings: Settings, runner: Runner, intake: Intake, executor: Executor,
                 restarts: Callable[[], int] = lambda: 0):
        self.settings = settings
        self.runner = runner
        self.intake = intake
        self.executor = executor
        self.restarts = restarts
        self.web_url: str | None = None  # the live page (web.py), when it listens

    async def handle(self, command: msg.Command) -> dict[str, Any] | None:
        reply = await self._reply(command)
        return msgspec.to_builtins(reply)

    async def _reply(self, command: msg.Command) -> msgspec.Struct:
        if isinstance(command, msg.Status):
            return await self.status()
        if isinstance(command, msg.Submit):
            job, outcome = await self.intake.submit(Path(command.path), force=command.force)
            return msg.SubmitReply(job=job.id, file=job.name, state=str(job.state), outcome=outcome)
        if isinstance(command, msg.Cancel):
            return await self.cancel(command.job)
        if isinstance(command, (msg.Pause, msg.Resume)):
            self.runner.paused = isinstance(command, msg.Pause)
            self.runner.wake()
            return msg.PauseReply(paused=self.runner.paused)
        raise CommandError(f"unsupported command {type(command).__name__}")

    async def cancel(self, job_id: int) -> msg.CancelReply:
        job = await asyncio.to_thread(self.runner.store.get, job_id)
        if job is None:
            raise CommandError(f"no job {job_id}")
        if job.state not in (JobState.QUEUED, JobState.RUNNING, JobState.CANCELLED):
            raise CommandError(f"job {job_id} is {job.state}; only queued or running jobs can be cancelled")
        if job.state != JobState.CANCELLED:
            job = await self.runner.cancel(job_id)
        return msg.CancelReply(job=job_id, state=str(job.state))

    async def status(self) -> msg.StatusReply:
        """The daemon's state; the store is read in a thread (SQLite never runs on the loop)."""
        store, runner = self.runner.store, self.runner
        history = History(store)
        queued, failures, counts, rates = await asyncio.to_thread(
            lambda: (store.jobs([JobState.QUEUED]), history.recent_failures(), history.counts(),
                     history.recent_rates(estimate.RECENT_JOBS)))
        workers = self.executor.workers()
        providers = runner.providers
        recent = estimate.recent_rate(rates)
        active = list(runner.active.values())
        ahead = estimate.queue([a.running() for a in active], queued, recent)
        return msg.StatusReply(
            state="ready",
            paused=runner.paused,
            queued=[msg.QueuedJob(job=j.id, file=j.name, frames_total=j.frames_total,
                                  eta_s=estimate.seconds(j.frames_total or 0, recent) if j.frames_total else None)
                    for j in queued],
            running=[msg.RunningJob(job=a.job.id, file=a.job.name, frames_done=a.frames_seen,
                                    frames_total=a.frames_total, fps=round(a.fps, 3), eta_s=a.eta_s,
                                    eta_basis=a.eta_basis, waiting=a.waiting) for a in active],
            queue_eta_s=ahead.eta_s, queue_eta_unknown=ahead.unknown,
            recent_fps=None if recent is None else round(recent, 3),
            waiting=[msg.WaitingFile(file=w.file, reason=w.reason,
                                     fails_in_s=None if w.fails_in_s is None else round(w.fails_in_s, 1))
                     for w in self.intake.waiting()],
            duplicates=list(self.intake.duplicates),
            recent_failures=[msg.FailedJob(job=j.id, file=j.name, reason=j.reason) for j in failures],
            workers=msg.Workers(
                count=len(workers) or self.settings.workers,
                provider=providers.get("landmarks") or providers.get("detector", "?"),
                providers=sorted(set(providers.values())), restarts=self.restarts(),
                executor=self.settings.executor,
                state="executor_unavailable" if runner.unavailable else "ok", reason=runner.unavailable,
                workers=[msg.WorkerLine(name=w.name, provider=w.provider, threads=w.threads,
                                        tasks_done=w.tasks_done, busy=w.busy, memory_mb=w.memory_mb)
                         for w in workers]),
            counts=counts,
            versions=package_versions(),
            inbox=str(self.settings.inbox),
            outbox=str(self.settings.outbox),
            web=self.web_url,
            runner_waiting=runner.waiting,
        )
