"""The Dask executor's worker side: what runs inside each Dask worker process (the plugin holding the
model set, the shard task), imported there by unpickling, so aud must be installed on every worker.

``ModelsPlugin`` loads the model set once (``core.worker.prepare_process``: the same loading and
signature checks as the local pool), after checking that the worker's model files have the daemon's
sha256; ``aud_shard`` runs one shard on it. A worker finds the models at ``$AUD_MODELS`` if set, else at
the daemon's models path through ``path_map``, and the video at its path through ``path_map``
(``pathmap.PathMap``). Each worker chooses its own execution provider (``options.provider`` "auto":
CoreML on a Mac, CUDA on a GPU box) and reports it. Progress: a Dask event (``PROGRESS_TOPIC``) after
the first batch of a shard and then at most every ``PROGRESS_INTERVAL`` seconds.

This module imports the core, the executor port's failure kinds and ``pathmap`` only: nothing of the
daemon's side (``dask_executor``).
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

import platformdirs
from distributed import WorkerPlugin, get_worker

from ..core.models import ModelError, ModelSet, load_model_set
from ..core.pipeline import Pipeline, PipelineOptions, roles_for
from ..core.shard import ShardResult, ShardTask, run_shard
from ..core.video import VideoError
from ..core.worker import load_pipeline, prepare_process
from .executor import FailureKind
from .pathmap import PathMap

log = logging.getLogger("aud.dask")

PLUGIN_NAME = "aud"  # one model set per worker: registering again replaces the previous one
METRIC = "aud"  # the plugin's state, sent with every worker heartbeat (``Worker.metrics``)
PROGRESS_TOPIC = "aud-progress"
PROGRESS_INTERVAL = 0.5  # seconds between a shard's progress events after the first


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


def check_hashes(options: PipelineOptions, expected: Mapping[str, str]) -> ModelSet:
    """This worker's model files, hashed: ModelError unless they are the daemon's (same sha256 per
    role). The set returned is the reference every pipeline of this worker is loaded against
    (``core.worker.load_pipeline``): a file swapped later is refused, not loaded."""
    found = load_model_set(options.models_dir, roles_for(options.au45), signatures=False)
    for role, digest in expected.items():
        mine = found.files.get(role)
        if mine is not None and mine.sha256 != digest:
            raise ModelError(f"{mine.path} ({role}) has sha256 {mine.sha256}, the daemon's file has "
                             f"{digest}: every worker needs the daemon's model files")
    return found


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
        self.reference: ModelSet | None = None  # this worker's model files as hashed at set-up
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
        self.reference = check_hashes(self.local_options, self.model_hashes)
        keep_frame_buffers_on_heap()
        pipeline = prepare_process(self.local_options, self.reference)
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
            pipeline = load_pipeline(self.local_options, self.reference)
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
