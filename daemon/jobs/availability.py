"""Whether the executor can run shards. When a shard comes back ``ExecutorUnavailable`` (a cluster's
scheduler gone), the runner starts nothing until one wait sees the executor back; the shards that could
not run are not blamed (``retry.ShardRetry``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .. import protocol as msg
from .executor import Executor
from .tasks import Tasks

log = logging.getLogger("aud.runner")


class Availability:
    def __init__(self, executor: Executor, tasks: Tasks, publish: Callable[[msg.Event], None]):
        self.executor = executor
        self.tasks = tasks
        self.publish = publish
        self.reason: str | None = None  # why the executor cannot run shards now

    def lost(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.warning("the executor is unavailable (%s); waiting for it", reason)
            self.publish(msg.ExecutorUnavailable(reason=reason))
            self.tasks.spawn(self._back(), wait=True)

    async def _back(self) -> None:
        await self.executor.wait_available()
        log.info("the executor is available again")
        self.reason = None
        self.publish(msg.ExecutorAvailable())
