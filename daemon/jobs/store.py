"""Durable job store: one SQLite file, WAL journal, ``synchronous=FULL``.

Every public method that changes state commits (and fsyncs) before it returns, so the caller
only ever acts on transitions that will survive ``kill -9``. On restart, :meth:`JobStore.recover`
puts interrupted jobs back in the queue; shards already marked done stay done.

A job is one video *and* what shapes its output: ``fingerprint`` is the content's sha256, ``key`` a
hash of the model files and every output-affecting setting (``jobs.spec``). The same video under the
same key is one job; after a change of models or settings it is a new one. A done shard holds its
rows by value (``result``, in the ``format`` that wrote them), so a shard is done exactly when its
result is committed.

A job also keeps its input file's ``identity`` (``inputs.identity_text``: device, inode, size, mtime) as
it was when the file was hashed: at the job's start the content is hashed again only when the identity
changed. A done job keeps its measured ``fps`` (frames per second of its run): the recent jobs' rate
estimates the time left of jobs that have no rate of their own yet (``jobs.estimate``).

The daemon uses one store from its event-loop thread and, occasionally, from worker threads
(``asyncio.to_thread``); a single connection guarded by a lock serialises all access.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .database import Database, StoreError, rollback


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


JOB_STATES = tuple(JobState)
SHARD_STATES = ("pending", "done")
SCHEMA_VERSION = 3

_SCHEMA = (
    """
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint  TEXT    NOT NULL,
    key          TEXT    NOT NULL DEFAULT '',
    source       TEXT    NOT NULL,
    subdir       TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    state        TEXT    NOT NULL
                 CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    reason       TEXT,
    frames_total INTEGER,
    info_json    TEXT,
    csv_path     TEXT,
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    identity     TEXT,
    fps          REAL
)""",
    "CREATE INDEX jobs_by_state ON jobs (state)",
    "CREATE INDEX jobs_by_content ON jobs (fingerprint, key)",
    "CREATE INDEX jobs_by_identity ON jobs (identity)",
    """
CREATE TABLE shards (
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    start       INTEGER NOT NULL CHECK (start >= 0),
    stop        INTEGER NOT NULL CHECK (stop > start),
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'done')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    format      INTEGER,
    result      BLOB,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID""",
)

JOB_COLUMNS = (
    "id, fingerprint, key, source, subdir, name, state, reason, frames_total, info_json, csv_path, "
    "created_at, updated_at, started_at, finished_at, identity, fps"
)
_SHARD_COLUMNS = "job_id, idx, start, stop, state, attempts, format"


@dataclass(frozen=True)
class Job:
    id: int
    fingerprint: str
    key: str
    source: str
    subdir: str
    name: str
    state: JobState
    reason: str | None
    frames_total: int | None
    info_json: str | None
    csv_path: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    identity: str | None = None  # the input's identity when it was hashed (None: unknown, hash at start)
    fps: float | None = None  # a done job's measured frames per second

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", JobState(self.state))


@dataclass(frozen=True)
class Shard:
    job_id: int
    index: int
    start: int
    stop: int
    state: str
    attempts: int
    format: int | None  # the shard format of its stored result (None while pending)

    @property
    def done(self) -> bool:
        return self.state == "done"


class JobStore(Database):
    """Jobs and their frame shards, persisted in one SQLite file (``database.Database``: the connection,
    its lock, transactions and errors; here the jobs, their shards and their transitions)."""

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        super().__init__(path, _migrate, timeout=timeout)

    # -- jobs --------------------------------------------------------------------------------

    def add_job(self, fingerprint: str, source: Path, subdir: str, name: str, key: str = "",
                force: bool = False, identity: str | None = None) -> tuple[Job, bool]:
        """Register a video (``identity``: the file's as it was when ``fingerprint`` was computed); the
        newest job of the same content and key is returned with ``False`` instead, unless ``force`` (a
        re-run the user asked for) adds a new one regardless."""
        _check_subdir(subdir)
        now = time.time()
        with self._write() as conn:
            existing = None if force else _find(conn, fingerprint, key)
            if existing is not None:
                return existing, False
            cur = conn.execute(
                "INSERT INTO jobs (fingerprint, key, source, subdir, name, state, created_at, updated_at, identity)"
                " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                (fingerprint, key, os.fspath(Path(source).absolute()), subdir, name, now, now, identity),
            )
            job = _get(conn, int(cur.lastrowid or 0))
        assert job is not None
        return job, True

    def get(self, job_id: int) -> Job | None:
        """The job with this id, or None."""
        with self.read() as conn:
            return _get(conn, job_id)

    def find(self, fingerprint: str, key: str = "") -> Job | None:
        """The newest job for this content and key, or None."""
        with self.read() as conn:
            return _find(conn, fingerprint, key)

    def set_source(self, job_id: int, source: Path, name: str | None = None, subdir: str | None = None,
                   identity: str | None = None) -> None:
        """Where the job's input is now (a re-drop, or a move the daemon made); a re-drop under another
        name or folder renames the job (its result is named after the file it was made from). The
        ``identity`` of a file just hashed replaces the job's (None: the job's is kept)."""
        with self._write() as conn:
            job = _require(conn, job_id)
            if subdir is not None:
                _check_subdir(subdir)
            conn.execute("UPDATE jobs SET source = ?, name = ?, subdir = ?, identity = ?, updated_at = ? WHERE id = ?",
                         (os.fspath(Path(source).absolute()), name or job.name,
                          job.subdir if subdir is None else subdir, identity or job.identity, time.time(), job_id))

    def set_identity(self, job_id: int, identity: str) -> None:
        """The identity of the job's input, hashed again and found to be the job's content."""
        with self._write() as conn:
            _require(conn, job_id)
            conn.execute("UPDATE jobs SET identity = ? WHERE id = ?", (identity, job_id))

    def jobs(self, states: Iterable[str] | None = None) -> list[Job]:
        """All jobs, or those in ``states``, ordered by id."""
        wanted = () if states is None else _check_states(states)
        where = f" WHERE state IN ({', '.join('?' * len(wanted))})" if states is not None else ""
        with self.read() as conn:
            rows = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs{where} ORDER BY id", wanted).fetchall()
        return [Job(*row) for row in rows]

    # -- planning and shards -----------------------------------------------------------------

    def set_plan(
        self, job_id: int, frames_total: int, info_json: str, ranges: list[tuple[int, int]]
    ) -> None:
        """Record the video's size, properties and shard ranges in one transaction.

        Planning again with the same ranges keeps the shards (and what is done). Different
        ranges replace the plan only while no shard is done; otherwise ValueError.
        """
        ranges = _check_ranges(frames_total, ranges)
        now = time.time()
        with self._write() as conn:
            job = _require(conn, job_id)
            _require_state(job, ("queued", "running"), "plan")
            existing = _shards(conn, job_id)
            if [(s.start, s.stop) for s in existing] != ranges:
                _replace_shards(conn, job, existing, ranges)
            conn.execute(
                "UPDATE jobs SET frames_total = ?, info_json = ?, updated_at = ? WHERE id = ?",
                (frames_total, info_json, now, job_id),
            )

    def shards(self, job_id: int) -> list[Shard]:
        """All shards of a job, by index."""
        with self.read() as conn:
            return _shards(conn, job_id)

    def mark_dispatched(self, job_id: int, index: int) -> int:
        """Count one more dispatch of a pending shard of a running job; returns the new count."""
        with self._write() as conn:
            job = _require(conn, job_id)
            _require_state(job, ("running",), f"dispatch shard {index} of")
            shard = _require_shard(conn, job, index)
            if shard.state != "pending":
                raise ValueError(f"cannot dispatch shard {index} of job {job_id}: it is already done")
            conn.execute(
                "UPDATE shards SET attempts = attempts + 1 WHERE job_id = ? AND idx = ?",
                (job_id, index),
            )
            _touch(conn, job_id)
        return shard.attempts + 1

    def undo_dispatch(self, job_id: int, index: int) -> int:
        """Take back a dispatch that ran nothing (the executor could not run it, or the runner stopped
        it): the shard's count goes down by one, never below 0; returns the new count."""
        with self._write() as conn:
            job = _require(conn, job_id)
            shard = _require_shard(conn, job, index)
            conn.execute(
                "UPDATE shards SET attempts = MAX(attempts - 1, 0) WHERE job_id = ? AND idx = ?",
                (job_id, index),
            )
        return max(shard.attempts - 1, 0)

    def shard_done(self, job_id: int, index: int, result: bytes, format: int) -> None:
        """Store a shard's result and mark it done, in one transaction."""
        with self._write() as conn:
            job = _require(conn, job_id)
            _require_state(job, ("running",), f"complete shard {index} of")
            shard = _require_shard(conn, job, index)
            if shard.state == "done":
                raise ValueError(f"shard {index} of job {job_id} is already done")
            conn.execute(
                "UPDATE shards SET state = 'done', result = ?, format = ? WHERE job_id = ? AND idx = ?",
                (result, format, job_id, index),
            )
            _touch(conn, job_id)

    def shard_results(self, job_id: int) -> list[bytes]:
        """The stored results of a job's done shards, by index."""
        with self.read() as conn:
            rows = conn.execute(
                "SELECT result FROM shards WHERE job_id = ? AND state = 'done' AND result IS NOT NULL ORDER BY idx",
                (job_id,)
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def redo_shards(self, job_id: int, indexes: Iterable[int]) -> None:
        """Put done shards back to pending (their stored results are unusable: another format)."""
        with self._write() as conn:
            _require(conn, job_id)
            conn.executemany(
                "UPDATE shards SET state = 'pending', result = NULL, format = NULL, attempts = 0"
                " WHERE job_id = ? AND idx = ?", [(job_id, i) for i in indexes])
            _touch(conn, job_id)

    def rekey(self, job_id: int, key: str) -> None:
        """A queued job taken up under other settings: record the key and forget any shard results
        (they were computed under the old settings)."""
        with self._write() as conn:
            job = _require(conn, job_id)
            _require_state(job, ("queued",), "re-key")
            conn.execute("DELETE FROM shards WHERE job_id = ?", (job_id,))
            conn.execute("UPDATE jobs SET key = ?, frames_total = NULL, info_json = NULL, updated_at = ?"
                         " WHERE id = ?", (key, time.time(), job_id))

    def release_results(self, job_id: int) -> None:
        """Drop an ended job's stored shard results: a done job's CSV holds them now; a failed or
        cancelled job's shards go back to pending (a re-drop computes them again)."""
        with self._write() as conn:
            job = _require(conn, job_id)
            if job.state == JobState.DONE:
                conn.execute("UPDATE shards SET result = NULL WHERE job_id = ?", (job_id,))
            else:
                conn.execute("UPDATE shards SET result = NULL, format = NULL, state = 'pending' WHERE job_id = ?",
                             (job_id,))

    # -- transitions -------------------------------------------------------------------------

    def start(self, job_id: int) -> Job:
        """queued -> running."""
        with self._write() as conn:
            job = _require(conn, job_id)
            _require_state(job, ("queued",), "start")
            now = time.time()
            conn.execute(
                "UPDATE jobs SET state = 'running', reason = NULL, started_at = ?,"
                " finished_at = NULL, updated_at = ? WHERE id = ?",
                (now, now, job_id),
            )
            return _require(conn, job_id)

    def finish(self, job_id: int, csv_path: str, fps: float | None = None) -> Job:
        """running -> done, at ``fps`` measured frames per second; every shard must be done."""
        with self._write() as conn:
            job = _require(conn, job_id)
            _require_state(job, ("running",), "finish")
            if job.frames_total is None:
                raise ValueError(f"cannot finish job {job_id} ({job.name}): it was never planned")
            left = len(_shards(conn, job_id, only_pending=True))
            if left:
                raise ValueError(
                    f"cannot finish job {job_id} ({job.name}): {left} shard(s) still pending"
                )
            now = time.time()
            conn.execute(
                "UPDATE jobs SET state = 'done', reason = NULL, csv_path = ?, finished_at = ?,"
                " updated_at = ?, fps = ? WHERE id = ?",
                (csv_path, now, now, fps, job_id),
            )
            return _require(conn, job_id)

    def fail(self, job_id: int, reason: str) -> Job:
        """queued/running -> failed, with a plain-words reason."""
        with self._write() as conn:
            job = _require(conn, job_id)
            _require_state(job, ("queued", "running"), "fail")
            _set_ended(conn, job_id, "failed", reason)
            return _require(conn, job_id)

    def cancel(self, job_id: int, reason: str = "cancelled by user") -> Job:
        """queued/running -> cancelled; an already cancelled job is returned unchanged."""
        with self._write() as conn:
            job = _require(conn, job_id)
            if job.state == "cancelled":
                return job
            _require_state(job, ("queued", "running"), "cancel")
            _set_ended(conn, job_id, "cancelled", reason)
            return _require(conn, job_id)

    def requeue(self, job_id: int) -> Job:
        """failed/cancelled -> queued. Done shards stay done; pending ones restart at 0 attempts."""
        with self._write() as conn:
            job = _require(conn, job_id)
            _require_state(job, ("failed", "cancelled"), "requeue")
            conn.execute(
                "UPDATE shards SET attempts = 0 WHERE job_id = ? AND state = 'pending'", (job_id,)
            )
            _set_queued(conn, job_id)
            return _require(conn, job_id)

    def recover(self) -> list[Job]:
        """At start-up: every running job goes back to queued (done shards stay done)."""
        with self._write() as conn:
            ids = [row[0] for row in conn.execute("SELECT id FROM jobs WHERE state = 'running'")]
            for job_id in ids:
                _set_queued(conn, job_id)
            return [_require(conn, job_id) for job_id in ids]


# -- opening -----------------------------------------------------------------------------------


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in an empty file, or check the version of an existing one."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"job store {path} is an SQLite file but not an aud job store")
            for statement in _SCHEMA:  # not executescript: it would commit mid-migration
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version == 1:
            _migrate_from_1(conn)
        elif version == 2:
            _migrate_from_2(conn)
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"job store {path} has schema version {version}, newer than this aud"
                f" ({SCHEMA_VERSION}); upgrade aud"
            )
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def _migrate_from_1(conn: sqlite3.Connection) -> None:
    """Version 1 keyed a job by content alone (UNIQUE fingerprint) and kept shard results as .npz
    files of an older format. Rebuild the tables; old jobs get the empty key (so a video dropped
    again after the upgrade is a new job) and their done shards become pending (their files are of
    an older format, so they are computed again)."""
    conn.execute("ALTER TABLE jobs RENAME TO jobs_v1")
    conn.execute("ALTER TABLE shards RENAME TO shards_v1")
    conn.execute("DROP INDEX IF EXISTS jobs_by_state")
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO jobs (id, fingerprint, key, source, subdir, name, state, reason, frames_total, info_json,"
        " csv_path, created_at, updated_at, started_at, finished_at) SELECT id, fingerprint, '', source, subdir,"
        " name, state, reason, frames_total, info_json, csv_path, created_at, updated_at, started_at,"
        " finished_at FROM jobs_v1")
    conn.execute("INSERT INTO shards (job_id, idx, start, stop, state, attempts)"
                 " SELECT job_id, idx, start, stop, 'pending', 0 FROM shards_v1")
    conn.execute("DROP TABLE shards_v1")
    conn.execute("DROP TABLE jobs_v1")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _migrate_from_2(conn: sqlite3.Connection) -> None:
    """Version 2 kept neither the input's identity nor a done job's rate: the columns are added, empty
    (a job without an identity has its input hashed again at its start, as version 2 did)."""
    conn.execute("ALTER TABLE jobs ADD COLUMN identity TEXT")
    conn.execute("ALTER TABLE jobs ADD COLUMN fps REAL")
    conn.execute("CREATE INDEX jobs_by_identity ON jobs (identity)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


# -- queries (caller holds the lock) ---------------------------------------------------------


def _get(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else Job(*row)


def _find(conn: sqlite3.Connection, fingerprint: str, key: str) -> Job | None:
    row = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE fingerprint = ? AND key = ? ORDER BY id DESC LIMIT 1",
        (fingerprint, key),
    ).fetchone()
    return None if row is None else Job(*row)


def _require(conn: sqlite3.Connection, job_id: int) -> Job:
    job = _get(conn, job_id)
    if job is None:
        raise ValueError(f"no job with id {job_id}")
    return job


def _shards(conn: sqlite3.Connection, job_id: int, *, only_pending: bool = False) -> list[Shard]:
    sql = f"SELECT {_SHARD_COLUMNS} FROM shards WHERE job_id = ?"
    if only_pending:
        sql += " AND state = 'pending'"
    rows = conn.execute(sql + " ORDER BY idx", (job_id,)).fetchall()
    return [Shard(*row) for row in rows]


def _require_shard(conn: sqlite3.Connection, job: Job, index: int) -> Shard:
    row = conn.execute(
        f"SELECT {_SHARD_COLUMNS} FROM shards WHERE job_id = ? AND idx = ?", (job.id, index)
    ).fetchone()
    if row is None:
        raise ValueError(f"job {job.id} ({job.name}) has no shard {index}")
    return Shard(*row)


def _replace_shards(
    conn: sqlite3.Connection, job: Job, existing: list[Shard], ranges: list[tuple[int, int]]
) -> None:
    """Swap in a new shard plan; refused once any shard of the old plan is done."""
    done = sum(s.state == "done" for s in existing)
    if done:
        raise ValueError(
            f"cannot re-plan job {job.id} ({job.name}) with different shard ranges:"
            f" {done} shard(s) of the existing plan are already done"
        )
    conn.execute("DELETE FROM shards WHERE job_id = ?", (job.id,))
    conn.executemany(
        "INSERT INTO shards (job_id, idx, start, stop, state, attempts)"
        " VALUES (?, ?, ?, ?, 'pending', 0)",
        [(job.id, i, start, stop) for i, (start, stop) in enumerate(ranges)],
    )


def _touch(conn: sqlite3.Connection, job_id: int) -> None:
    conn.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (time.time(), job_id))


def _set_ended(conn: sqlite3.Connection, job_id: int, state: str, reason: str) -> None:
    now = time.time()
    conn.execute(
        "UPDATE jobs SET state = ?, reason = ?, finished_at = ?, updated_at = ? WHERE id = ?",
        (state, reason, now, now, job_id),
    )


def _set_queued(conn: sqlite3.Connection, job_id: int) -> None:
    conn.execute(
        "UPDATE jobs SET state = 'queued', reason = NULL, started_at = NULL, finished_at = NULL,"
        " updated_at = ? WHERE id = ?",
        (time.time(), job_id),
    )


# -- validation --------------------------------------------------------------------------------


def _require_state(job: Job, allowed: tuple[str, ...], action: str) -> None:
    if job.state not in allowed:
        raise ValueError(
            f"cannot {action} job {job.id} ({job.name}): it is {job.state},"
            f" expected {' or '.join(allowed)}"
        )


def _check_states(states: Iterable[str]) -> tuple[str, ...]:
    wanted = (states,) if isinstance(states, str) else tuple(states)
    unknown = [s for s in wanted if s not in JOB_STATES]
    if unknown:
        raise ValueError(f"unknown job state(s) {unknown}; known: {', '.join(JOB_STATES)}")
    return wanted


def _check_ranges(frames_total: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Shard ranges must be non-empty, ascending, non-overlapping and inside the video."""
    if frames_total < 0:
        raise ValueError(f"frames_total must be >= 0, got {frames_total}")
    checked = [(int(start), int(stop)) for start, stop in ranges]
    previous_stop = 0
    for start, stop in checked:
        if not previous_stop <= start < stop <= frames_total:
            raise ValueError(
                f"bad shard range [{start}, {stop}) for {frames_total} frames: ranges must be"
                " non-empty, ascending, non-overlapping and within the video"
            )
        previous_stop = stop
    return checked


def _check_subdir(subdir: str) -> None:
    parts = Path(subdir).parts
    if Path(subdir).is_absolute() or ".." in parts:
        raise ValueError(f"subdir must be relative and inside the inbox, got {subdir!r}")
