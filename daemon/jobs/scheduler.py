"""Which shard runs next (pure, no asyncio): fair across jobs, sequential within a worker's reading.

Across jobs, ``next`` takes turns (round-robin), so several videos share the workers evenly and a long
video does not hold up short ones. Within the job whose turn it is, in this order:

1. a shard to retry (it failed on a worker that died or timed out);
2. a shard continuing where an idle worker's open capture stands (``resume``, the executor's
   ``resume_points``): that worker reads on without a seek;
3. otherwise the start of the most work nobody is reading towards: the first shard of a stretch of
   pending shards that no running shard leads into, or, when every stretch is being read from its
   front, the shard that splits the work left to that reading in half (work stealing: the worker
   reading it keeps the first half, this one takes the second).

With the plan's lanes (``plan.py``), two workers start at frame 0 and at the middle of the video and
each reads its half in order; the first to finish splits what is left of the other's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..core.video import follows, reads_on

Range = tuple[int, int]


@dataclass
class _Job:
    video: str
    pending: dict[int, Range]  # shard -> frames, not handed out
    out: dict[int, Range] = field(default_factory=dict)  # handed out, not finished
    retries: deque[int] = field(default_factory=deque)


def pick(pending: dict[int, Range], running: list[Range]) -> int:
    """Rule 3 above: the shard to start a fresh reading at, given the ``running`` shards' ranges."""
    order = sorted(pending, key=lambda i: pending[i])
    stretches: list[list[int]] = []
    for i in order:
        if stretches and reads_on(pending[stretches[-1][-1]][1], pending[i][0]):
            stretches[-1].append(i)
        else:
            stretches.append([i])
    best, best_gain = order[0], -1
    for stretch in stretches:
        first, end = pending[stretch[0]][0], pending[stretch[-1]][1]
        leading = [(a, b) for a, b in running if reads_on(b, first)]
        if leading:  # being read from its front, by a worker about halfway through its shard
            a, b = leading[0]
            middle = ((a + b) / 2 + end) / 2
            choice = min(stretch[1:] or stretch, key=lambda i: abs(pending[i][0] - middle))
            gain = end - pending[choice][0]
        else:
            choice, gain = stretch[0], end - first
        if gain > best_gain:
            best, best_gain = choice, gain
    return best


class FairScheduler:
    def __init__(self) -> None:
        self._jobs: dict[int, _Job] = {}
        self._turn = 0

    def add(self, job: int, video: str, shards: dict[int, Range]) -> None:
        entry = self._jobs.setdefault(job, _Job(video, {}))
        entry.pending.update(shards)

    def retry(self, job: int, shard: int) -> None:
        """A handed-out shard goes back, to run before the job's others."""
        entry = self._jobs.get(job)
        if entry is None or shard not in entry.out:
            return
        entry.pending[shard] = entry.out.pop(shard)
        entry.retries.appendleft(shard)

    def finished(self, job: int, shard: int) -> None:
        """A handed-out shard ended with its result."""
        entry = self._jobs.get(job)
        if entry is not None:
            entry.out.pop(shard, None)

    def remove(self, job: int) -> None:
        self._jobs.pop(job, None)

    def pending(self, job: int | None = None) -> int:
        if job is not None:
            return len(self._jobs[job].pending) if job in self._jobs else 0
        return sum(len(j.pending) for j in self._jobs.values())

    def next(self, resume: list[tuple[str, int]] | None = None) -> tuple[int, int] | None:
        """(job, shard) to run next, or None when nothing waits. A resume point that the shard
        continues is removed from ``resume`` (its worker is spoken for)."""
        jobs = [job for job, entry in self._jobs.items() if entry.pending]
        if not jobs:
            return None
        job = jobs[self._turn % len(jobs)]
        self._turn += 1
        entry = self._jobs[job]
        shard = self._choose(entry, resume if resume is not None else [])
        entry.out[shard] = entry.pending.pop(shard)
        return job, shard

    @staticmethod
    def _choose(entry: _Job, resume: list[tuple[str, int]]) -> int:
        while entry.retries:
            shard = entry.retries.popleft()
            if shard in entry.pending:
                return shard
        for point in list(resume):
            for shard, (start, _) in sorted(entry.pending.items(), key=lambda item: item[1]):
                if follows(point, entry.video, start):
                    resume.remove(point)
                    return shard
        return pick(entry.pending, list(entry.out.values()))
