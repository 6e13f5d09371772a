"""The results writer: a finished job's stored rows become its files (sidecar, plot, inspection videos,
hemi-face CSVs, then the main CSV), on one thread of its own.

One thread: results are written one at a time, and matplotlib's fonts are opened once (it keeps each
thread's font files open). ``write`` says what became of the result by what it raises:

* ``Unwritable``: the destination cannot take the files now (its folder cannot be made, a write
  failed); what was written of them is removed. ``deliver`` then waits and writes again, as long as
  ``Waits.destination`` says (the daemon: a full, read-only or forbidding disk), the reason shown in
  ``status``; otherwise the job fails (``JobFailure``);
* ``JobFailure``: the input changed while the job ran (the result is discarded), or the rows do not
  assemble (an internal error, logged);
* ``ShardFormatError``: a stored shard is unreadable; the job's shards are to be computed again;
* anything else (a bug: e.g. a table a CSV style cannot write): what was written is removed and the
  exception goes to the caller, which fails the job with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import output
from ..core.mirror_video import render_inspection_videos
from ..core.results import FaceRows, ShardFormatError
from .active import ActiveJob, JobFailure
from .patient import PatientStore
from .store import Job
from .tasks import Dropped

log = logging.getLogger("aud.runner")

__all__ = ["Destination", "ResultsWriter", "ShardFormatError", "Unwritable"]


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


class Unwritable(Exception):
    """The destination cannot take the result now; ``cause`` is the filesystem's error."""

    def __init__(self, reason: str, cause: OSError):
        super().__init__(reason)
        self.cause = cause


class ResultsWriter:
    def __init__(self, destination: Destination, options: output.OutputOptions, sidecar: dict,
                 openface2_dir: Path | None = None, openface2_only: bool = False):
        self.destination = destination
        self.options = options
        self.openface2_dir = openface2_dir  # OpenFace 2.2 AUs: each person's merged median, post-processing
        self.openface2_only = openface2_only
        self.sidecar = sidecar  # the run's part of every sidecar: models, providers, options, packages
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="aud-results")

    async def warm_up(self) -> None:
        """Load what writing the first result needs (the plot's library and fonts) on the thread."""
        if self.options.plots:
            from ..output import plot

            await asyncio.get_running_loop().run_in_executor(self._thread, plot.warm_up)

    def close(self) -> None:
        """The thread ends (after a result being written)."""
        self._thread.shutdown(wait=True)

    async def deliver(self, active: ActiveJob, read: Callable[[], Awaitable[list[bytes]]],
                      call: PatientStore) -> Path:
        """Write the job's result from its stored shard results (``read``), waiting while the destination
        cannot take it (``call``: its waits, its stop, where the reason shows); returns the main CSV."""
        waited = False
        while True:
            try:
                csv = await self.write(active, await read())
                if waited:
                    call.note(active, None)
                return csv
            except Unwritable as exc:
                pause = call.waits.destination(exc.cause)
                if pause is None:
                    raise JobFailure(str(exc)) from exc
                call.note(active, str(exc), pause)  # its input and stored results kept
                waited = True
            if not await call.tasks.pause(pause) or not call.wanted(active):
                raise Dropped("write the result")

    async def write(self, active: ActiveJob, parts: list[bytes]) -> Path:
        """Write the job's result from its stored shard results (by index); returns the main CSV."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._write, active, parts)

    def _write(self, active: ActiveJob, parts: list[bytes]) -> Path:
        if not active.unchanged():
            raise JobFailure(f"{active.path} changed while it was being processed; the result was discarded "
                             f"(the new content is a job of its own)", set_aside=False)
        try:
            csv = self.destination.csv_path(active.job)
        except OSError as exc:
            raise Unwritable(f"cannot make the result's folder: {exc.strerror or exc}", exc) from exc
        try:
            # the rows the result writes (faces = "primary": the person followed); the stored bytes and the
            # assembled rows are let go as soon as they are used (a long recording's rows are large)
            rows = output.written_rows(output.assemble(_decoded(parts), active.expected), self.options)
        except output.AssemblyError as exc:
            log.exception("job %s could not be assembled", active.job.id)
            raise JobFailure(f"internal error: {exc}") from exc
        try:
            self._files(active, rows, csv)
        except BaseException as exc:
            output.discard_partial(csv, self.options)
            if isinstance(exc, OSError):
                raise Unwritable(f"cannot write the result to {csv.parent}: {exc.strerror or exc}", exc) from exc
            raise
        return csv

    def _files(self, active: ActiveJob, rows: FaceRows, csv: Path) -> None:
        job, info = active.job, active.info
        tables = output.tables_of_written(rows, self.options, info.width, info.height)
        if self.openface2_dir is not None:
            from ..core.openface2au.finish import add_columns

            add_columns(tables, rows, self.openface2_dir, self.options.faces == "all", self.options.track_gap_frames,
                        self.openface2_only)
        videos = None
        if self.options.mirror and self.options.mirror_videos:
            def videos(folder: Path) -> None:
                faces = output.inspection_faces(rows, info.frames)
                render_inspection_videos(active.path, faces, folder, csv.stem, info.fps or 30.0)
        output.write_outputs(csv, tables, self._sidecar(active, rows, tables), self.options,
                             title=f"{job.name} (job {job.id})", videos=videos)

    def _sidecar(self, active: ActiveJob, rows: FaceRows, tables: dict) -> dict:
        job, info = active.job, active.info
        wall = time.monotonic() - active.started  # since it was planned: its shards, assembly, this sidecar
        now = time.time()
        return {
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
            **self.sidecar,
            "wall_seconds": round(wall, 3),
            "frames_per_second": round(active.frames_this_run / wall, 3) if wall > 0 else None,
            # the whole job, from its start (before its input was checked and probed) to its result
            "job_wall_seconds": round(now - job.started_at, 3) if job.started_at is not None else None,
            "queued_seconds": round(job.started_at - job.created_at, 3) if job.started_at is not None else None,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def _decoded(parts: list[bytes]) -> list[FaceRows]:
    """The stored shard results as rows, in order; each stored result is dropped from ``parts`` once decoded."""
    parts.reverse()
    decoded = []
    while parts:
        decoded.append(FaceRows.from_bytes(parts.pop()))
    return decoded
