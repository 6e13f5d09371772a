"""The daemon's destination for results: CSVs in the outbox (mirroring the inbox's folders), inputs
moved to ``.done`` or ``.failed`` (with ``<name>.error.txt``) when their job ends."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..jobs.store import Job, JobState
from ..output.paths import output_paths
from . import files

log = logging.getLogger("aud.outbox")


class Outbox:
    def __init__(self, settings: Settings, forget: Callable[[Path], None] = lambda path: None):
        self.settings = settings
        self.forget = forget  # the watcher forgets a moved input, so a file put back later is new (the
        # moves run in worker threads: the daemon hands this over to its loop)
        self._reserved: dict[int, Path] = {}  # job -> its CSV name, while the result is being written

    def csv_path(self, job: Job) -> Path:
        """The job's CSV name, kept until the job ends (two jobs never share a name). An earlier
        run's result of the same video under that name is kept beside it, with its run's date."""
        path = self._reserved.get(job.id)
        if path is None:
            taken = set(self._reserved.values())
            path = files.outbox_csv(self.settings.outbox, job.subdir, job.name, job.fingerprint, taken)
            self._reserved[job.id] = path
        parts = output_paths(path, self.settings.output_options())
        for kept in files.keep_previous(path, job.id, job.fingerprint, parts):
            log.info("kept the previous result of %r as %r", job.name, kept.name)
        return path

    def movable(self, path: Path) -> bool:
        """Inputs inside the inbox (not already set aside) move when their job ends; others stay."""
        inbox = self.settings.inbox
        return files.is_inside(path, inbox) and not files.is_set_aside(path, inbox)

    def _ours(self, path: Path) -> bool:
        """An input aud may move: inside the inbox (a re-run from ``.failed`` or ``.cancelled`` too)."""
        return files.is_inside(path, self.settings.inbox)

    def input_after(self, job: Job) -> Path:
        source = Path(job.source)
        if not self._done_moves(source):
            return source
        return files.free_path(self.settings.inbox / files.DONE_DIR / job.subdir / source.name)

    def _done_moves(self, source: Path) -> bool:
        """A finished input moves to .done when inputs move, and always when it was re-run from .failed or
        .cancelled (it is not left there beside a stale note)."""
        aside = files.set_aside_in(source, self.settings.inbox)
        if aside in (files.FAILED_DIR, files.CANCELLED_DIR):
            return True
        return self.settings.after_done == "move" and self.movable(source)

    def done(self, job: Job, csv: Path) -> None:
        self._reserved.pop(job.id, None)
        source = Path(job.source)
        if self._done_moves(source):
            self.move(source, files.DONE_DIR, job.subdir)
            files.remove_notes(source)
        files.outside_report(self.settings.outbox, source, job.id).unlink(missing_ok=True)

    def failed(self, job: Job, reason: str, set_aside: bool) -> None:
        """A failed job's input goes to .failed, then ``<name>.error.txt`` beside it, last; a cancelled
        job's to .cancelled with a plain note. An input outside the inbox stays where it is, untouched:
        a failure's report goes to the outbox's failure area instead. An input that is gone (or,
        ``set_aside`` False, holds other content now) is left alone."""
        self._reserved.pop(job.id, None)
        source = Path(job.source)
        if not set_aside or not os.path.lexists(source):
            return
        cancelled = job.state == JobState.CANCELLED
        if not self._ours(source):
            if not cancelled:
                report = files.write_outside_error(self.settings.outbox, source, reason, job.id)
                log.info("job %s: %r failed; the report is in %r", job.id, str(source), str(report))
            return
        folder = files.CANCELLED_DIR if cancelled else files.FAILED_DIR
        kept: Path | None = source
        if files.set_aside_in(source, self.settings.inbox) != folder:
            kept = self.move(source, folder, job.subdir)
            files.remove_notes(source)  # a note beside it in .failed or .cancelled is stale now
        if kept is None:
            return
        files.remove_notes(kept)
        if cancelled:
            files.write_cancelled(kept, job.id)
        else:
            files.write_error(kept, reason, job.id)

    def move(self, path: Path, folder: str, subdir: str) -> Path | None:
        target = files.move_input(path, self.settings.inbox, folder, subdir)
        self.forget(path)
        return target
