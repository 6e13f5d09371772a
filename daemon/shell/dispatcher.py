"""Running shard tasks on a ``concurrent.futures.Executor`` from asyncio, surviving worker crashes.

The dispatcher depends only on the Executor interface (plus a factory to make a new one), so a
distributed executor could replace the process pool. When the pool breaks (a worker died), it is
replaced once; every shard that was in flight is retried alone, so the shard that really kills its
worker is found: a shard that breaks the pool while running alone raises ``WorkerCrashed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

log = logging.getLogger("aud.dispatcher")


class WorkerCrashed(RuntimeError):
    """The worker running this task died (crash, kill, out of memory)."""


class Slots:
    """``capacity`` units; a normal task takes one, an exclusive task takes all of them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._changed = asyncio.Condition()

    async def acquire(self, units: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + units <= self.capacity)
            self.used += units

    async def release(self, units: int) -> None:
        async with self._changed:
            self.used -= units
            self._changed.notify_all()

    @property
    def free(self) -> int:
        return self.capacity - self.used


class Dispatcher:
    def __init__(self, make_executor: Callable[[], Executor], workers: int,
                 on_restart: Callable[[str], None] = lambda reason: None):
        self._make_executor = make_executor
        self._on_restart = on_restart
        self.workers = workers
        self.slots = Slots(workers)
        self.executor: Executor = make_executor()
        self.generation = 0
        self.restarts = 0
        self._in_flight: dict[int, set[int]] = {}  # generation -> ids of tasks running in it
        self._broken: dict[int, frozenset[int]] = {}  # generation -> tasks in flight when it broke

    async def call(self, fn: Callable[..., Any], *args: Any, exclusive: bool = False) -> Any:
        """Run ``fn(*args)`` on the executor; a task whose worker died is retried alone until it
        either succeeds or breaks the pool by itself (``WorkerCrashed``)."""
        alone = exclusive
        while True:
            units = self.workers if alone else 1
            await self.slots.acquire(units)
            try:
                return await self._submit(fn, args)
            except _PoolBroke as broke:
                if broke.alone:
                    raise WorkerCrashed(str(broke)) from None
                alone = True  # innocent or guilty: find out by running it alone
            finally:
                await self.slots.release(units)

    async def _submit(self, fn: Callable[..., Any], args: tuple) -> Any:
        gen, token = self.generation, object()
        running = self._in_flight.setdefault(gen, set())
        running.add(id(token))
        try:
            future = self.executor.submit(fn, *args)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            suspects = self._broken.setdefault(gen, frozenset(running))
            self._replace(gen, str(exc) or "a worker process died")
            raise _PoolBroke(f"the worker process died ({exc or 'killed or crashed'})",
                             alone=suspects == {id(token)}) from None
        finally:
            running.discard(id(token))

    def _replace(self, gen: int, reason: str) -> None:
        """Replace a broken executor once per generation."""
        if gen != self.generation:
            return
        log.warning("worker pool broke (%s); starting a new one", reason)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = self._make_executor()
        self.generation += 1
        self.restarts += 1
        self._on_restart(reason)

    def shutdown(self, kill: bool = False) -> None:
        """Stop the executor; with ``kill``, end workers that are still busy instead of waiting."""
        if kill:
            terminate = getattr(self.executor, "terminate_workers", None)  # Python 3.14+
            if terminate is not None:
                terminate()
            else:
                for process in list(getattr(self.executor, "_processes", {}).values()):
                    process.terminate()
        self.executor.shutdown(wait=True, cancel_futures=True)


class _PoolBroke(Exception):
    def __init__(self, message: str, alone: bool):
        super().__init__(message)
        self.alone = alone
