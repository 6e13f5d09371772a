"""The runner's retry rules as data: what becomes of a shard that ended without a result, and how long a
finished job waits for somewhere to put it.

``ShardRetry`` is arq's ``Function(timeout_s, max_tries)`` (arq/worker.py, ``func``): a time limit and
a try budget per shard. The try counter is durable: the job store counts each dispatch of a shard
(``JobStore.mark_dispatched``, the ``attempts`` column), so a restart does not reset the budget, and a
dispatch that ran nothing (the executor unavailable) is taken back unless the policy says it costs a
try (``JobStore.undo_dispatch``). What the executor reports (``executor.py``) decides the rest:

* ``WorkerDied`` / ``ShardTimedOut``: not the shard's fault as far as anyone can tell; run it again
  until its tries are spent, then the job fails with what happened;
* ``ShardFailed``: its own code raised; running it again gives the same answer, so the job fails at
  once (bad input with the video's reason; an internal error named as such, with its traceback);
* ``ExecutorUnavailable``: nothing ran; wait for the executor, then run it again.

``Waits`` is the rule for a job whose work is done but whose results cannot be put anywhere yet: a
destination that cannot take the files (a full, read-only or forbidding disk) and a job store that
cannot commit (a full state disk). The daemon (``retry_s`` set) waits and tries again every
``retry_s`` for as long as it takes, its reason shown in ``status``; ``aud extract`` (``retry_s``
None) fails a job whose destination cannot take it and gives the job store a few short tries.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum

from .executor import ExecutorUnavailable, FailureKind, ShardFailed, ShardTimedOut, WorkerDied

# the destination cannot take the CSV for a reason that is the filesystem's, not the job's
WAIT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class Verdict(StrEnum):
    RETRY = "retry"  # run the shard again
    WAIT = "wait"  # nothing ran: wait until the executor can run shards, then run it again
    FAIL = "fail"  # the job fails with the reason


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    costs_try: bool = True  # False: the dispatch is taken back (it ran nothing)
    traceback: str | None = None  # an internal error's, for the log


@dataclass(frozen=True)
class ShardRetry:
    """A shard's time limit and try budget."""

    max_tries: int = 3  # the first run and its retries
    timeout_s: float | None = None  # None: no limit
    unavailable_costs_try: bool = False

    @classmethod
    def of(cls, retries: int, timeout_s: float | None) -> ShardRetry:
        """From the settings' ``shard_retries`` (retries after the first run) and time limit."""
        return cls(max_tries=retries + 1, timeout_s=timeout_s)

    def decide(self, exc: Exception, tries: int, frames: str) -> Decision:
        """What to do with a shard (``frames``, e.g. "frames 5-8") that raised ``exc`` on its
        ``tries``-th dispatch, counted durably."""
        if isinstance(exc, ExecutorUnavailable):
            if self.unavailable_costs_try and tries >= self.max_tries:
                return Decision(Verdict.FAIL, f"{frames} could not run {tries} times (last: {exc})")
            return Decision(Verdict.WAIT, str(exc), costs_try=self.unavailable_costs_try)
        if isinstance(exc, (WorkerDied, ShardTimedOut)):
            what = "timed out" if isinstance(exc, ShardTimedOut) else "lost its worker"
            if tries >= self.max_tries:
                return Decision(Verdict.FAIL, f"{frames} {what} {tries} times (last: {exc})")
            return Decision(Verdict.RETRY, f"{frames} {what} on try {tries} of {self.max_tries} ({exc})")
        if isinstance(exc, ShardFailed):
            if exc.kind is FailureKind.INPUT:
                return Decision(Verdict.FAIL, str(exc))
            return Decision(Verdict.FAIL, f"internal error on {frames}: {exc}",
                            traceback=f"on {exc.worker}:\n{exc.traceback}")
        return Decision(Verdict.FAIL, f"internal error on {frames}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Waits:
    """How long a finished job waits for its destination and for the job store."""

    retry_s: float | None = None  # the daemon: try again every retry_s, for as long as it takes
    store_tries: int = 3  # without retry_s: the job store's tries before the job fails
    store_pause_s: float = 1.0  # without retry_s: the pause between them

    def destination(self, exc: OSError) -> float | None:
        """The pause before writing again, or None: the job fails."""
        return self.retry_s if exc.errno in WAIT_ERRNOS else None

    def store(self, tries: int) -> float | None:
        """After ``tries`` failed commits, the pause before the next, or None: the job fails."""
        if self.retry_s is not None:
            return self.retry_s
        return self.store_pause_s if tries < self.store_tries else None
