"""Intake: files that arrive (settled in the inbox, or submitted by path) become jobs in the store.

A job is one video content under one key (models and output-shaping settings, ``jobs.spec``):

* new content (or known content under a new key) -> a new queued job;
* the content of a failed or cancelled job -> that job is queued again (a re-drop);
* the content of a done job, or of a queued or running job under another name -> a duplicate: set
  aside into ``.done`` with a ``file_duplicate`` event and a log line (``aud submit --force`` runs it
  again regardless);
* a file that cannot even be read -> set aside into ``.failed`` with the reason.

Waiting files (still being copied, or not openable yet) are reported by ``waiting()`` for status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import protocol as msg
from ..config import Settings
from ..core.video import can_open
from ..jobs.inputs import fingerprint_async
from ..jobs.store import Job, JobState, JobStore
from . import files
from .errors import CommandError
from .outbox import Outbox
from .watcher import InboxWatcher

log = logging.getLogger("aud.intake")
RECENT_DUPLICATES = 20


@dataclass(frozen=True)
class Waiting:
    file: str
    reason: str
    fails_in_s: float | None = None


class Intake:
    def __init__(self, settings: Settings, store: JobStore, outbox: Outbox, key: str,
                 publish: Callable[[msg.Event], None], wake: Callable[[], None]):
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self.key = key
        self.publish = publish
        self.wake = wake
        self.watcher: InboxWatcher | None = None
        self.duplicates: deque[msg.FileDuplicate] = deque(maxlen=RECENT_DUPLICATES)

    def watch(self) -> InboxWatcher:
        s = self.settings
        self.watcher = InboxWatcher(
            s.inbox, self.settled, extensions=s.extensions, settle_seconds=s.settle_seconds,
            rescan_seconds=s.rescan_seconds, follow_symlinks=s.follow_symlinks, can_open=self.takeable,
            on_unopenable=self._unopenable)
        return self.watcher

    def _unopenable(self, path: Path) -> None:
        fails_in = self._fails_in(path)
        log.info("%s is not openable as a video yet; it is taken (and fails with the reason) in %.0f s unless "
                 "it changes", path, fails_in or 0)
        self.publish(msg.FileWaiting(file=str(path), reason="not openable as a video yet (still arriving, or "
                                                            "damaged)", fails_in_s=fails_in))

    def forget(self, path: Path) -> None:
        if self.watcher is not None:
            self.watcher.forget(path)

    # --- arrivals --------------------------------------------------------------------------------

    def takeable(self, path: Path) -> bool:
        """Complete enough to take: OpenCV opens it, or it has been still for so long that it never
        will (a bad file: taken so that it fails with a reason instead of waiting forever)."""
        if can_open(path):
            return True
        return self._fails_in(path) == 0.0

    def _fails_in(self, path: Path) -> float | None:
        try:
            still_for = time.time() - path.stat().st_mtime
        except OSError:
            return None
        return max(0.0, self.settings.unopenable_grace_seconds - still_for)

    async def settled(self, path: Path) -> None:
        try:
            await self.accept(path)
        except OSError as exc:
            log.warning("cannot read %s: %s", path, exc)
            await asyncio.to_thread(self._reject_unreadable, path, exc)

    async def submit(self, path: Path, force: bool = False) -> tuple[Job, str]:
        """``aud submit``: a job for the file at ``path`` (a refusal for a path that is no file)."""
        path = path.expanduser()
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        try:
            return await self.accept(path.resolve(), force=force)
        except OSError as exc:
            raise CommandError(f"{path}: cannot be read ({exc.strerror or exc})") from None

    async def accept(self, path: Path, force: bool = False) -> tuple[Job, str]:
        """The job for a complete file, and what became of the file ("queued", "requeued", "duplicate")."""
        content = await fingerprint_async(path)
        job, created = await asyncio.to_thread(self.store.add_job, content, path, self._subdir(path), path.name,
                                               self.key, force)
        if created:
            outcome = "queued"
            log.info("job %s queued: %s", job.id, path)
            self.publish(msg.JobQueued(job=job.id, file=job.name))
        elif job.state in (JobState.FAILED, JobState.CANCELLED):
            await asyncio.to_thread(self.store.set_source, job.id, path)
            job = await asyncio.to_thread(self.store.requeue, job.id)
            outcome = "requeued"
            log.info("job %s queued again: %s", job.id, path)
            self.publish(msg.JobQueued(job=job.id, file=job.name))
        elif job.state == JobState.DONE or Path(job.source) != path:
            outcome = "duplicate"
            event = await asyncio.to_thread(self._set_aside_duplicate, path, job)
            self.duplicates.append(event)
            self.publish(event)
        else:
            outcome = "queued"  # the same file seen again while its job waits or runs
        self.wake()
        return job, outcome

    def _subdir(self, path: Path) -> str:
        """The input's folder below the inbox, mirrored in the outbox ("" for set-aside inputs)."""
        if files.is_set_aside(path, self.settings.inbox):
            return ""
        return files.relative_subdir(path, self.settings.inbox)

    def _set_aside_duplicate(self, path: Path, job: Job) -> msg.FileDuplicate:
        """In a thread: move the duplicate into .done (when inputs move) and say so in the log."""
        moved = None
        if self.settings.after_done == "move" and self.outbox.movable(path) and path.exists():
            moved = self.outbox.move(path, files.DONE_DIR, self._subdir(path))
        log.info("%s has the same content and settings as job %s (%s, %s)%s; `aud submit --force` runs it "
                 "again", path, job.id, job.name, job.state, f"; moved to {moved}" if moved else "")
        return msg.FileDuplicate(file=str(path), job=job.id, state=str(job.state),
                                 moved_to=str(moved) if moved else None)

    def _reject_unreadable(self, path: Path, exc: OSError) -> None:
        """A file that cannot even be read (permissions): kept in .failed with the reason beside it."""
        reason = f"the file cannot be read ({exc.strerror or exc}); check its permissions"
        try:
            kept = self.outbox.move(path, files.FAILED_DIR, self._subdir(path)) if self.outbox.movable(path) else path
            if kept is not None:
                files.write_error(kept, reason, None)
        except OSError as move_exc:
            log.error("%s cannot be read (%s) and could not be set aside: %s", path, reason, move_exc)

    # --- what waits ------------------------------------------------------------------------------

    def waiting(self) -> list[Waiting]:
        """Files in the inbox that are not jobs yet, and why."""
        if self.watcher is None:
            return []
        out = [Waiting(str(path), "still being copied (waiting for it to stay unchanged)")
               for path in sorted(self.watcher.settling - self.watcher.unopenable)]
        out += [Waiting(str(path), "not openable as a video yet (still arriving, or damaged); taken and failed "
                                   "with the reason once it has been unchanged long enough", self._fails_in(path))
                for path in sorted(self.watcher.unopenable)]
        return out
