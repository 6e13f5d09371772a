"""The Dask executor: every shard is a task on a Dask cluster; the daemon is one of its clients.

Two halves, one for each side of the wire (a worker imports this module to unpickle the plugin and the
task function, so aud must be installed on every worker):

* On each Dask worker, ``ModelsPlugin`` loads the model set once (``worker.prepare_process``: the same
  loading and signature checks as the local pool), after checking that the worker's model files have
  the daemon's sha256; ``aud_shard`` runs one shard on it. A worker finds the models at ``$AUD_MODELS``
  if set, else at the daemon's models path through ``path_map``, and the video at its path through
  ``path_map`` (``pathmap.PathMap``). Each worker chooses its own execution provider
  (``options.provider`` "auto": CoreML on a Mac, CUDA on a GPU box) and reports it.
* In the daemon, ``DaskExecutor`` implements the executor port (``executor.Executor``) with an
  asynchronous ``distributed.Client`` on the daemon's running event loop.

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
  reconnects (a new client after the old one gives up, with backoff up to ``BACKOFF_MAX`` seconds,
  each attempt logged, for as long as it takes), registers the plugin with the new scheduler and
  returns once a worker has loaded it. ``dask worker`` processes exit when their scheduler goes away:
  run them under a supervisor that restarts them (docs/scale-out.md).

Progress: the worker logs a Dask event (``PROGRESS_TOPIC``) after the first batch of a shard and then at
most every ``PROGRESS_INTERVAL`` seconds; the executor forwards it to the shard's ``progress``. A shard
rescheduled after a worker died restarts its count.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import queue
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import dask
import platformdirs
from distributed import Client, Future, KilledWorker, WorkerPlugin, get_worker
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError

from ..core.models import ModelError, load_model_set
from ..core.pipeline import Pipeline, PipelineOptions, roles_for
from ..core.shard import ShardResult, ShardTask, run_shard
from ..core.video import VideoError
from ..core.worker import prepare_process
from .executor import (
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

PLUGIN_NAME = "aud"  # one model set per worker: registering again replaces the previous one
METRIC = "aud"  # the plugin's state, sent with every worker heartbeat (``Worker.metrics``)
PROGRESS_TOPIC = "aud-progress"
PROGRESS_INTERVAL = 0.5  # seconds between a shard's progress events after the first
BACKOFF_START, BACKOFF_MAX = 0.5, 15.0  # seconds between reconnection attempts
_DISCONNECTED = (OSError, CommClosedError)  # CommClosedError is an OSError today; named for clarity


class SchedulerUnreachable(ExecutorUnavailable):
    """The scheduler at ``address`` did not answer; ``aud run`` exits non-zero with this message."""

    def __init__(self, address: str, error: BaseException):
        super().__init__(f"cannot reach the Dask scheduler at {address}: {error}")
        self.address = address


class NoWorkers(ExecutorUnavailable):
    """The scheduler answered but no worker joined it in time."""


# --- the worker's side ---------------------------------------------------------------------------


class RemoteShardError(Exception):
    """What ``aud_shard`` raises on the worker for a shard that failed; everything lives in ``args``
    so that it pickles back to the daemon, where it becomes ``ShardFailed``."""

    def __init__(self, message: str, kind: str, traceback_text: str, worker: str):
        super().__init__(message, kind, traceback_text, worker)

    def __str__(self) -> str:
        return self.args[0]


class PluginMissing(Exception):
    """The worker has no aud model set (it joined a scheduler the plugin was not registered with)."""


def worker_options(options: PipelineOptions, path_map: PathMap, nthreads: int) -> PipelineOptions:
    """The daemon's options as they apply on this worker: its models directory, its own CoreML cache,
    one thread per pipeline (``nthreads`` pipelines share the worker's cores)."""
    models = os.environ.get("AUD_MODELS") or path_map.locate(str(options.models_dir)) or str(options.models_dir)
    return replace(options, models_dir=Path(models).expanduser(), workers=max(1, nthreads), threads=1,
                   cache_dir=Path(platformdirs.user_cache_dir("aud")) / "coreml")


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 << 20  # where glibc's own dynamic threshold stops rising on 64-bit systems


def keep_frame_buffers_on_heap() -> bool:
    """Undo a side effect of Dask's nanny on glibc: it starts workers with ``MALLOC_TRIM_THRESHOLD_``
    set (``distributed.nanny.pre-spawn-environ``), and setting it freezes glibc's mmap threshold at
    128 KiB, so every frame-sized buffer (crops, tensors) is mmapped and page-faulted afresh (slower
    shards: docs/scale-out.md). The thresholds are set where glibc's dynamic ones would settle
    (mmap above 32 MiB, trim above twice that), as in a local worker. True when set; False where
    there is nothing to undo (the variable is unset, or not glibc: macOS)."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_set = mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD) == 1
    return mmap_set and trim_set


def check_hashes(options: PipelineOptions, expected: Mapping[str, str]) -> None:
    """ModelError unless this worker's model files are the daemon's (same sha256 per role)."""
    found = load_model_set(options.models_dir, roles_for(options.au45), signatures=False)
    for role, digest in expected.items():
        mine = found.files.get(role)
        if mine is not None and mine.sha256 != digest:
            raise ModelError(f"{mine.path} ({role}) has sha256 {mine.sha256}, the daemon's file has "
                             f"{digest}: every worker needs the daemon's model files")


class ModelsPlugin(WorkerPlugin):
    """A worker's model set: loaded once at ``setup``, one pipeline per concurrently running shard.

    A worker whose models do not load closes itself (with the reason in its log) rather than fail
    every shard it would be given; at registration the daemon gets the error."""

    name = PLUGIN_NAME

    def __init__(self, options: PipelineOptions, path_map: PathMap, model_hashes: Mapping[str, str]):
        self.options = options  # the daemon's
        self.path_map = path_map
        self.model_hashes = dict(model_hashes)
        self.local_options: PipelineOptions | None = None  # this worker's, once set up
        self.address = "?"
        self.providers: dict[str, str] = {}
        self.error = ""
        self.tasks_done = 0
        self.running = 0
        self._idle: queue.SimpleQueue[Pipeline] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closing: asyncio.Task | None = None

    def __reduce__(self):  # only the configuration travels to the workers
        return type(self), (self.options, self.path_map, self.model_hashes)

    async def setup(self, worker) -> None:
        self.address = worker.address
        worker.metrics[METRIC] = self.report
        try:
            self.local_options = worker_options(self.options, self.path_map, worker.state.nthreads)
            await asyncio.to_thread(self._load)
        except Exception as exc:  # noqa: BLE001 - whatever stops the models loading closes the worker
            self.error = f"worker {self.address}: the aud models did not load: {exc}"
            log.error("%s; closing this worker", self.error)
            self._closing = asyncio.create_task(worker.close(reason=f"aud: {self.error}"))
            raise ModelError(self.error) from None

    def _load(self) -> None:
        assert self.local_options is not None
        check_hashes(self.local_options, self.model_hashes)
        keep_frame_buffers_on_heap()
        pipeline = prepare_process(self.local_options)
        self.providers = dict(pipeline.providers)
        self._idle.put(pipeline)
        log.info("worker %s: aud models loaded from %s, providers %s", self.address,
                 self.local_options.models_dir, self.providers)

    def teardown(self, worker) -> None:
        worker.metrics.pop(METRIC, None)
        while not self._idle.empty():
            self._idle.get_nowait()

    def report(self, worker=None) -> dict[str, Any]:
        """The state the daemon shows in ``aud status`` (msgpack-able: it rides on heartbeats)."""
        return {"pid": os.getpid(), "providers": dict(self.providers), "tasks_done": self.tasks_done,
                "running": self.running, "error": self.error}

    @contextmanager
    def pipeline(self) -> Iterator[Pipeline]:
        """An idle pipeline of this worker (a new one when all are busy: a worker with nthreads > 1)."""
        assert self.local_options is not None
        try:
            pipeline = self._idle.get_nowait()
        except queue.Empty:
            pipeline = Pipeline(self.local_options)
        with self._lock:
            self.running += 1
        try:
            yield pipeline
        finally:
            with self._lock:
                self.running -= 1
            self._idle.put(pipeline)

    def finished(self) -> None:
        with self._lock:
            self.tasks_done += 1


def _plugin_of(worker) -> ModelsPlugin:
    plugin = worker.plugins.get(PLUGIN_NAME)
    if not isinstance(plugin, ModelsPlugin) or plugin.local_options is None or plugin.error:
        raise PluginMissing(f"worker {worker.address} has no aud model set loaded")
    return plugin


class _ProgressEvents:
    """``progress(done)`` for a shard on a worker: a Dask event now and then."""

    def __init__(self, worker, key: str):
        self.worker, self.key, self.last = worker, key, -PROGRESS_INTERVAL

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL:
            self.last = now
            self.worker.log_event(PROGRESS_TOPIC, {"key": self.key, "done": done,
                                                   "worker": self.worker.address, "pid": os.getpid()})


def aud_shard(task: ShardTask) -> tuple[str, ShardResult]:
    """The Dask task: one shard on this worker's pipeline; returns (worker address, result)."""
    worker = get_worker()
    plugin, address = _plugin_of(worker), worker.address
    path = plugin.path_map.locate(task.video)
    if path is None:
        tried = " or ".join(plugin.path_map.candidates(task.video))
        raise RemoteShardError(f"worker {address} cannot open the video: no such file there: {tried}",
                               FailureKind.INPUT, "", address)
    with plugin.pipeline() as pipeline:
        try:
            key = str(worker.get_current_task())
            result = run_shard(pipeline, replace(task, video=path), _ProgressEvents(worker, key))
        except VideoError as exc:
            raise RemoteShardError(f"worker {address}: {exc}", FailureKind.INPUT, traceback.format_exc(),
                                   address) from None
        except Exception as exc:  # noqa: BLE001 - a bug or an environment problem: INTERNAL, with traceback
            raise RemoteShardError(f"worker {address}: {type(exc).__name__}: {exc}", FailureKind.INTERNAL,
                                   traceback.format_exc(), address) from None
    plugin.finished()
    return address, result


def worker_state() -> tuple[str, dict[str, Any]]:
    """The Dask task ``start`` and ``wait_available`` run: (address, plugin state) of some worker."""
    worker = get_worker()
    return worker.address, _plugin_of(worker).report()


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
        await self._log_cluster_settings(self._client)
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
            await self._register(client)
        client.subscribe_topic(PROGRESS_TOPIC, self._on_progress)
        self._ready = (client.id, scheduler_id)

    async def _register(self, client: Client, attempts: int = 3) -> None:
        """Register the plugin: every worker loads the models. A worker leaving during the broadcast
        fails it with a connection error: register again (bounded). A worker whose models do not
        load fails it with that error: unregister (or every worker joining later would load the
        plugin and fail) and raise it."""
        assert self._plugin is not None
        for attempt in range(1, attempts + 1):
            try:
                await client.register_plugin(self._plugin, name=PLUGIN_NAME)
                return
            except _DISCONNECTED as exc:
                if attempt == attempts or client.status != "running":
                    raise
                log.info("a worker left while the models were being loaded (%s); registering again", exc)
            except Exception:
                await self._unregister(client)
                raise

    async def _unregister(self, client: Client) -> None:
        try:
            await client.unregister_worker_plugin(PLUGIN_NAME)
        except Exception as exc:  # noqa: BLE001 - workers closing themselves may not answer
            log.info("unregistering the aud plugin: %s", exc)

    async def _log_cluster_settings(self, client: Client) -> None:
        try:
            allowed = await client.run_on_scheduler(dask.config.get, "distributed.scheduler.allowed-failures")
        except Exception as exc:  # noqa: BLE001 - a scheduler may block run_function; information only
            log.info("could not read the scheduler's allowed-failures: %s", exc)
            return
        log.info("the scheduler reschedules a shard whose worker died up to %s time(s), then reports it", allowed)

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

    async def wait_available(self) -> None:
        delay, attempt = BACKOFF_START, 0
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
            log.warning("Dask scheduler %s unavailable (%s); attempt %d, next in %.1f s",
                        self.scheduler, reason, attempt, delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, BACKOFF_MAX)

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
