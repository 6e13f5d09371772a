"""Fair slot filling across running jobs: which shard runs next (pure, no asyncio).

Each job has a queue of shard indexes; ``next`` takes the head of the next job's queue in round-robin
order, so several videos share the workers evenly and a long video does not hold up short ones. A
shard to retry goes back to the front of its job's queue.
"""

from __future__ import annotations

from collections import deque


class FairScheduler:
    def __init__(self) -> None:
        self._queues: dict[int, deque[int]] = {}
        self._turn = 0

    def add(self, job: int, shards: list[int]) -> None:
        self._queues.setdefault(job, deque()).extend(shards)

    def retry(self, job: int, shard: int) -> None:
        self._queues.setdefault(job, deque()).appendleft(shard)

    def remove(self, job: int) -> None:
        self._queues.pop(job, None)

    def pending(self, job: int | None = None) -> int:
        if job is not None:
            return len(self._queues.get(job, ()))
        return sum(len(q) for q in self._queues.values())

    def next(self) -> tuple[int, int] | None:
        """(job, shard) to run next, or None when nothing waits."""
        jobs = [job for job, queue in self._queues.items() if queue]
        if not jobs:
            return None
        job = jobs[self._turn % len(jobs)]
        self._turn += 1
        return job, self._queues[job].popleft()
