"""What the job store remembers of past jobs, for reports: jobs per state, the recent failures, the recent
jobs' rates (``jobs.estimate``) and the content already hashed for a file identity (``shell.intake``).

Read-only queries on the store's connection (``History(store)``); the jobs' transitions stay in
``jobs.store``.
"""

from __future__ import annotations

from .store import JOB_COLUMNS, JOB_STATES, Job, JobStore


class History:
    """Read-only questions about the jobs a store holds."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    def counts(self) -> dict[str, int]:
        """Number of jobs per state; every state is present."""
        with self._store.read() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = {str(state): 0 for state in JOB_STATES}
        counts.update(rows)
        return counts

    def recent_failures(self, limit: int = 10) -> list[Job]:
        """Failed jobs, most recently failed first."""
        with self._store.read() as conn:
            rows = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'failed'"
                                " ORDER BY finished_at DESC, id DESC LIMIT ?", (limit,)).fetchall()
        return [Job(*row) for row in rows]

    def recent_rates(self, limit: int) -> list[float]:
        """The measured frames per second of the last ``limit`` done jobs, most recent first."""
        with self._store.read() as conn:
            rows = conn.execute("SELECT fps FROM jobs WHERE state = 'done' AND fps > 0"
                                " ORDER BY finished_at DESC, id DESC LIMIT ?", (limit,)).fetchall()
        return [float(r[0]) for r in rows]

    def fingerprint_of(self, identity: str) -> str | None:
        """The content fingerprint recorded with this file identity (by the newest job that has it), or
        None: a file whose identity is known need not be hashed again."""
        with self._store.read() as conn:
            row = conn.execute("SELECT fingerprint FROM jobs WHERE identity = ? ORDER BY id DESC LIMIT 1",
                               (identity,)).fetchone()
        return None if row is None else str(row[0])
