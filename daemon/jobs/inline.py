"""An in-process executor for unit tests: shards run as plain function calls, no subprocesses.

``compute(task, progress)`` computes a shard; it may be a coroutine function (to model a shard that
hangs: the timeout cancels it) and it may raise the port's errors itself (``WorkerDied`` models a
shard that kills its worker). Everything else it raises becomes ``ShardFailed``, as a real worker's
exception would.
"""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Awaitable, Callable

from ..core.shard import ShardResult, ShardTask
from ..core.video import VideoError
from .executor import ExecutorError, ExecutorUnavailable, FailureKind, Progress, ShardFailed, ShardTimedOut, WorkerInfo

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

    @property
    def capacity(self) -> int:
        return self._capacity

    async def start(self) -> dict[str, str]:
        self.started += 1
        return dict(self.providers)

    async def run(self, task: ShardTask, *, timeout: float | None = None,
                  progress: Progress | None = None) -> ShardResult:
        if not self.available.is_set():
            raise ExecutorUnavailable("the in-process executor is marked unavailable")
        self.runs.append(task)
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            return await asyncio.wait_for(self._call(task, progress or (lambda n: None)), timeout)
        except TimeoutError:
            raise ShardTimedOut(f"{task.label or 'shard'} ran longer than {timeout:g} s", "inline") from None
        finally:
            self.concurrent -= 1

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

    def workers(self) -> list[WorkerInfo]:
        return [WorkerInfo("inline", self.providers.get("detector", "?"), 1, self._done, self.concurrent > 0)]

    async def close(self, *, kill: bool = False) -> None:
        self.closed = True
