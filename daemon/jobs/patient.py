"""The job store as the runner calls it: off the event loop, and patient with a store that cannot commit.

Each call goes through ``offload`` (a thread; inline in tests, so calls end in the order they start).
A ``StoreError`` (a full or failing state disk) does not end the job: the job (or, for calls outside
any job, the runner) waits with the reason shown in ``status`` and tries again after the pause
``Waits.store`` gives, until that says no more (``aud extract``) or the runner stops; a job that ended
meanwhile drops the call (``Dropped``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .active import ActiveJob
from .retry import Waits
from .store import StoreError
from .tasks import Dropped, Tasks

log = logging.getLogger("aud.runner")

Offload = Callable[..., Awaitable[Any]]  # offload(fn, *args): fn(*args) off the event loop


async def inline(fn: Callable[..., Any], /, *args: Any) -> Any:
    """An ``Offload`` that runs the call where it is (tests: store calls end in the order they start)."""
    return fn(*args)


class PatientStore:
    def __init__(self, waits: Waits, tasks: Tasks, wanted: Callable[[ActiveJob], bool],
                 offload: Offload = asyncio.to_thread):
        self.waits = waits
        self.tasks = tasks
        self.wanted = wanted  # the job is still running (else a waiting call is dropped)
        self.offload = offload
        self.waiting: str | None = None  # why the runner cannot go on (a call outside any job waits)

    async def __call__(self, active: ActiveJob | None, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` off the loop, for ``active``'s sake (None: the runner's); ``what`` the
        call does, in words for the reason shown while it waits."""
        tries = 0
        while True:
            try:
                result = await self.offload(call, *args)
            except StoreError as exc:
                if self.tasks.stopping.is_set():  # left to the next start, as the store has it
                    raise Dropped(what) from exc
                tries += 1
                pause = self.waits.store(tries)
                if pause is None:
                    raise
                self.note(active, f"the job store cannot {what}: {exc}", pause)
            else:
                if tries:
                    self.note(active, None)
                return result
            if not await self.tasks.pause(pause) or (active is not None and not self.wanted(active)):
                raise Dropped(what)

    def note(self, active: ActiveJob | None, reason: str | None, pause: float = 0.0) -> None:
        """Why ``active`` (None: the runner) waits now, or None: it goes on."""
        if reason is not None and reason != (self.waiting if active is None else active.waiting):
            log.warning("%s%s; trying again every %g s", f"job {active.job.id} ({active.job.name}): " if active else "",
                        reason, pause)
        if active is None:
            self.waiting = reason
        else:
            active.waiting = reason
