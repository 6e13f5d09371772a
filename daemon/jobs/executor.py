"""The executor port: how the runner gets shards computed, wherever they run.

An executor runs ``ShardTask``s on its workers and returns each ``ShardResult`` by value. It reports,
per shard, the ways a shard can end other than with a result:

* ``WorkerDied``: the worker running this shard died (crash, kill, out of memory). Only this shard is
  blamed; the others in flight are not.
* ``ShardTimedOut``: the shard ran past its time limit; its worker was replaced.
* ``ShardFailed``: the shard's own code raised (a video that does not decode, a bug): retrying will
  not help. ``kind`` separates bad input (``INPUT``) from an internal error (``INTERNAL``, logged
  with its traceback).
* ``ExecutorUnavailable``: the executor cannot run anything now (a cluster's scheduler is gone, no
  local worker can load its models); the shard was not run and is not to blame. ``wait_available``
  returns when it can run shards again.

Implementations: ``local.ProcessExecutor`` (the default: a pool of spawned processes, whose worker
program is ``local_worker``), ``inline.InlineExecutor`` (in-process, for unit tests),
``dask_executor.DaskExecutor`` (a Dask cluster, whose worker side is ``dask_worker``); ``factory``
picks one from the settings. This module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

from ..core.shard import ShardResult, ShardTask
from ..core.video import follows

Progress = Callable[[int], None]  # frames of the shard finished so far
Position = tuple[str, int]  # (video, next frame) where a worker's open capture stands
W = TypeVar("W")


class ExecutorError(Exception):
    """A shard ended without a result for a reason outside the shard's own code."""


class WorkerDied(ExecutorError):
    def __init__(self, message: str, worker: str = "?"):
        super().__init__(message)
        self.worker = worker


class ShardTimedOut(ExecutorError):
    def __init__(self, message: str, worker: str = "?"):
        super().__init__(message)
        self.worker = worker


class ExecutorUnavailable(ExecutorError):
    """Nothing can run now (e.g. the cluster's scheduler is unreachable); not the shard's fault."""


class FailureKind(StrEnum):
    INPUT = "input"  # the video: cannot be opened, decoded, read (the user's file)
    INTERNAL = "internal"  # anything else: a bug or an environment problem


class ShardFailed(Exception):
    """The shard's own code raised; ``traceback`` holds the worker's traceback text."""

    def __init__(self, message: str, kind: FailureKind, traceback: str = "", worker: str = "?"):
        super().__init__(message)
        self.kind = kind
        self.traceback = traceback
        self.worker = worker


@dataclass(frozen=True)
class Backoff:
    """How long to wait between attempts at something that should come back (a scheduler, a worker
    that could not load its models): ``first`` seconds, times ``factor`` after each failure, at most
    ``cap``; attempts never stop (an unattended daemon waits for the operator to fix the cause)."""

    first: float
    cap: float
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay
            delay = min(delay * self.factor, self.cap)


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as ``aud status`` shows it."""

    name: str  # host:pid, or a cluster worker's address
    provider: str  # the execution provider its sessions run on
    threads: int
    tasks_done: int = 0
    busy: bool = False
    memory_mb: float | None = None  # resident memory, where the executor can tell
    extra: dict[str, str] = field(default_factory=dict)


class Executor(Protocol):
    @property
    def capacity(self) -> int:
        """How many shards may run at once."""

    async def start(self) -> dict[str, str]:
        """Start the workers and load their models; returns the providers by role. Raises the
        model or provider error that stops every worker from loading."""

    async def run(self, task: ShardTask, *, timeout: float | None = None,
                  progress: Progress | None = None) -> ShardResult:
        """Run one shard; raises WorkerDied, ShardTimedOut, ShardFailed or ExecutorUnavailable."""

    def resume_points(self) -> list[Position]:
        """(video, frame) for each idle worker whose open capture stands there: a shard of that video
        starting at that frame (or a few frames on, ``video.follows``) runs on that worker without a
        seek, if ``run`` is called with it next. Empty where workers keep no capture (Dask)."""

    async def wait_available(self) -> None:
        """Return once shards can run (at once, when they can)."""

    def unavailable(self) -> str | None:
        """Why no shard can run now (e.g. no worker process can start), or None: status shows it even
        while no job is running. An executor that only learns it when a shard comes back
        ``ExecutorUnavailable`` (Dask) returns None."""

    def workers(self) -> list[WorkerInfo]:
        """The workers now, for status."""

    async def close(self, *, kill: bool = False) -> None:
        """Stop the workers: let a running shard finish, or with ``kill`` end it now."""


def worker_for(task: ShardTask, idle: Sequence[W], position: Callable[[W], Position | None]) -> W:
    """Of the idle workers (longest idle first), the one to run ``task``: the one whose open capture it
    continues, else one with no capture (the others keep theirs for the shards that continue them),
    else the longest idle."""
    return min(idle, key=lambda w: (not follows(position(w), task.video, task.start), position(w) is not None))
