"""The runner's background tasks, and how they end.

Two kinds: *work* (a shard, a result being written) is drained on stop, so what is running can be
committed; a *wait* (for the executor to come back) is cancelled on stop. A task's exception that
nobody handled is logged with its traceback and handed to the task's ``failed`` callback (the runner
fails the task's job with it: no exception strands a job). ``pause`` is a retry period that ``stop``
cuts short.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("aud.runner")

Failed = Callable[[Exception], Awaitable[None]]


class Dropped(Exception):
    """The work in hand is no longer wanted: the runner stops, or its job ended meanwhile."""


class Tasks:
    def __init__(self, ended: Callable[[], None] = lambda: None):
        self.ended = ended  # called as each task ends (the runner wakes up)
        self.stopping = asyncio.Event()
        self._work: set[asyncio.Task] = set()
        self._waits: set[asyncio.Task] = set()

    @property
    def busy(self) -> bool:
        return bool(self._work or self._waits)

    def spawn(self, work: Awaitable[None], failed: Failed | None = None, wait: bool = False) -> None:
        task = asyncio.create_task(self._guarded(work, failed))
        (self._waits if wait else self._work).add(task)
        task.add_done_callback(self._ended)

    async def _guarded(self, work: Awaitable[None], failed: Failed | None) -> None:
        try:
            await work
        except Dropped:
            pass
        except Exception as exc:
            log.error("internal error in the runner", exc_info=exc)
            if failed is not None:
                await failed(exc)

    def _ended(self, task: asyncio.Task) -> None:
        self._work.discard(task)
        self._waits.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal error in the runner", exc_info=task.exception())
        self.ended()

    def stop(self) -> None:
        self.stopping.set()

    async def pause(self, seconds: float) -> bool:
        """A retry period (not a wait for an event), cut short by ``stop()``; False when stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def drain(self, timeout: float) -> bool:
        """Cancel the waits; let the work finish within ``timeout``, then cancel it. False when some
        work was still running."""
        for wait in list(self._waits):
            wait.cancel()
        await asyncio.gather(*self._waits, return_exceptions=True)
        if not self._work:
            return True
        _, still = await asyncio.wait(set(self._work), timeout=timeout)
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)
        return not still
