"""Durable job store: one SQLite file, WAL journal, ``synchronous=FULL``.

Every public method that changes state commits (and fsyncs) before it returns, so the caller
only ever acts on transitions that will survive ``kill -9``. On restart, :meth:`JobStore.recover`
puts interrupted jobs back in the queue; shards already marked done stay done.

The daemon uses one store from its event-loop thread and, occasionally, from worker threads
(``asyncio.to_thread``); a single connection guarded by a lock serialises all access.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
SHARD_STATES = ("pending", "done")
SCHEMA_VERSION = 1

_SCHEMA = (
    """
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint  TEXT    NOT NULL UNIQUE,
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
    finished_at  REAL
)""",
    "CREATE INDEX jobs_by_state ON jobs (state)",
    """
CREATE TABLE shards (
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    start       INTEGER NOT NULL CHECK (start >= 0),
    stop        INTEGER NOT NULL CHECK (stop > start),
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'done')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    result_path TEXT,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID""",
)

_JOB_COLUMNS = (
    "id, fingerprint, source, subdir, name, state, reason, frames_total, info_json, csv_path, "
    "created_at, updated_at, started_at, finished_at"
)
_SHARD_COLUMNS = "job_id, idx, start, stop, state, attempts, result_path"


class StoreError(RuntimeError):
    """The job store file cannot be used: corrupted, locked by another process, unreadable."""


@dataclass(frozen=True)
class Job:
    id: int
    fingerprint: str
    source: str
    subdir: str
    name: str
    state: str
    reason: str | None
    frames_total: int | None
    info_json: str | None
    csv_path: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class Shard:
    job_id: int
    index: int
    start: int
    stop: int
    state: str
    attempts: int
    result_path: str | None


class JobStore:
    """Jobs and their frame shards, persisted in one SQLite file."""

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._open()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    # -- lifecycle ---------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """Connect, configure durability, check integrity, create or verify the schema."""
        if self.path.is_dir():
            raise StoreError(f"job store {self.path} is a directory, not a database file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"job store {self.path}: cannot create its folder ({exc})") from exc
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            _configure(conn, self.path)
            _check_integrity(conn, self.path)
            _migrate(conn, self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close the connection (a clean close also checkpoints the WAL). Safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- jobs --------------------------------------------------------------------------------

    def add_job(self, fingerprint: str, source: Path, subdir: str, name: str) -> tuple[Job, bool]:
        """Register a video; an already known fingerprint returns that job and ``False``."""
        _check_subdir(subdir)
        now = time.time()
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO jobs (fingerprint, source, subdir, name, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'queued', ?, ?) ON CONFLICT (fingerprint) DO NOTHING",
                (fingerprint, os.fspath(Path(source).absolute()), subdir, name, now, now),
            )
            job = _find(conn, fingerprint)
        assert job is not None
        return job, cur.rowcount == 1

    def get(self, job_id: int) -> Job | None:
        """The job with this id, or None."""
        with self._read() as conn:
            return _get(conn, job_id)

    def find(self, fingerprint: str) -> Job | None:
        """The job for this content fingerprint, or None."""
        with self._read() as conn:
            return _find(conn, fingerprint)

    def jobs(self, states: Iterable[str] | None = None) -> list[Job]:
        """All jobs, or those in ``states``, ordered by id."""
        with self._read() as conn:
            if states is None:
                rows = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY id").fetchall()
            else:
                wanted = _check_states(states)
                marks = ", ".join("?" * len(wanted))
                rows = conn.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY id",
                    wanted,
                ).fetchall()
        return [Job(*row) for row in rows]

    def recent_failures(self, limit: int = 10) -> list[Job]:
        """Failed jobs, most recently failed first."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'failed'"
                " ORDER BY finished_at DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [Job(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs per state; every state is present."""
        with self._read() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(JOB_STATES, 0)
        counts.update(rows)
        return counts

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
        with self._read() as conn:
            return _shards(conn, job_id)

    def pending_shards(self, job_id: int) -> list[Shard]:
        """Shards of a job still to be computed, by index."""
        with self._read() as conn:
            return _shards(conn, job_id, only_pending=True)

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

    def shard_done(self, job_id: int, index: int, result_path: str) -> None:
        """Mark a shard of a running job done; repeating it with the same result is a no-op."""
        with self._write() as conn:
            job = _require(conn, job_id)
            _require_state(job, ("running",), f"complete shard {index} of")
            shard = _require_shard(conn, job, index)
            if shard.state == "done":
                if shard.result_path == result_path:
                    return
                raise ValueError(
                    f"shard {index} of job {job_id} is already done with result"
                    f" {shard.result_path!r}, not {result_path!r}"
                )
            conn.execute(
                "UPDATE shards SET state = 'done', result_path = ? WHERE job_id = ? AND idx = ?",
                (result_path, job_id, index),
            )
            _touch(conn, job_id)

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

    def finish(self, job_id: int, csv_path: str) -> Job:
        """running -> done; every shard must be done."""
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
                " updated_at = ? WHERE id = ?",
                (csv_path, now, now, job_id),
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

    # -- connection plumbing -----------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Locked access for single-statement reads (autocommit: each is consistent)."""
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Locked ``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc) from exc
                raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"job store {self.path} is closed")
        return self._conn

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """Turn an sqlite error into a StoreError that names the file and the problem."""
        text = str(exc)
        lowered = text.lower()
        if "locked" in lowered or "busy" in lowered:
            what = (
                f"is locked by another process (waited {self.timeout:g}s); is another aud"
                " daemon running?"
            )
        elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
            what = f"is corrupted ({text}); move it aside to start with an empty job store"
        else:
            what = f"cannot be used: {text}"
        return StoreError(f"job store {self.path} {what}")


# -- opening -----------------------------------------------------------------------------------


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    """WAL journal, fsync on every commit, foreign keys enforced."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"job store {path} cannot use a WAL journal (journal_mode is {mode})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check``; raise StoreError listing the first problems."""
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        detail = "; ".join(problems)
        raise StoreError(
            f"job store {path} is corrupted (integrity check failed: {detail});"
            " move it aside to start with an empty job store"
        )


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
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"job store {path} has schema version {version}, newer than this aud"
                f" ({SCHEMA_VERSION}); upgrade aud"
            )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


# -- queries (caller holds the lock) ---------------------------------------------------------


def _get(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else Job(*row)


def _find(conn: sqlite3.Connection, fingerprint: str) -> Job | None:
    row = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE fingerprint = ?", (fingerprint,)
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
