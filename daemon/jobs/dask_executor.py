"""The Dask executor: every shard is a task on a Dask cluster; the daemon is one of its clients.

This module is the daemon's side: ``DaskExecutor`` implements the executor port (``executor.Executor``)
with an asynchronous ``distributed.Client`` on the daemon's running event loop. What runs on each Dask
worker (the plugin that loads the models after checking their sha256 against the daemon's, the shard
task) is ``dask_worker``, which workers import to unpickle it: aud must be installed on every worker.

Threads: a Dask worker with ``--nthreads T`` runs up to T shards at once, each on its own pipeline
whose thread pools (ONNX Runtime, BLAS, OpenCV) have one thread, so the worker uses T cores, as Dask
expects. Run ``dask worker tcp://... --nworkers <cores> --nthreads 1``: one pipeline per process, the
local pool's layout.

Faults, and who retries:

* A worker that dies mid-shard: the scheduler reschedules the task on another worker up to its
  ``distributed.scheduler.allowed-failures`` times (its own config; docs/scale-out.md recommends 1),
  then the task fails with ``KilledWorker``, reported as ``WorkerDied``; the runner's ``shard_retries``
  decide what follows. Dask's per-task ``retries`` stay 0.
* A path no worker candidate exists for, or a video that does not decode: ``ShardFailed(INPUT)`` naming
  the worker and the path. Anything else the shard raises: ``ShardFailed(INTERNAL)`` with the worker's
  traceback.
* A shard past its time limit: its task is cancelled and its worker restarted through its nanny (a Dask
  task's thread cannot be stopped otherwise), ``ShardTimedOut``.
* The scheduler lost: every shard in flight raises ``ExecutorUnavailable``; ``wait_available``
  reconnects (a new client after the old one gives up, with backoff ``RECONNECT``,
  each attempt logged, for as long as it takes), registers the plugin with the new scheduler and
  returns once a worker has loaded it. ``dask worker`` processes exit when their scheduler goes away:
  run them under a supervisor that restarts them (docs/scale-out.md).

Progress: the worker logs a Dask event (``PROGRESS_TOPIC``) after the first batch of a shard and then at
most every ``dask_worker.PROGRESS_INTERVAL`` seconds; the executor forwards it to the shard's ``progress``. A shard
rescheduled after a worker died restarts its count.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Mapping
from typing import Any

import dask
from distributed import Client, Future, KilledWorker
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError

from ..core.models import load_model_set
from ..core.pipeline import PipelineOptions, roles_for
from ..core.shard import ShardResult, ShardTask
from .dask_worker import (
    METRIC,
    PLUGIN_NAME,
    PROGRESS_TOPIC,
    ModelsPlugin,
    PluginMissing,
    RemoteShardError,
    aud_shard,
    worker_state,
)
from .executor import (
    Backoff,
    ExecutorUnavailable,
    FailureKind,
    Progress,
    ShardFailed,
    ShardTimedOut,
    WorkerDied,
    WorkerInfo,
)
from .pathmap import PathMap

log = logging.getLogger("aud.dask")

RECONNECT = Backoff(first=0.5, cap=15.0)  # seconds between reconnection attempts
_DISCONNECTED = (OSError, CommClosedError)  # CommClosedError is an OSError today; named for clarity


class SchedulerUnreachable(ExecutorUnavailable):
    """The scheduler at ``address`` did not answer; ``aud run`` exits non-zero with this message."""

    def __init__(self, address: str, error: BaseException):
        super().__init__(f"cannot reach the Dask scheduler at {address}: {error}")
        self.address = address


class NoWorkers(ExecutorUnavailable):
    """The scheduler answered but no worker joined it in time."""


# --- the daemon's side ---------------------------------------------------------------------------


def model_hashes(options: PipelineOptions) -> dict[str, str]:
    """sha256 per role of the daemon's model files (the reference the workers' files must match)."""
    found = load_model_set(options.models_dir, roles_for(options.au45), signatures=False)
    return {role: f.sha256 for role, f in found.files.items() if f.sha256}


def worker_info(address: str, identity: Mapping[str, Any]) -> WorkerInfo:
    """A worker as ``aud status`` shows it, from the scheduler's identity of it and the plugin's state."""
    state = (identity.get("metrics") or {}).get(METRIC) or {}
    providers = state.get("providers") or {}
    extra = {"host": str(identity.get("host", "?")), "pid": str(state.get("pid", "?"))}
    if state.get("error"):
        extra["error"] = str(state["error"])
    return WorkerInfo(address, providers.get("detector", "loading" if not state else "?"),
                      int(identity.get("nthreads", 1)), int(state.get("tasks_done", 0)),
                      int(state.get("running", 0)) > 0, extra=extra)


async def register_plugin(client: Client, plugin: ModelsPlugin, attempts: int = 3) -> None:
    """Register the plugin: every worker loads the models. A worker leaving during the broadcast
    fails it with a connection error: register again (bounded). A worker whose models do not
    load fails it with that error: unregister (or every worker joining later would load the
    plugin and fail) and raise it."""
    for attempt in range(1, attempts + 1):
        try:
            await client.register_plugin(plugin, name=PLUGIN_NAME)
            return
        except _DISCONNECTED as exc:
            if attempt == attempts or client.status != "running":
                raise
            log.info("a worker left while the models were being loaded (%s); registering again", exc)
        except Exception:
            await unregister_plugin(client)
            raise


async def unregister_plugin(client: Client) -> None:
    """Take the plugin off the cluster (workers joining later no longer load the models)."""
    try:
        await client.unregister_worker_plugin(PLUGIN_NAME)
    except Exception as exc:  # noqa: BLE001 - workers closing themselves may not answer
        log.info("unregistering the aud plugin: %s", exc)


async def log_cluster_settings(client: Client) -> None:
    """How often the scheduler reschedules a shard whose worker died (information for the log)."""
    try:
        allowed = await client.run_on_scheduler(dask.config.get, "distributed.scheduler.allowed-failures")
    except Exception as exc:  # noqa: BLE001 - a scheduler may block run_function; information only
        log.info("could not read the scheduler's allowed-failures: %s", exc)
        return
    log.info("the scheduler reschedules a shard whose worker died up to %s time(s), then reports it", allowed)


class DaskExecutor:
    """Shards as tasks on the Dask cluster whose scheduler is at ``scheduler`` (``tcp://host:8786``)."""

    def __init__(self, scheduler: str, options: PipelineOptions, path_map: Mapping[str, str] | None = None, *,
                 connect_timeout: float = 10.0, worker_wait: float = 60.0, status_interval: float = 2.0,
                 hashes: Mapping[str, str] | None = None):
        self.scheduler = scheduler
        self.options = options
        self.path_map = PathMap.parse(path_map)
        self.connect_timeout = connect_timeout  # to connect, and for the client to reconnect by itself
        self.worker_wait = worker_wait  # how long start() waits for a first worker
        self.status_interval = status_interval  # how often workers() is refreshed
        self._hashes = dict(hashes) if hashes is not None else None  # default: the daemon's files
        self._plugin: ModelsPlugin | None = None
        self._client: Client | None = None
        self._ready: tuple[str, str] | None = None  # (client id, scheduler id) the plugin is set up for
        self._progress: dict[str, Progress] = {}
        self._in_flight: set[Future] = set()
        self._workers: list[WorkerInfo] = []
        self._refresher: asyncio.Task | None = None

    @property
    def capacity(self) -> int:
        return max(1, sum(w.threads for w in self._workers))

    @property
    def client(self) -> Client | None:
        return self._client

    async def start(self) -> dict[str, str]:
        """Connect, register the plugin, wait (``worker_wait`` s) for a worker; its providers.

        Raises ``SchedulerUnreachable`` (address and error), ``NoWorkers``, or the ``ModelError`` of a
        worker whose models did not load."""
        hashes = self._hashes if self._hashes is not None else await asyncio.to_thread(model_hashes, self.options)
        self._plugin = ModelsPlugin(self.options, self.path_map, hashes)
        self._client = await self._connect()
        try:
            address, state = await self._first_worker(self._client)
        except BaseException:
            await self.close(kill=True)  # a failed start leaves no client behind
            raise
        await log_cluster_settings(self._client)
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_forever())
        log.info("Dask scheduler %s: %d worker(s); worker %s runs on %s", self.scheduler, len(self._workers),
                 address, state["providers"])
        return dict(state["providers"])

    async def _first_worker(self, client: Client) -> tuple[str, dict[str, Any]]:
        """Register the plugin, wait for a worker; (its address, its plugin state)."""
        try:
            await self._prepare(client)
            await client.wait_for_workers(1, timeout=self.worker_wait)  # type: ignore[func-returns-value,misc]
            return await client.submit(worker_state, pure=False)
        except TimeoutError:
            raise NoWorkers(f"no Dask worker joined the scheduler at {self.scheduler} within "
                            f"{self.worker_wait:g} s: start `dask worker {self.scheduler} --nthreads 1` "
                            f"on the machines that should run shards") from None
        except (FutureCancelledError, *_DISCONNECTED) as exc:
            raise SchedulerUnreachable(self.scheduler, exc) from exc

    async def _connect(self) -> Client:
        client = None
        try:
            client = Client(self.scheduler, asynchronous=True, timeout=self.connect_timeout,
                            set_as_default=False, name="aud")
            await client
        except (OSError, ValueError, TypeError, RuntimeError) as exc:  # RuntimeError: tcp:// when TLS is required
            if client is not None:
                await client.close()
            raise SchedulerUnreachable(self.scheduler, exc) from exc
        return client

    async def _prepare(self, client: Client) -> None:
        """Register the plugin with this scheduler (once per scheduler) and subscribe to progress events
        (once per client)."""
        scheduler_id = (await client.scheduler.identity(n_workers=0))["id"]
        if self._ready == (client.id, scheduler_id):
            return
        if self._ready is None or self._ready[1] != scheduler_id:
            assert self._plugin is not None
            await register_plugin(client, self._plugin)
        client.subscribe_topic(PROGRESS_TOPIC, self._on_progress)
        self._ready = (client.id, scheduler_id)

    def _on_progress(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        callback = self._progress.get(str(message.get("key")))
        if callback is not None:
            callback(int(message["done"]))

    def _usable_client(self) -> Client:
        client = self._client
        if client is None or client.status != "running" or self._ready is None or self._ready[0] != client.id:
            raise ExecutorUnavailable(f"not connected to the Dask scheduler at {self.scheduler}")
        return client

    async def run(self, task: ShardTask, *, timeout: float | None = None,
                  progress: Progress | None = None) -> ShardResult:
        client = self._usable_client()
        label = task.label or f"frames {task.start}-{task.stop - 1} of {task.video}"
        future = client.submit(aud_shard, task, pure=False, retries=0)
        self._in_flight.add(future)
        if progress is not None:
            self._progress[str(future.key)] = progress
        try:
            _, result = await asyncio.wait_for(_result(future), timeout)
            return result
        except TimeoutError:
            worker = await self._stop_timed_out(client, future)
            raise ShardTimedOut(f"{label} ran longer than {timeout:g} s on Dask worker {worker}; the task was "
                                f"cancelled and the worker restarted", worker) from None
        except KilledWorker as exc:
            worker = getattr(exc.last_worker, "address", "?")
            raise WorkerDied(f"the Dask worker running {label} died ({exc.allowed_failures + 1} worker(s) "
                             f"died running it; the last was {worker})", worker) from None
        except RemoteShardError as exc:
            message, kind, tb, worker = exc.args
            raise ShardFailed(message, FailureKind(kind), tb, worker) from None
        except PluginMissing as exc:
            self._ready = None  # the cluster changed under us: wait_available sets it up again
            raise ExecutorUnavailable(str(exc)) from None
        except (FutureCancelledError, *_DISCONNECTED) as exc:
            self._ready = None
            raise ExecutorUnavailable(f"lost the Dask scheduler at {self.scheduler} while running {label}: "
                                      f"{exc}") from None
        except Exception as exc:  # e.g. the task could not be unpickled on the worker
            raise ShardFailed(f"{label}: {type(exc).__name__}: {exc}", FailureKind.INTERNAL,
                              traceback.format_exc(), "?") from exc
        finally:
            self._progress.pop(str(future.key), None)
            self._in_flight.discard(future)
            if not future.done():
                future.release()  # nobody wants the result: the scheduler forgets the task

    async def _stop_timed_out(self, client: Client, future: Future) -> str:
        """Cancel a task past its time limit and restart the worker running it (its thread cannot be
        stopped); the worker's address, or "?" when it was not running yet."""
        try:
            processing = await client.processing()
            worker = next((w for w, keys in processing.items() if future.key in keys), None)
            await client.cancel([future])
            if worker is not None:
                await client.restart_workers([worker], raise_for_error=False)
        except _DISCONNECTED as exc:
            log.warning("could not cancel the timed-out task %s: %s", future.key, exc)
            worker = None
        return worker or "?"

    def resume_points(self) -> list[tuple[str, int]]:
        return []  # the scheduler places tasks: no worker keeps a capture for the next shard

    def unavailable(self) -> str | None:
        return None  # a lost scheduler is learnt from a shard that comes back ExecutorUnavailable

    async def wait_available(self) -> None:
        delays, attempt = RECONNECT.delays(), 0
        while True:
            client = self._client
            try:
                if client is None or client.status in ("closing", "closed"):
                    if client is not None:
                        await client.close()
                    self._client = await self._connect()
                    log.info("connected again to the Dask scheduler at %s", self.scheduler)
                    continue
                if client.status == "running":
                    await self._prepare(client)
                    await client.submit(worker_state, pure=False)  # returns once a worker has the models
                    await self.refresh()
                    if attempt:
                        log.info("the Dask cluster at %s runs shards again", self.scheduler)
                    return
                reason = "the Dask client is reconnecting by itself"
            except (ExecutorUnavailable, FutureCancelledError, PluginMissing, *_DISCONNECTED) as exc:
                reason = str(exc)
            attempt += 1
            delay = next(delays)
            log.warning("Dask scheduler %s unavailable (%s); attempt %d, next in %.1f s",
                        self.scheduler, reason, attempt, delay)
            await asyncio.sleep(delay)

    async def refresh(self) -> None:
        """Fetch the workers' state from the scheduler (``workers`` shows the last fetched)."""
        client = self._client
        if client is None or client.status != "running":
            return
        identity = await client.scheduler.identity(n_workers=-1)
        self._workers = [worker_info(a, w) for a, w in sorted(identity["workers"].items())]
        if self._ready is not None and self._ready[1] != identity["id"]:
            self._ready = None  # a new scheduler: the plugin is not registered there

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.status_interval)
            try:
                await self.refresh()
            except (TimeoutError, *_DISCONNECTED) as exc:  # unavailable now: run() and wait_available say so
                log.debug("could not refresh the Dask workers: %s", exc)

    def workers(self) -> list[WorkerInfo]:
        return list(self._workers)

    async def close(self, *, kill: bool = False) -> None:
        """Close the client (never the cluster); ``kill`` cancels the shards in flight, else they are
        let finish first."""
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
        client, self._client, self._ready = self._client, None, None
        if client is None:
            return
        if self._in_flight and client.status == "running":
            if kill:
                await client.cancel(list(self._in_flight))
            else:
                await asyncio.gather(*(_result(f) for f in list(self._in_flight)), return_exceptions=True)
        await client.close()


async def _result(future: Future) -> Any:
    return await future
