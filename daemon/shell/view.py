"""The morning view: what the daemon is doing and has done, in memory, kept current by its events.

Seeded once at start (the outbox's sidecars, the store's failed and cancelled jobs, a status reply),
then fed by the same events the control socket publishes (``publish``): progress updates the running
jobs in place; a job that ends adds its result or failure; any other event takes a new status reply
(once per loop turn however many arrive together). Nothing here reads the store per page request.

Whoever watches (the live page's event streams) registers a callback with ``watch``; the static
``index.html`` in the outbox (``summary.write``) is rewritten in a thread after each job ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .. import protocol as msg
from ..config import Settings
from ..jobs.store import JobState, JobStore
from . import files, summary

log = logging.getLogger("aud.view")

Handler = Callable[[msg.Command], Awaitable[dict | None]]
Watcher = Callable[[str, dict[str, Any]], None]
"""Called with (kind, data): "state" (the whole view but the results), "progress", "result"."""

MAX_FAILURES = 500
"""Failures kept in memory (newest first); the store keeps them all."""
ERROR_TEXT_MAX = 8 * 1024
PROGRESS_REFRESH_S = 2.0
"""While jobs run, a progress event takes a new status reply (workers, counts) at most this often."""


class MorningView:
    def __init__(self, settings: Settings, store: JobStore, handler: Handler):
        self.settings = settings
        self.store = store
        self.handler = handler
        self.url: str | None = None  # the live page, once it listens
        self.status: dict[str, Any] = {}
        self.results: list[summary.Result] = []
        self.runs: dict[str, summary.Run] = {}
        self.failures: list[summary.Failure] = []
        self.progress: dict[int, dict[str, Any]] = {}  # job -> its latest progress event
        self.stopping: str | None = None
        self._watchers: set[Watcher] = set()
        self._refresh_due = False
        self._refreshed = 0.0
        self._summary_due = False
        self._summary_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ seeding

    async def seed(self) -> None:
        """Read the outbox's results and the store's ended jobs once; take a status reply; write index.html."""
        self.results, self.runs = await asyncio.to_thread(summary.scan, self.settings.outbox)
        self.failures = await asyncio.to_thread(self._stored_failures)
        await self._refresh()
        self._write_summary()

    def _stored_failures(self) -> list[summary.Failure]:
        jobs = self.store.jobs([JobState.FAILED, JobState.CANCELLED])
        jobs.sort(key=lambda j: (j.finished_at or j.updated_at, j.id), reverse=True)
        return [summary.Failure(job=j.id, file=j.name, reason=j.reason or "", state=str(j.state),
                                error=self._error_text(j.id), at=j.finished_at or j.updated_at)
                for j in jobs[:MAX_FAILURES]]

    # ------------------------------------------------------------------ events

    def publish(self, event: msg.Event) -> None:
        """One event from the daemon (called on its loop; never blocks, never raises)."""
        try:
            self._apply(event)
        except Exception:  # pragma: no cover - a view bug must not stop the publisher
            log.exception("the morning view could not take %r", event)

    def _apply(self, event: msg.Event) -> None:
        if isinstance(event, msg.JobProgress):
            data = {"job": event.job, "file": event.file, "frames_done": event.frames_done,
                    "frames_total": event.frames_total, "fps": event.fps, "eta_s": event.eta_s, "ts": event.ts}
            self.progress[event.job] = data
            self._notify("progress", data)
            if event.ts - self._refreshed >= PROGRESS_REFRESH_S:  # the workers' lines move on too
                self._schedule_refresh()
            return
        if isinstance(event, msg.JobStarted):  # published before the runner lists it as running
            self.progress[event.job] = {"job": event.job, "file": event.file, "frames_done": 0,
                                        "frames_total": event.frames_total or 0, "fps": 0.0, "eta_s": None,
                                        "ts": event.ts}
        elif isinstance(event, msg.JobDone):
            self.progress.pop(event.job, None)
            self._spawn(self._add_result(Path(event.csv)))
        elif isinstance(event, (msg.JobFailed, msg.JobCancelled)):
            self.progress.pop(event.job, None)
            reason = event.reason if isinstance(event, msg.JobFailed) else "cancelled by the user"
            state = "failed" if isinstance(event, msg.JobFailed) else "cancelled"
            self._spawn(self._add_failure(event.job, event.file, reason, state))
        elif isinstance(event, msg.DaemonStopping):
            self.stopping = event.reason
            self._notify("state", self.state())
            return
        self._schedule_refresh()

    async def _add_result(self, csv: Path) -> None:
        found = await asyncio.to_thread(summary.read_result, self.settings.outbox, csv.with_suffix(".json"))
        if found is not None:
            result, run = found
            self.results = [r for r in self.results if r.csv != result.csv]
            self.results.insert(0, result)
            self.runs.setdefault(run.key, run)
            self._notify("result", result.to_dict())
        self._write_summary()

    async def _add_failure(self, job: int, file: str, reason: str, state: str) -> None:
        error = await asyncio.to_thread(self._error_text, job)
        failure = summary.Failure(job=job, file=file, reason=reason, state=state, error=error)
        self.failures = [failure, *(f for f in self.failures if f.job != job)][:MAX_FAILURES]
        self._schedule_refresh()
        self._write_summary()

    def _error_text(self, job_id: int) -> str | None:
        """``<input>.error.txt`` in ``.failed/`` (where the user is told to look), if it is there."""
        job = self.store.get(job_id)
        if job is None:
            return None
        folder = self.settings.inbox / files.FAILED_DIR / job.subdir
        for kept in (folder / job.name, Path(job.source)):
            path = kept.with_name(f"{kept.name}.error.txt")
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    return f.read(ERROR_TEXT_MAX)
            except OSError:
                continue
        return None

    # ------------------------------------------------------------------ status

    def _schedule_refresh(self) -> None:
        """A new status reply once this loop turn's events are in (many events, one reply)."""
        if not self._refresh_due:
            self._refresh_due = True
            asyncio.get_running_loop().call_soon(lambda: self._spawn(self._refresh()))

    async def _refresh(self) -> None:
        self._refresh_due = False
        self._refreshed = time.time()
        try:
            self.status = await self.handler(msg.Status()) or {}
        except Exception as exc:  # the daemon is stopping, or starting: keep the last reply
            log.debug("status for the page: %s", exc)
        self._notify("state", self.state())

    def state(self) -> dict[str, Any]:
        """Everything the page shows but the results (those are paged): a JSON-ready dict."""
        s = self.status
        lines = {line["job"]: line for line in s.get("running", [])}
        running = [{**lines.get(job, {}), **self.progress.get(job, {})}  # the newest progress wins
                   for job in sorted(lines.keys() | self.progress.keys())]
        return {
            "state": "stopping" if self.stopping else s.get("state", "starting"),
            "stopping": self.stopping,
            "paused": s.get("paused", False),
            "queued": s.get("queued", []),
            "running": running,
            "waiting": s.get("waiting", []),
            "duplicates": s.get("duplicates", [])[-20:],
            "workers": s.get("workers", {}),
            "counts": s.get("counts", {}),
            "inbox": str(self.settings.inbox),
            "outbox": str(self.settings.outbox),
            "failures": [f.to_dict() for f in self.failures[:100]],
            "failures_total": len(self.failures),
            "results_total": len(self.results),
            "runs": {k: {"models": r.models, "options": r.options, "providers": r.providers}
                     for k, r in self.runs.items()},
            "now": time.time(),
        }

    def results_page(self, offset: int, limit: int) -> dict[str, Any]:
        return {"total": len(self.results), "offset": offset,
                "results": [r.to_dict() for r in self.results[offset:offset + limit]]}

    # ------------------------------------------------------------------ watchers and tasks

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        self._watchers.add(watcher)
        return lambda: self._watchers.discard(watcher)

    def _notify(self, kind: str, data: dict[str, Any]) -> None:
        for watcher in list(self._watchers):
            watcher(kind, data)

    def _write_summary(self) -> None:
        """index.html again, in a thread; writes asked for while one runs make one more write."""
        self._summary_due = True
        if self._summary_task is None or self._summary_task.done():
            self._summary_task = self._spawn(self._summary_loop())

    async def _summary_loop(self) -> None:
        while self._summary_due:
            self._summary_due = False
            results, failures, runs = list(self.results), list(self.failures), dict(self.runs)
            try:
                await asyncio.to_thread(summary.write, self.settings.outbox, results, failures, runs)
            except OSError as exc:
                log.warning("cannot write %s in %s: %s", summary.INDEX_NAME, self.settings.outbox, exc)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Finish the summary being written (and any event still being taken in)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
