"""The local executor: a pool of spawned worker processes, each holding one set of model sessions.

This module is the parent's side; the program each worker runs, and the messages of the pipe between
them, are ``local_worker``. Every worker is a ``spawn`` process (no forked ONNX Runtime threads); the
parent sends it the model set it hashed (``Load``), the worker loads those files once, checking they
are still the ones hashed, tells the parent it is ready, then runs one shard at a time. The parent reads
its pipe ends on the asyncio loop (``loop.add_reader``), so waiting for a worker never blocks the loop.

What the pool guarantees (the executor port, ``executor.py``):

* A worker that dies mid-shard (EOF on its pipe) fails that shard only, with ``WorkerDied`` naming
  its pid and exit code or signal; the dead worker is replaced by a fresh, warmed process.
* A shard past its ``timeout`` gets its worker killed and replaced, and raises ``ShardTimedOut``.
  A cancelled ``run`` kills and replaces its worker too (the shard cannot be interrupted otherwise).
* A replacement that cannot load its models (a model file deleted, damaged, or swapped for another
  since the set was hashed: ``ModelsChanged``) is tried again, with ``restart`` (a ``Backoff``)
  between attempts, for as long as it takes; each failed attempt is reported through ``on_restart``.
  While no worker is up and the last attempt failed, the pool is *unavailable*: ``run`` raises
  ``ExecutorUnavailable`` with the reason (the runner keeps the shard and waits) and
  ``wait_available`` returns once a worker has loaded its models again. A job never fails for it.
* Workers outlive no parent: each watches a lifeline pipe whose only write end the parent holds and
  calls ``os._exit`` on its EOF, which the kernel delivers however the parent died (``kill -9``
  included, Linux and macOS alike). ``spawn`` hands a child only the descriptors passed to it, so
  no worker holds another worker's lifeline.

Errors raised while a worker loads its models travel as (type name, message, traceback) and are
raised again in the parent by ``remote_error``: as the same class when it is one of
``LOAD_ERRORS``, else as ``WorkerStartError`` whose message starts with the type name.

Good to know:

* Replacements start in the background: a failing ``run`` raises at once; ``replacements_done()``
  waits for the fresh workers (tests, status).
* ``start()`` has no time limit: a first CoreML compile may legitimately take minutes. The model set
  is hashed (unless given) while the workers spawn.
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
import os
import signal
import socket
import time
from collections.abc import Callable
from enum import Enum

import psutil

from ..core.models import ModelError, ModelsChanged, ModelSet, load_model_set
from ..core.pipeline import PipelineOptions, roles_for
from ..core.providers import ProviderError
from ..core.shard import ShardResult, ShardTask
from ..core.video import VideoError
from .executor import (
    Backoff,
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
from .local_worker import (
    EXIT_ORPHANED,
    READER_IDLE_SECONDS,
    Done,
    Failed,
    Load,
    Progressed,
    Ready,
    Run,
    Stop,
    worker_main,
)

log = logging.getLogger("aud.local")

REAP_TIMEOUT = 5.0  # seconds to wait for a process whose pipe closed to exit, before killing it
TERM_GRACE = 1.0  # seconds between SIGTERM and SIGKILL when stopping a worker
STOP_TIMEOUT = 5.0  # seconds a worker gets to exit after a stop message
# a replacement that cannot load its models: tried again after 1 s, 2 s, 4 s, ..., then every minute
# (each attempt costs a process start and a model load: a few seconds of one core)
RESTART = Backoff(first=1.0, cap=60.0)


# --- errors from a worker's start -------------------------------------------------------------------

class WorkerStartError(RuntimeError):
    """A worker could not start for a reason outside ``LOAD_ERRORS``; the message names the type and
    ``traceback`` holds the worker's traceback text."""

    def __init__(self, message: str, traceback: str = ""):
        super().__init__(message)
        self.traceback = traceback


LOAD_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls for cls in (ModelError, ModelsChanged, ProviderError, VideoError, ValueError,
                                  FileNotFoundError, PermissionError, OSError, MemoryError)
}


def remote_error(failed: Failed) -> Exception:
    """The exception a worker's start failure becomes in the parent (see the module docstring)."""
    cls = LOAD_ERRORS.get(failed.type_name)
    if cls is None:
        return WorkerStartError(f"{failed.type_name}: {failed.message}", failed.traceback)
    return cls(failed.message)


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
        """Spawn the process; it loads nothing until ``load``."""
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

    def load(self, reference: ModelSet | None) -> None:
        """Tell the process to load the models, which must be ``reference``'s files unchanged."""
        with contextlib.suppress(OSError):  # died just now: the reader fails ``reply`` with WorkerDied
            self.conn.send(Load(reference))

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
                          self.state is State.BUSY, memory_mb=resident_mb(self.pid))


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
    ``on_restart(reason)`` is called whenever a worker is replaced (death, timeout, cancellation) and
    whenever a replacement could not start (the reason says when the next attempt is).
    ``close_timeout`` bounds how long ``close()`` waits for running shards. ``models``: the set the
    caller hashed (its sha256 label the results); every worker must load exactly those files. Without
    it, ``start()`` hashes the set itself. ``restart``: the delays between attempts to start a
    replacement that could not load its models.
    """

    def __init__(self, options: PipelineOptions, workers: int, *,
                 on_restart: Callable[[str], None] | None = None, close_timeout: float = 60.0,
                 models: ModelSet | None = None, restart: Backoff = RESTART):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.options = dataclasses.replace(options, workers=workers)
        self.size = workers
        self.on_restart = on_restart
        self.close_timeout = close_timeout
        self.restart = restart
        self.restarts = 0
        self._reference = models  # the files every worker must load (hashed by start() when None)
        self._workers: list[_Worker] = []  # every worker of the pool, starting ones included
        self._idle: list[_Worker] = []
        self._waiters: list[asyncio.Future] = []  # runs waiting for an idle worker, waits for availability
        self._started = False
        self._closing = False
        self._replacing: set[asyncio.Task] = set()
        self._start_failure = ""  # why the last attempt to start a replacement failed ("" once one started)

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
            if self._reference is None:  # hashed while the workers import their libraries
                self._reference = await asyncio.to_thread(
                    load_model_set, self.options.models_dir, roles_for(self.options.au45), False)
            for worker in started:
                worker.load(self._reference)
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

    def unavailable(self) -> str | None:
        """Why no shard can run now, or None: no worker is up and the last attempt to start one failed."""
        if not self._start_failure or any(w.state in (State.IDLE, State.BUSY) for w in self._workers):
            return None
        return (f"no worker process can start: {self._start_failure}; the pool tries again "
                f"(every {self.restart.cap:g} s at most) and runs the waiting jobs once one starts")

    async def wait_available(self) -> None:
        """Return once a worker is up again (at once if one is), or the pool closes."""
        while not self._closing and self.unavailable() is not None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def workers(self) -> list[WorkerInfo]:
        return [w.info() for w in self._workers if w.state is not State.GONE]

    async def replacements_done(self) -> None:
        """Wait until every replacement started so far is warm and taking work (with a pool whose
        replacements cannot start, this waits until one can)."""
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
        capture worth keeping, else the longest idle. ExecutorUnavailable while none can start."""
        if not self._started:
            raise RuntimeError("start() the process pool before running shards")
        while not self._closing:
            if self._idle:
                worker = worker_for(task, self._idle, _Worker.capture)
                self._idle.remove(worker)
                return worker
            reason = self.unavailable()
            if reason is not None:
                raise ExecutorUnavailable(reason)
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

    def _notify(self, reason: str) -> None:
        if self.on_restart is not None:
            try:
                self.on_restart(reason)
            except Exception:
                log.exception("the on_restart callback raised")

    async def _replace(self, worker: _Worker, reason: str) -> None:
        """End ``worker`` if alive, start a fresh one in its place and put it to work once its models
        are loaded; a fresh one that cannot load them is tried again after each of ``restart``'s delays
        (runs as a task of its own: a failing shard's ``run`` does not wait for the replacement)."""
        await worker.kill(TERM_GRACE)
        if self._closing or worker not in self._workers:
            return
        self.restarts += 1
        log.warning("replacing worker %s: %s", worker.name, reason)
        self._notify(reason)
        place = worker
        for delay in self.restart.delays():
            fresh = self._spawn()
            self._workers[self._workers.index(place)] = place = fresh
            fresh.load(self._reference)
            try:
                await fresh.ready()
            except asyncio.CancelledError:
                await fresh.kill()
                raise
            except Exception as exc:
                await fresh.kill()
                self._start_failure = f"{type(exc).__name__}: {exc}"
                log.error("a replacement worker could not start (%s); %d of %d workers are up; trying "
                          "again in %g s", self._start_failure, len(self.workers()), self.size, delay)
                self._notify(f"a replacement worker could not start ({self._start_failure}); trying again "
                             f"in {delay:g} s")
                self._wake()  # runs waiting for a worker learn whether the pool is unavailable now
                await asyncio.sleep(delay)  # a retry period, not a wait for an event
                continue
            if self._start_failure:
                log.info("replacement worker %s started after a failed start; the pool runs shards again",
                         fresh.name)
            self._start_failure = ""
            self._release(fresh)
            return
