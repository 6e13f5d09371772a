"""What a test can observe of a daemon besides its files: its job store, read-only, while it runs (or
after it died) — SQLite opened with ``mode=ro``, one short query, closed again, so the daemon's own
connection is never disturbed — and every event a subscriber got until the daemon closed the socket."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.daemonproc import Subscriber


@dataclass(frozen=True)
class ShardRow:
    job_id: int
    index: int
    start: int
    stop: int
    done: bool
    attempts: int  # how many times the shard was handed to a worker


@dataclass(frozen=True)
class JobRow:
    id: int
    name: str
    state: str
    csv_path: str | None


def _query(state_dir: Path, sql: str) -> list[tuple]:
    db = Path(state_dir) / "jobs.sqlite3"
    if not db.exists():
        return []
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)) as conn:
        return conn.execute(sql).fetchall()


def shards(state_dir: Path) -> list[ShardRow]:
    """Every job's shards, by job and index."""
    rows = _query(state_dir, "SELECT job_id, idx, start, stop, state, attempts FROM shards ORDER BY job_id, idx")
    return [ShardRow(j, i, a, b, s == "done", n) for j, i, a, b, s, n in rows]


def jobs(state_dir: Path) -> list[JobRow]:
    return [JobRow(*row) for row in _query(state_dir, "SELECT id, name, state, csv_path FROM jobs ORDER BY id")]


def committed(state_dir: Path) -> list[ShardRow]:
    """The shards whose results are committed."""
    return [s for s in shards(state_dir) if s.done]


def all_events(sub: Subscriber, timeout: float = 60.0) -> list[dict]:
    """Every event ``sub`` received until the daemon closed its socket (call it after stopping the
    daemon); AssertionError if the socket stays open for ``timeout`` seconds."""
    try:
        sub.wait_for(lambda event: False, timeout)
    except AssertionError as exc:
        if "closed the socket" not in str(exc):
            raise
    return sub.events
