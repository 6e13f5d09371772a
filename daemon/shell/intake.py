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
from ..jobs.history import History
from ..jobs.inputs import fingerprint_async, identity_text
from ..jobs.inputs import identity as file_identity
from ..jobs.store import Job, JobState, JobStore, StoreError
from . import files
from .errors import CommandError
from .outbox import Outbox
from .watcher import InboxWatcher, NotTaken

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
        self._held: dict[Path, str] = {}  # settled files the job store could not take yet, and why

    def watch(self) -> InboxWatcher:
        s = self.settings
        self.watcher = InboxWatcher(
            s.inbox, self.settled, extensions=s.extensions, settle_seconds=s.settle_seconds,
            rescan_seconds=s.rescan_seconds, follow_symlinks=s.follow_symlinks, can_open=self.takeable,
            on_unopenable=self._unopenable)
        return self.watcher

    def _unopenable(self, path: Path) -> None:
        fails_in = self._fails_in(path)
        log.info("%r is not openable as a video yet; it is taken (and fails with the reason) in %.0f s unless "
                 "it changes", str(path), fails_in or 0)
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
        """A settled inbox file: its job. A file that cannot be read is set aside with the reason; one the
        job store cannot take now (a full or failing state disk) waits, with the reason in ``status``,
        and is tried again on the next rescan (``NotTaken``): no error leaves a file unseen."""
        try:
            await self.accept(path)
        except OSError as exc:
            self._held.pop(path, None)
            log.warning("cannot read %r: %s", str(path), exc)
            await asyncio.to_thread(self._reject_unreadable, path, exc)
        except StoreError as exc:
            self._hold(path, f"the job store cannot take it yet ({exc}); tried again every "
                             f"{self.settings.rescan_seconds:g} s")
            raise NotTaken from exc
        except Exception as exc:
            log.exception("taking %r failed", str(path))
            self._hold(path, f"aud could not take it ({exc.__class__.__name__}: {exc}); tried again every "
                             f"{self.settings.rescan_seconds:g} s")
            raise NotTaken from exc
        else:
            if self._held.pop(path, None) is not None:
                log.info("%r is taken now", str(path))

    def _hold(self, path: Path, reason: str) -> None:
        if self._held.get(path) != reason:
            log.warning("%r waits: %s", str(path), reason)
            self.publish(msg.FileWaiting(file=str(path), reason=reason))
        self._held[path] = reason

    async def submit(self, path: Path, force: bool = False) -> tuple[Job, str]:
        """``aud submit``: a job for the file at ``path`` (a refusal for a path that is no file)."""
        path = path.expanduser()
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        try:
            return await self.accept(path.resolve(), force=force)
        except OSError as exc:
            raise CommandError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        except StoreError as exc:
            raise CommandError(f"{path}: the job store cannot take it now ({exc}); nothing was queued, "
                               f"try again later") from None

    async def accept(self, path: Path, force: bool = False) -> tuple[Job, str]:
        """The job for a complete file, and what became of the file ("queued", "requeued", "duplicate")."""
        identity = identity_text(await asyncio.to_thread(file_identity, path))  # before it is read
        # a file seen before and unchanged since (same device, inode, size, mtime) is not hashed again
        content = await asyncio.to_thread(History(self.store).fingerprint_of, identity) or await fingerprint_async(path)
        job, created = await asyncio.to_thread(self.store.add_job, content, path, self._subdir(path), path.name,
                                               self.key, force, identity)
        if created:
            outcome = "queued"
            log.info("job %s queued: %r", job.id, str(path))
            self.publish(msg.JobQueued(job=job.id, file=job.name))
        elif job.state in (JobState.FAILED, JobState.CANCELLED):
            # the job is named after the file it is made from now (a set-aside input keeps the job's name)
            renamed = not files.is_set_aside(path, self.settings.inbox)
            await asyncio.to_thread(self.store.set_source, job.id, path, path.name if renamed else None,
                                    self._subdir(path) if renamed else None, identity)
            job = await asyncio.to_thread(self.store.requeue, job.id)
            outcome = "requeued"
            log.info("job %s queued again: %r", job.id, str(path))
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
        log.info("%r has the same content and settings as job %s (%r, %s)%s; `aud submit --force` runs it "
                 "again", str(path), job.id, job.name, job.state, f"; moved to {str(moved)!r}" if moved else "")
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
            log.error("%r cannot be read (%s) and could not be set aside: %s", str(path), reason, move_exc)

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
        for path in [p for p in self._held if not p.exists()]:
            del self._held[path]  # gone from the inbox: nothing waits
        out += [Waiting(str(path), reason) for path, reason in sorted(self._held.items())]
        return out
