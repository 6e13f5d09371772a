"""How long the jobs still take: per job from its own measured rate, or from the recent jobs' rate
before it has one; for the queue, the running jobs' frames left at their rates, then the queued jobs'.

The recent jobs' rate is the median frames per second of the last ``RECENT_JOBS`` done jobs, as the job
store keeps them (so it survives a restart). A job's own rate counts once one of its shards is committed
(its first frames' rate includes the workers' start on a new video); before that, the recent jobs' rate
stands in, or, when no job is done yet, the rate of its shards still running.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from .store import Job

RECENT_JOBS = 5


class Basis(StrEnum):
    """What an estimate rests on."""

    JOB = "job"  # this job's own measured rate
    RECENT_JOBS = "recent_jobs"  # the median rate of the last RECENT_JOBS done jobs


@dataclass(frozen=True)
class Rate:
    fps: float
    basis: Basis


def recent_rate(rates: Iterable[float]) -> float | None:
    """The median of the recent done jobs' frames per second (``JobStore.recent_rates``), or None."""
    rates = [r for r in rates if r > 0]
    return statistics.median(rates) if rates else None


def job_rate(committed: int, own_fps: float, recent_fps: float | None) -> Rate | None:
    """The rate a job's time left is estimated from: its own once it has committed frames, else the
    recent jobs' (else its running shards' own, else none)."""
    if committed > 0 and own_fps > 0:
        return Rate(own_fps, Basis.JOB)
    if recent_fps:
        return Rate(recent_fps, Basis.RECENT_JOBS)
    if own_fps > 0:
        return Rate(own_fps, Basis.JOB)
    return None


def seconds(frames: int, rate: Rate | float | None) -> float | None:
    """``frames`` at ``rate``, in seconds (one decimal), or None without a rate."""
    fps = rate.fps if isinstance(rate, Rate) else rate
    return round(max(frames, 0) / fps, 1) if fps else None


@dataclass(frozen=True)
class Running:
    """A running job as the queue's estimate sees it."""

    frames_left: int
    rate: Rate | None


@dataclass(frozen=True)
class QueueEstimate:
    eta_s: float | None  # until every running and queued job is done, of those with an estimate
    unknown: int  # jobs left out: queued jobs not probed yet (no frame count), or no rate known at all


def queue(running: Iterable[Running], queued: Iterable[Job], recent_fps: float | None) -> QueueEstimate:
    """The running jobs share the workers: together they take their frames left over the sum of their
    rates. The queued jobs then run one after the other at the recent jobs' rate; a queued job's frame
    count is known once it has been probed (it was started before), else it is counted in ``unknown``.
    With nothing running or queued the estimate is 0; with nothing estimable, None."""
    left, fps, unknown, known = 0, 0.0, 0, 0
    for job in running:
        if job.rate is None:
            unknown += 1
        else:
            left, fps, known = left + job.frames_left, fps + job.rate.fps, known + 1
    total = left / fps if fps > 0 else 0.0
    for waiting in queued:
        if waiting.frames_total is None or not recent_fps:
            unknown += 1
        else:
            total, known = total + waiting.frames_total / recent_fps, known + 1
    return QueueEstimate(None if unknown and not known else round(total, 1), unknown)
