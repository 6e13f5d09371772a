"""The worker program of the local pool (``local.ProcessExecutor``): what runs in each spawned process,
and the typed messages it exchanges with the parent over its duplex pipe.

A worker's life (``worker_main``): wait for ``Load`` (the model set the parent hashed), load the models
once, checking they are those files (``core.worker.prepare_process``), answer ``Ready`` (or ``Failed``
and exit), then run one shard per ``Run`` until ``Stop``, its pipe's EOF, or its lifeline's EOF (the
parent died, however: ``os._exit(EXIT_ORPHANED)``). SIGINT is ignored: Ctrl-C in a terminal signals the
whole process group; the parent decides.

This module is the child's side only: it imports the core and nothing of the daemon (``local`` is the
parent's side).
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from ..core.models import ModelSet
from ..core.pipeline import PipelineOptions
from ..core.providers import worker_threads
from ..core.shard import ShardResult, ShardTask, run_shard, worker_name
from ..core.video import Reader, VideoError
from ..core.worker import prepare_process

PROGRESS_INTERVAL = 0.25  # seconds between a worker's progress messages (at most ~4 a second)
EXIT_ORPHANED = 70  # a worker's exit code when its parent died
READER_IDLE_SECONDS = 2.0  # a worker idle this long lets go of its open video (its job has most likely
# ended: the file is about to be moved, or may be deleted, and should not be held open overnight)


# --- messages ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Load:
    """Parent to worker, first: load the models, which must be these files as the parent hashed them."""

    reference: ModelSet | None  # None: load what is there, unchecked


@dataclass(frozen=True)
class Run:
    """Parent to worker: compute this shard."""

    task: ShardTask


@dataclass(frozen=True)
class Stop:
    """Parent to worker: exit now (between shards)."""


@dataclass(frozen=True)
class Ready:
    """Worker to parent: models loaded."""

    providers: dict[str, str]
    pid: int
    name: str  # host:pid
    threads: int


@dataclass(frozen=True)
class Progressed:
    """Worker to parent: frames of the current shard done so far."""

    frames: int


@dataclass(frozen=True)
class Done:
    """Worker to parent: the shard's result, by value."""

    result: ShardResult


@dataclass(frozen=True)
class Failed:
    """Worker to parent: loading or the shard raised."""

    type_name: str
    message: str
    traceback: str
    input_error: bool  # a VideoError: the user's video, not a bug


def failure_of(exc: BaseException) -> Failed:
    return Failed(type(exc).__name__, str(exc), traceback.format_exc(), isinstance(exc, VideoError))


# --- the worker process -----------------------------------------------------------------------------

def exit_when_parent_dies(lifeline: multiprocessing.connection.Connection) -> None:
    """Block until the parent's write end of the lifeline closes (however the parent died), then exit."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()
    os._exit(EXIT_ORPHANED)


def throttled(conn: multiprocessing.connection.Connection, interval: float) -> Callable[[int], None]:
    """A progress callback sending at most one message per ``interval`` seconds."""
    last = -interval

    def send(frames: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= interval:
            last = now
            conn.send(Progressed(frames))

    return send


def worker_main(conn: multiprocessing.connection.Connection, lifeline: multiprocessing.connection.Connection,
                options: PipelineOptions) -> None:
    """A worker's life: load the models once, then run shards until told to stop or the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=exit_when_parent_dies, args=(lifeline,), name="lifeline", daemon=True).start()
    try:
        load = conn.recv()
        if not isinstance(load, Load):
            return  # Stop (the pool closed while this worker started) or the pipe's EOF
        pipeline = prepare_process(options, load.reference)
    except EOFError:
        return
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it again
        conn.send(failure_of(exc))
        return
    conn.send(Ready(dict(pipeline.providers), os.getpid(), worker_name(),
                    worker_threads(options.workers, options.threads)))
    reader = Reader()  # the capture of the last shard stays open for the shard that continues it
    while True:
        try:
            if not conn.poll(READER_IDLE_SECONDS):
                reader.close()
            message = conn.recv()
        except EOFError:
            return
        if isinstance(message, Stop):
            return
        try:
            result = run_shard(pipeline, message.task, throttled(conn, PROGRESS_INTERVAL), reader)
        except Exception as exc:  # noqa: BLE001 - reported to the parent as ShardFailed
            conn.send(failure_of(exc))
        else:
            conn.send(Done(result))
