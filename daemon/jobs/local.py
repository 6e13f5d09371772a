"""The local executor: a pool of spawned worker processes, each holding one set of model sessions.

Every worker is a ``spawn`` process (no forked ONNX Runtime threads) that calls ``prepare_process``
once, tells the parent it is ready, then runs one shard at a time. Parent and worker talk over one
duplex ``multiprocessing.Pipe`` with the typed messages below; the parent reads its ends on the
asyncio loop (``loop.add_reader``), so waiting for a worker never blocks the loop.

What the pool guarantees (the executor port, ``executor.py``):

* A worker that dies mid-shard (EOF on its pipe) fails that shard only, with ``WorkerDied`` naming
  its pid and exit code or signal; the dead worker is replaced by a fresh, warmed process.
* A shard past its ``timeout`` gets its worker killed and replaced, and raises ``ShardTimedOut``.
  A cancelled ``run`` kills and replaces its worker too (the shard cannot be interrupted otherwise).
* Workers outlive no parent: each watches a lifeline pipe whose only write end the parent holds and
  calls ``os._exit`` on its EOF, which the kernel delivers however the parent died (``kill -9``
  included, Linux and macOS alike). ``spawn`` hands a child only the descriptors passed to it, so
  no worker holds another worker's lifeline.
* Workers ignore SIGINT: Ctrl-C in a terminal signals the whole process group; the parent decides.

Errors raised while a worker loads its models travel as (type name, message, traceback) and are
raised again in the parent by ``remote_error``: as the same class when it is one of
``LOAD_ERRORS``, else as ``WorkerStartError`` whose message starts with the type name.

Good to know:

* Replacements start in the background: a failing ``run`` raises at once; ``replacements_done()``
  waits for the fresh workers (tests, status). A replacement that cannot load its models is logged
  and the pool goes on with fewer workers; with none left, ``run`` raises ``ShardFailed``
  (``INTERNAL``) saying why.
* ``start()`` has no time limit: a first CoreML compile may legitimately take minutes.
* A message is read whole once its first bytes arrive; a shard's rows are a few hundred kB that the
  worker writes in one go, so the loop is held for the time of a memory copy.
* ``spawn`` starts multiprocessing's resource tracker once per parent process: a helper child (not a
  worker) that stays after ``close()`` and exits when the parent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import psutil

from ..core.models import ModelError
from ..core.pipeline import PipelineOptions
from ..core.providers import ProviderError, worker_threads
from ..core.shard import ShardResult, ShardTask, run_shard, worker_name
from ..core.video import Reader, VideoError
from ..core.worker import prepare_process
from .executor import (
    ExecutorUnavailable,
    FailureKind,
    Position,
    Progress,
    ShardFailed,
    ShardTimedOut,
    WorkerDied,
    WorkerInfo,
    worker_for,
)

log = logging.getLogger("aud.local")

PROGRESS_INTERVAL = 0.25  # seconds between a worker's progress messages (at most ~4 a second)
REAP_TIMEOUT = 5.0  # seconds to wait for a process whose pipe closed to exit, before killing it
TERM_GRACE = 1.0  # seconds between SIGTERM and SIGKILL when stopping a worker
STOP_TIMEOUT = 5.0  # seconds a worker gets to exit after a stop message
EXIT_ORPHANED = 70  # a worker's exit code when its parent died
READER_IDLE_SECONDS = 2.0  # a worker idle this long lets go of its open video (its job has most likely
# ended: the file is about to be moved, or may be deleted, and should not be held open overnight)


# --- messages ---------------------------------------------------------------------------------------

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


# --- errors from a worker's start -------------------------------------------------------------------

class WorkerStartError(RuntimeError):
    """A worker could not start for a reason outside ``LOAD_ERRORS``; the message names the type and
    ``traceback`` holds the worker's traceback text."""

    def __init__(self, message: str, traceback: str = ""):
        super().__init__(message)
        self.traceback = traceback


LOAD_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls for cls in (ModelError, ProviderError, VideoError, ValueError, FileNotFoundError,
                                  PermissionError, OSError, MemoryError)
}


def remote_error(failed: Failed) -> Exception:
    """The exception a worker's start failure becomes in the parent (see the module docstring)."""
    cls = LOAD_ERRORS.get(failed.type_name)
    if cls is None:
        return WorkerStartError(f"{failed.type_name}: {failed.message}", failed.traceback)
    return cls(failed.message)


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
        pipeline = prepare_process(options)
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


# --- the parent's view of one worker ----------------------------------------------------------------

class State(Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    GONE = "gone"  # dead, killed or stopped


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    if exitcode == EXIT_ORPHANED:
        return "exited because its parent's lifeline closed"
    return f"exited with code {exitcode}"


class _Worker:
    """One worker process, its pipe and lifeline, and what it is doing.

    ``reply`` is the future of the message the parent waits for: ``Ready`` while starting, ``Done``
    while busy. The pipe's reader resolves it; the process's death fails it with ``WorkerDied``.
    """

    def __init__(self, options: PipelineOptions, loop: asyncio.AbstractEventLoop,
                 on_idle_death: Callable[[_Worker, str], None]):
        context = multiprocessing.get_context("spawn")
        self.loop = loop
        self.conn, child_conn = context.Pipe(duplex=True)
        lifeline_read, self.lifeline = context.Pipe(duplex=False)
        self.process = context.Process(target=worker_main, args=(child_conn, lifeline_read, options),
                                       name="aud-worker", daemon=True)
        self.process.start()
        # the child has its own copies now; holding the child's ends here would hide its EOF
        child_conn.close()
        lifeline_read.close()
        self.pid = self.process.pid or 0
        self.name = f"{socket.gethostname()}:{self.pid}"
        self.on_idle_death = on_idle_death
        self.state = State.STARTING
        self.providers: dict[str, str] = {}
        self.threads = 0
        self.tasks_done = 0
        self.position: Position | None = None  # (video, frame) where its last shard ended
        self.idle_since = 0.0  # time.monotonic() when its last shard ended
        self.progress: Progress | None = None
        self.reply: asyncio.Future = loop.create_future()
        self.exited: asyncio.Future = loop.create_future()  # set with the exit code once reaped
        self._reaper: asyncio.Task | None = None
        self._released = False
        loop.add_reader(self.conn.fileno(), self._readable)
        loop.add_reader(self.process.sentinel, self._reaped)

    # -- events from the child --

    def _readable(self) -> None:
        """Read every whole message waiting. The loop may have made the pipe non-blocking (uvloop's
        ``add_reader`` does), and a large result arrives in several pieces: block while reading one
        message (the worker is writing the rest of it right now), then give the pipe back as it was."""
        fd = self.conn.fileno()
        was_blocking = os.get_blocking(fd)
        try:
            os.set_blocking(fd, True)
            while self.conn.poll():
                self._handle(self.conn.recv())
        except (EOFError, OSError) as exc:
            log.debug("worker %s: its pipe closed (%r)", self.name, exc)
            self._lost()
        finally:
            with contextlib.suppress(OSError):
                os.set_blocking(fd, was_blocking)

    def _handle(self, message: object) -> None:
        if isinstance(message, Progressed):
            if self.progress is not None:
                try:
                    self.progress(message.frames)
                except Exception:
                    log.exception("a progress callback raised (worker %s)", self.name)
        elif isinstance(message, Ready):
            self.providers, self.threads, self.name = message.providers, message.threads, message.name
            self._resolve(message)
        elif isinstance(message, Done | Failed):
            self._resolve(message)
        else:
            log.error("worker %s sent an unknown message %r", self.name, message)

    def _resolve(self, message: object) -> None:
        if not self.reply.done():
            self.reply.set_result(message)

    def _lost(self) -> None:
        """The pipe closed: the process is dying. Its exit code arrives with ``_reaped``."""
        self.loop.remove_reader(self.conn.fileno())
        if self.state is not State.GONE:
            was, self.state = self.state, State.GONE
            self._reaper = asyncio.ensure_future(self._fail_when_reaped(was))

    def _reaped(self) -> None:
        self.loop.remove_reader(self.process.sentinel)
        self.process.join(1.0)  # the sentinel says it exited: returns at once
        if not self.exited.done():
            self.exited.set_result(self.process.exitcode)
        self._lost_if_open()

    def _lost_if_open(self) -> None:
        if self.state is not State.GONE:
            self._readable()  # read what it sent before dying; ends with EOF
            if self.state is not State.GONE:
                self._lost()

    async def _fail_when_reaped(self, was: State) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), REAP_TIMEOUT)
        except TimeoutError:
            self.process.kill()
            await self.exited
        reason = f"worker {self.name} {describe_exit(self.exited.result())}"
        if not self.reply.done():
            self.reply.set_exception(WorkerDied(reason, self.name))
        elif was is State.IDLE:
            self.on_idle_death(self, reason)

    # -- commands from the parent --

    async def ready(self) -> Ready:
        """Wait for the models to load; raises the load error, or WorkerDied."""
        message = await self.reply
        if isinstance(message, Failed):
            await self.kill()
            raise remote_error(message)
        self.state = State.IDLE
        return message

    async def run(self, task: ShardTask, progress: Progress | None) -> ShardResult:
        """Run one shard; raises ShardFailed for the shard's own error, WorkerDied if the process dies."""
        self.state, self.progress, self.position = State.BUSY, progress, None
        self.reply = self.loop.create_future()
        try:
            with contextlib.suppress(OSError):  # died just now: the reader fails ``reply`` with WorkerDied
                self.conn.send(Run(task))
            message = await self.reply
        finally:
            self.progress = None
        if self.state is State.BUSY:
            self.state = State.IDLE
        if isinstance(message, Failed):
            kind = FailureKind.INPUT if message.input_error else FailureKind.INTERNAL
            text = message.message if message.input_error else f"{message.type_name}: {message.message}"
            raise ShardFailed(text, kind, message.traceback, self.name)
        self.tasks_done += 1
        self.position, self.idle_since = (task.video, task.stop), time.monotonic()
        return message.result

    def capture(self) -> Position | None:
        """Where its open capture stands: its last shard's end, unless it has waited long enough since
        to close the capture (``READER_IDLE_SECONDS``)."""
        if self.position is None or time.monotonic() - self.idle_since >= READER_IDLE_SECONDS:
            return None
        return self.position

    def abandon(self, error: Exception) -> None:
        """Fail whatever the parent waits for with ``error`` (the worker is about to be killed)."""
        if not self.reply.done():
            self.reply.set_exception(error)
            self.reply.exception()  # retrieved: nobody may be awaiting it any more

    async def kill(self, grace: float = 0.0) -> None:
        """End the process (SIGTERM, then SIGKILL after ``grace`` seconds) and wait until it is reaped."""
        self.state = State.GONE
        if not self.exited.done():
            if grace > 0:
                self.process.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.exited), grace)
            if not self.exited.done():
                self.process.kill()
            await self.exited
        self.release()

    async def stop(self) -> None:
        """Ask an idle worker to exit; kill it if it does not within ``STOP_TIMEOUT``."""
        self.state = State.GONE
        with contextlib.suppress(OSError):
            self.conn.send(Stop())
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("worker %s did not stop within %g s; killing it", self.name, STOP_TIMEOUT)
        await self.kill(TERM_GRACE)

    def release(self) -> None:
        """Close the parent's ends (the process has exited). Idempotent."""
        if self._released:
            return
        self._released = True
        self.loop.remove_reader(self.conn.fileno())
        self.loop.remove_reader(self.process.sentinel)
        self.conn.close()
        self.lifeline.close()
        self.process.close()

    def info(self) -> WorkerInfo:
        return WorkerInfo(self.name, self.providers.get("detector", "?"), self.threads, self.tasks_done,
                          self.state is State.BUSY, memory_mb=resident_mb(self.process.pid))


def resident_mb(pid: int | None) -> float | None:
    """A worker's resident memory (psutil), for ``aud status``; None once it is gone."""
    try:
        return round(psutil.Process(pid).memory_info().rss / 1e6, 1) if pid else None
    except psutil.Error:
        return None


# --- the executor -----------------------------------------------------------------------------------

class ProcessExecutor:
    """``workers`` spawned processes running shards (the executor port, ``executor.py``).

    ``options.workers`` is set to ``workers`` so each process takes its share of the cores.
    ``on_restart(reason)`` is called whenever a worker is replaced (death, timeout, cancellation).
    ``close_timeout`` bounds how long ``close()`` waits for running shards.
    """

    def __init__(self, options: PipelineOptions, workers: int, *,
                 on_restart: Callable[[str], None] | None = None, close_timeout: float = 60.0):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.options = dataclasses.replace(options, workers=workers)
        self.size = workers
        self.on_restart = on_restart
        self.close_timeout = close_timeout
        self.restarts = 0
        self._workers: list[_Worker] = []  # every live worker, starting ones included
        self._idle: list[_Worker] = []
        self._waiters: list[asyncio.Future] = []  # runs waiting for an idle worker
        self._started = False
        self._closing = False
        self._replacing: set[asyncio.Task] = set()
        self._start_failure = ""  # why the last replacement could not start

    @property
    def capacity(self) -> int:
        return self.size

    async def start(self) -> dict[str, str]:
        """Start every worker and wait until all have loaded their models; on a failure, end them all
        and raise it."""
        if self._started:
            raise RuntimeError("the process pool was started already")
        self._started = True
        started: list[_Worker] = []
        try:
            for _ in range(self.size):
                started.append(self._spawn())
            results = await asyncio.gather(*(w.ready() for w in started), return_exceptions=True)
        except BaseException:
            await asyncio.gather(*(w.kill() for w in started))
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await asyncio.gather(*(w.kill() for w in started))
            raise errors[0]
        self._workers, self._idle = list(started), list(started)
        log.info("%d workers loaded their models: %s", self.size, ", ".join(w.name for w in started))
        return dict(started[0].providers)

    def resume_points(self) -> list[Position]:
        return [at for at in (w.capture() for w in self._idle) if at is not None]

    async def run(self, task: ShardTask, *, timeout: float | None = None,
                  progress: Progress | None = None) -> ShardResult:
        worker = await self._acquire(task)
        label = task.label or "a shard"
        try:
            result = await asyncio.wait_for(worker.run(task, progress), timeout)
        except TimeoutError:
            reason = f"{label} ran longer than {timeout:g} s on worker {worker.name}"
            try:
                await worker.kill(TERM_GRACE)
            finally:
                self._replace_later(worker, reason)
            raise ShardTimedOut(f"{reason}; the worker was replaced", worker.name) from None
        except WorkerDied as exc:
            self._replace_later(worker, str(exc))
            raise
        except asyncio.CancelledError:
            if worker.state is State.BUSY:  # a running shard cannot be interrupted: end its worker
                self._replace_later(worker, f"{label} was cancelled on worker {worker.name}")
            else:
                self._release(worker)
            raise
        except ShardFailed:
            self._release(worker)
            raise
        self._release(worker)
        return result

    async def wait_available(self) -> None:
        """A local pool is always available."""

    def workers(self) -> list[WorkerInfo]:
        return [w.info() for w in self._workers]

    async def replacements_done(self) -> None:
        """Wait until every replacement started so far is warm and taking work (or failed to start)."""
        while self._replacing:
            await asyncio.wait(set(self._replacing))

    async def close(self, *, kill: bool = False) -> None:
        """Let running shards finish (at most ``close_timeout`` seconds) unless ``kill``, then end every
        worker. Idempotent; a ``close(kill=True)`` during a waiting ``close()`` ends it promptly.
        Runs still waiting for a worker, or cut short, raise ExecutorUnavailable."""
        self._closing = True
        self._wake()
        if not kill:
            busy = [w.reply for w in self._workers if w.state is State.BUSY]
            if busy:
                await asyncio.wait(busy, timeout=self.close_timeout)
        for task in list(self._replacing):
            task.cancel()
        await asyncio.gather(*self._replacing, return_exceptions=True)
        workers, self._workers, self._idle = self._workers, [], []
        for w in workers:
            w.abandon(ExecutorUnavailable(f"the local process pool was closed while worker {w.name} ran it"))
        await asyncio.gather(*(w.stop() if w.state is State.IDLE and not kill else w.kill() for w in workers))

    # -- internals --

    def _spawn(self) -> _Worker:
        return _Worker(self.options, asyncio.get_running_loop(), self._idle_worker_died)

    async def _acquire(self, task: ShardTask) -> _Worker:
        """An idle worker for ``task``: the one whose open capture it continues, else one with no
        capture worth keeping, else the longest idle."""
        if not self._started:
            raise RuntimeError("start() the process pool before running shards")
        while not self._closing:
            if self._idle:
                worker = worker_for(task, self._idle, _Worker.capture)
                self._idle.remove(worker)
                return worker
            if not self._workers:
                raise ShardFailed(f"no worker process is left: a replacement could not start "
                                  f"({self._start_failure})", FailureKind.INTERNAL)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        raise ExecutorUnavailable("the local process pool is closing")

    def _release(self, worker: _Worker) -> None:
        if worker.state is State.IDLE and not self._closing:
            self._idle.append(worker)
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _idle_worker_died(self, worker: _Worker, reason: str) -> None:
        if worker in self._idle:
            self._idle.remove(worker)
        if worker in self._workers:
            self._replace_later(worker, reason)

    def _replace_later(self, worker: _Worker, reason: str) -> None:
        task = asyncio.ensure_future(self._replace(worker, reason))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _replace(self, worker: _Worker, reason: str) -> None:
        """End ``worker`` if alive, start a fresh one and put it to work once its models are loaded
        (runs as a task of its own: a failing shard's ``run`` does not wait for the replacement)."""
        await worker.kill(TERM_GRACE)
        if self._closing or worker not in self._workers:
            return
        self.restarts += 1
        log.warning("replacing worker %s: %s", worker.name, reason)
        if self.on_restart is not None:
            try:
                self.on_restart(reason)
            except Exception:
                log.exception("the on_restart callback raised")
        fresh = self._spawn()
        self._workers[self._workers.index(worker)] = fresh
        try:
            await fresh.ready()
        except asyncio.CancelledError:
            await fresh.kill()
            raise
        except Exception as exc:
            self._workers.remove(fresh)
            await fresh.kill()
            self._start_failure = f"{type(exc).__name__}: {exc}"
            log.exception("a replacement worker could not start; the pool has %d workers now",
                          len(self._workers))
            self._wake()  # runs waiting for a worker learn when none is left
            return
        self._release(fresh)
