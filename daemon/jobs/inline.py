"""An in-process executor for unit tests: shards run as plain function calls, no subprocesses.

``compute(task, progress)`` computes a shard; it may be a coroutine function (to model a shard that
hangs: the timeout cancels it) and it may raise the port's errors itself (``WorkerDied`` models a
shard that kills its worker). Everything else it raises becomes ``ShardFailed``, as a real worker's
exception would.

``capacity`` slots stand for workers, each remembering where its last shard ended as a local worker's
open capture does (``resume_points``); ``run`` takes the slot a task continues, and ``fresh`` lists
the tasks that continued none (where a local worker would open and seek).
"""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Awaitable, Callable

from ..core.shard import ShardResult, ShardTask
from ..core.video import VideoError, follows
from .executor import (
    ExecutorError,
    ExecutorUnavailable,
    FailureKind,
    Position,
    Progress,
    ShardFailed,
    ShardTimedOut,
    WorkerInfo,
    worker_for,
)

UNAVAILABLE = "the in-process executor is marked unavailable"
Compute = Callable[[ShardTask, Progress], ShardResult | Awaitable[ShardResult]]


class InlineExecutor:
    def __init__(self, compute: Compute, capacity: int = 2, providers: dict[str, str] | None = None):
        self.compute = compute
        self._capacity = capacity
        self.providers = providers or {"detector": "CPUExecutionProvider"}
        self.started = 0
        self.closed = False
        self.available = asyncio.Event()
        self.available.set()
        self.runs: list[ShardTask] = []  # every task run, in order (tests inspect it)
        self.concurrent = 0
        self.max_concurrent = 0
        self._done = 0
        self._idle: list[int] = list(range(capacity))  # free slots, longest idle first
        self._position: dict[int, Position] = {}  # slot -> where its last shard ended
        self.fresh: list[ShardTask] = []  # tasks that started a reading (a local worker would seek)

    @property
    def capacity(self) -> int:
        return self._capacity

    async def start(self) -> dict[str, str]:
        self.started += 1
        return dict(self.providers)

    async def run(self, task: ShardTask, *, timeout: float | None = None,
                  progress: Progress | None = None) -> ShardResult:
        if not self.available.is_set():
            raise ExecutorUnavailable(UNAVAILABLE)
        self.runs.append(task)
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        slot = self._take_slot(task)
        try:
            result = await asyncio.wait_for(self._call(task, progress or (lambda n: None)), timeout)
        except TimeoutError:
            raise ShardTimedOut(f"{task.label or 'shard'} ran longer than {timeout:g} s", "inline") from None
        finally:
            self.concurrent -= 1
            if slot is not None:
                self._idle.append(slot)
        if slot is not None:
            self._position[slot] = (task.video, task.stop)
        return result

    def resume_points(self) -> list[Position]:
        return [self._position[slot] for slot in self._idle if slot in self._position]

    def _take_slot(self, task: ShardTask) -> int | None:
        """The free slot whose last shard this task continues, else one with none, else the first."""
        if not self._idle:
            return None  # more runs than slots (a test driving the executor directly)
        slot = worker_for(task, self._idle, self._position.get)
        if not follows(self._position.get(slot), task.video, task.start):
            self.fresh.append(task)
        self._idle.remove(slot)
        self._position.pop(slot, None)
        return slot

    async def _call(self, task: ShardTask, progress: Progress) -> ShardResult:
        try:
            result = self.compute(task, progress)
            if inspect.isawaitable(result):
                result = await result
        except (ExecutorError, asyncio.CancelledError):
            raise
        except Exception as exc:
            kind = FailureKind.INPUT if isinstance(exc, VideoError) else FailureKind.INTERNAL
            raise ShardFailed(str(exc) if kind is FailureKind.INPUT else f"{type(exc).__name__}: {exc}",
                              kind, traceback.format_exc(), "inline") from exc
        self._done += 1
        return result

    async def wait_available(self) -> None:
        await self.available.wait()

    def unavailable(self) -> str | None:
        return None if self.available.is_set() else UNAVAILABLE

    def workers(self) -> list[WorkerInfo]:
        return [WorkerInfo("inline", self.providers.get("detector", "?"), 1, self._done, self.concurrent > 0)]

    async def close(self, *, kill: bool = False) -> None:
        self.closed = True
