"""The job store's database plumbing: one SQLite file, WAL journal, ``synchronous=FULL``, one connection.

``Database`` opens the file (refusing a directory, an empty file that would silently become a new store,
a file that fails its integrity check), hands it to ``prepare`` (the store's schema: create or migrate),
and serialises all access behind one lock: ``read`` for single statements (also ``jobs.history``), ``_write`` for one
``BEGIN IMMEDIATE`` … ``COMMIT`` transaction, rolled back on any exception. Every SQLite error reaches the
caller as ``StoreError`` naming the file and what to do. ``jobs.store.JobStore`` builds the jobs and
their shards on it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self


class StoreError(RuntimeError):
    """The job store file cannot be used: corrupted, locked by another process, unreadable."""


class Database:
    """One SQLite file behind one locked connection."""

    def __init__(self, path: Path, prepare: Callable[[sqlite3.Connection, Path], None], *,
                 timeout: float = 5.0) -> None:
        self.path = Path(path)
        self._prepare = prepare
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._open()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    # -- lifecycle ---------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """Connect, configure durability, check integrity, then ``prepare`` (create or verify the schema)."""
        if self.path.is_dir():
            raise StoreError(f"job store {self.path} is a directory, not a database file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"job store {self.path}: cannot create its folder ({exc})") from exc
        if self.path.is_file() and self.path.stat().st_size == 0:  # not taken as a new store: jobs would vanish
            raise StoreError(f"job store {self.path} is empty (0 bytes): its job history and queued jobs are "
                             f"gone (a full disk, or a failed copy?); move it aside to start a new store")
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            _configure(conn, self.path)
            _check_integrity(conn, self.path)
            self._prepare(conn, self.path)
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connection plumbing -----------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
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
                rollback(conn)
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


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
