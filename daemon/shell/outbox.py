"""The daemon's destination for results: CSVs in the outbox (mirroring the inbox's folders), inputs
moved to ``.done`` or ``.failed`` (with ``<name>.error.txt``) when their job ends."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..jobs.store import Job
from ..output.files import output_paths
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
            log.info("kept the previous result of %s as %s", job.name, kept.name)
        return path

    def movable(self, path: Path) -> bool:
        """Inputs inside the inbox (not already set aside) move when their job ends; others stay."""
        inbox = self.settings.inbox
        return files.is_inside(path, inbox) and not files.is_set_aside(path, inbox)

    def input_after(self, job: Job) -> Path:
        source = Path(job.source)
        if self.settings.after_done != "move" or not self.movable(source):
            return source
        return files.free_path(self.settings.inbox / files.DONE_DIR / job.subdir / source.name)

    def done(self, job: Job, csv: Path) -> None:
        self._reserved.pop(job.id, None)
        source = Path(job.source)
        if self.settings.after_done == "move" and self.movable(source):
            self.move(source, files.DONE_DIR, job.subdir)

    def failed(self, job: Job, reason: str, set_aside: bool) -> None:
        """The input goes to .failed, then ``<name>.error.txt`` beside it, last; an input that is gone
        (or, ``set_aside`` False, holds other content now) is left alone."""
        self._reserved.pop(job.id, None)
        source = Path(job.source)
        if not set_aside or not os.path.lexists(source):
            return
        kept = self.move(source, files.FAILED_DIR, job.subdir) if self.movable(source) else source
        if kept is not None:
            files.write_error(kept, reason, job.id)

    def move(self, path: Path, folder: str, subdir: str) -> Path | None:
        target = files.move_input(path, self.settings.inbox, folder, subdir)
        self.forget(path)
        return target
