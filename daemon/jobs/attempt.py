"""One run of a shard: its try counted in the job store first, then run on the executor; a failure
becomes the retry policy's decision (``retry.ShardRetry``).

Counting before running makes the try budget durable (a shard that keeps killing its worker fails its
job after ``max_tries`` runs, however often the daemon restarts between them). A run that ran nothing
is taken back: the executor was unavailable (unless the policy says that costs a try), or the runner
stopped it.
"""

from __future__ import annotations

import asyncio
import contextlib

from ..core.shard import ShardResult
from .active import ActiveJob
from .executor import Executor, Progress
from .patient import PatientStore
from .retry import Decision, ShardRetry
from .store import JobStore, StoreError


async def attempt(executor: Executor, store: JobStore, call: PatientStore, retry: ShardRetry, active: ActiveJob,
                  index: int, progress: Progress) -> ShardResult | Decision:
    """Shard ``index`` of ``active`` run once: its rows, or what to do about its failure."""
    job_id = active.job.id
    tries = await call(active, f"count a run of {active.frames(index)}", store.mark_dispatched, job_id, index)
    try:
        return await executor.run(active.task(index), timeout=retry.timeout_s, progress=progress)
    except asyncio.CancelledError:  # the runner stops: not the shard's fault
        with contextlib.suppress(StoreError):  # else it stays counted: one try less after the restart
            await call.offload(store.undo_dispatch, job_id, index)
        raise
    except Exception as exc:  # whatever the executor raised, even an error of its own, ends in a decision
        decision = retry.decide(exc, tries, active.frames(index))
    if not decision.costs_try:
        await call(active, f"take back a run of {active.frames(index)}", store.undo_dispatch, job_id, index)
    return decision
