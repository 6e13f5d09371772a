"""The daemon's lifecycle: start-up, main loop, shutdown. Nothing else.

``Daemon.run()`` is shaped like uvicorn's ``Server``:

* **signals first**: SIGTERM and SIGINT are captured before anything slow starts (hashing the models,
  loading them into the workers can take minutes), and the previous handlers are restored at the end;
* **start-up**, one step at a time, each started thing registered on an ``AsyncExitStack`` the moment
  it exists: the state lock, the folders, the model set, the job store, the executor, the control
  socket, the workers (loaded before the first video), the runner (``daemon.jobs.runner``), intake
  (``intake.py``: the inbox watcher's settled files and ``aud submit`` become jobs) and the socket's
  commands (``commands.py``). A failure at any step closes what was started, in reverse order; a
  signal during a slow step ends start-up there and the daemon exits 0 the same way;
* **main loop**: until a signal, or until the watcher or the runner ends on an error;
* **shutdown**: stop taking work, let running shards finish (each is committed as it ends) for up to
  ``stop_timeout_seconds``, then the stack closes the rest (the socket says ``daemon_stopping`` with
  the reason). A second signal stops at once: running shards are ended and run again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from .. import protocol as msg
from ..config import Settings
from ..core.models import ModelSet, load_model_set
from ..core.pipeline import roles_for
from ..core.providers import choose
from ..core.video import quiet_decoder_logs
from ..jobs.executor import Executor
from ..jobs.factory import make_executor
from ..jobs.history import History
from ..jobs.runner import Runner
from ..jobs.spec import runner_config
from ..jobs.store import JobStore
from .commands import Commands
from .errors import CommandError
from .intake import Intake
from .outbox import Outbox
from .server import ProgressServer
from .view import MorningView  # web (issue 25)
from .web import start_page  # web (issue 25)

log = logging.getLogger("aud.daemon")
SIGNALS = (signal.SIGTERM, signal.SIGINT)
T = TypeVar("T")


class AlreadyRunning(RuntimeError):
    """Another daemon holds this state directory."""


class StopRequested(Exception):
    """A signal arrived during a start-up step: start-up ends there, and the daemon exits cleanly."""


class StateLock:
    """One daemon per state directory: an exclusive ``flock`` on ``<state>/aud.lock``."""

    def __init__(self, state: Path):
        self.path = state / "aud.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"another aud daemon (pid {holder}) is already running on the state directory "
                f"{self.path.parent}; one daemon per state directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def starting_status(s: Settings, counts: dict[str, int]) -> msg.StatusReply:
    """Status while the workers load their models: the store's counts, nothing running yet."""
    return msg.StatusReply(
        state="starting", paused=False, queued=[], running=[], waiting=[], duplicates=[], recent_failures=[],
        workers=msg.Workers(count=0, provider="?", providers=[], restarts=0, executor=s.executor, state="ok"),
        counts=counts, versions={}, inbox=str(s.inbox), outbox=str(s.outbox))


def check_setup(settings: Settings) -> ModelSet:
    """Before anything starts: the provider is there and the model files are, hashed (their hashes
    are part of every job's key and of every sidecar)."""
    choose(settings.provider, settings.coreml_cache_dir)
    return load_model_set(settings.models, roles_for(settings.au45), signatures=False)


def lock_state(state: Path) -> StateLock:
    """The state directory (private) and its lock; nothing else exists yet when a second daemon is
    refused here."""
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    lock = StateLock(state)
    lock.acquire()
    return lock


ExecutorFactory = Callable[[Settings, Callable[[str], None], ModelSet], Executor]


class Daemon:
    """``make``: the executor factory (tests pass the in-process one); it is given the model set
    ``check_setup`` hashed, so the files are hashed once per start."""

    def __init__(self, settings: Settings, make: ExecutorFactory = make_executor):
        self.settings = settings
        self._make_executor = make
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self.ready = asyncio.Event()  # set once the daemon takes jobs (tests wait on it)
        self._reason = "shutdown"
        self._drained = False  # running shards finished: the executor may stop its workers gently
        self.commands: Commands | None = None
        self._starting: msg.StatusReply | None = None  # what status says until the workers are ready
        self._restarts = 0
        self._server: ProgressServer | None = None
        self._runner: Runner | None = None
        self._tasks: list[asyncio.Task] = []

    # --- the whole life ---------------------------------------------------------------------------

    async def run(self) -> int:
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(self.capture_signals())  # first: a signal during start-up stops it cleanly
            try:
                await self.startup(stack)
            except StopRequested:
                log.info("stopped during start-up")
                return 0
            except BaseException as exc:
                self._reason = f"the daemon could not start: {exc}"  # what the socket's clients are told
                raise
            await self.main_loop()
            await self.shutdown()
        return 0

    async def startup(self, stack: contextlib.AsyncExitStack) -> None:
        """Start every piece; each is registered on ``stack`` (closed in reverse order) as it exists."""
        s = self.settings
        quiet_decoder_logs()
        stack.callback(lock_state(s.state).release)
        for folder in (s.inbox, s.outbox):
            folder.mkdir(parents=True, exist_ok=True)
        models = await self._unless_stopped(asyncio.to_thread(check_setup, s))
        store = await asyncio.to_thread(JobStore, s.database_path)  # opening checks (and may migrate) it
        stack.callback(store.close)
        # a settings error before the socket exists; the set just hashed, so the pool does not hash it again
        executor = self._make_executor(s, self._worker_restarted, models)
        stack.push_async_callback(self._close_executor, executor)
        self._starting = starting_status(s, await asyncio.to_thread(History(store).counts))
        self._server = server = ProgressServer(s.socket_path, self._handle)
        await server.start()
        stack.push_async_callback(self._close_server, server)
        providers = await self._unless_stopped(executor.start())  # every worker loads its models now
        loop = asyncio.get_running_loop()

        def moved(path: Path) -> None:  # inputs move in worker threads; the watcher forgets them on the loop
            loop.call_soon_threadsafe(intake.forget, path)

        outbox = Outbox(s, forget=moved)
        config = runner_config(s, models, providers, output_retry_seconds=s.rescan_seconds)
        self._runner = runner = Runner(store, executor, config, outbox, publish=server.publish)
        runner.providers = providers
        stack.push_async_callback(asyncio.to_thread, runner.close)  # its writer thread ends after a result
        await self._unless_stopped(runner.warm_up())  # the first plot should not pay for loading matplotlib
        intake = Intake(s, store, outbox, config.key, server.publish, runner.wake)
        watcher = intake.watch()
        self.commands = Commands(s, runner, intake, executor, lambda: self._restarts)
        # the morning view, fed by the socket's events: the live page and the outbox's index.html (issue 25)
        view = MorningView(s, store, self._handle)
        server.listeners.append(view.publish)
        stack.push_async_callback(view.close)  # the last index.html is written
        await view.seed()
        page = await start_page(view, s, self._handle, store)
        if page is not None:
            stack.push_async_callback(page.close)
        self.commands.web_url = view.url
        stack.push_async_callback(self._end_tasks)
        self._tasks = [asyncio.create_task(watcher.run(), name="watcher"),
                       asyncio.create_task(runner.run(), name="runner")]
        workers = len(executor.workers()) or s.workers
        log.info("ready: inbox %s, outbox %s, models %s, socket %s, %d workers on %s (executor %s)", s.inbox,
                 s.outbox, s.models, s.socket_path, workers, providers.get("detector", "?"), s.executor)
        server.publish(msg.DaemonReady(workers=workers, provider=providers.get("detector", "?")))
        self.ready.set()

    async def main_loop(self) -> None:
        """Until a signal, or until the watcher or the runner ends (an internal error)."""
        stopped = asyncio.create_task(self._stop.wait())
        await asyncio.wait([stopped, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        for task in self._tasks:  # a task that ended by itself ended with an error
            if task.done() and not task.cancelled() and task.exception() is not None:
                self._reason = f"internal error: {task.exception()}"
                log.error("the daemon stops on an internal error", exc_info=task.exception())

    async def shutdown(self) -> None:
        """Take no more work and let running shards finish; the exit stack closes the rest."""
        assert self._runner is not None
        self._runner.stop()
        await self._end_tasks()
        self._drained = await self._drain(self._runner)

    # --- pieces of the stack ----------------------------------------------------------------------

    async def _end_tasks(self) -> None:
        """The watcher is cancelled, the runner's loop stops (its shards are drained separately)."""
        if self._runner is not None:
            self._runner.stop()
        for task in self._tasks[:1]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_server(self, server: ProgressServer) -> None:
        await server.close(self._reason)

    async def _close_executor(self, executor: Executor) -> None:
        await executor.close(kill=not self._drained)

    def _worker_restarted(self, reason: str) -> None:
        self._restarts += 1
        if self._server is not None:
            self._server.publish(msg.WorkerRestarted(reason=reason))

    async def _unless_stopped(self, step: Awaitable[T]) -> T:
        """Await one slow start-up step; a signal meanwhile cancels it and raises StopRequested."""
        work = asyncio.ensure_future(step)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([work, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if work.cancelled():
            raise StopRequested()
        return work.result()

    async def _drain(self, runner: Runner) -> bool:
        """Running shards finish within the stop timeout, or until a second signal forces the stop."""
        drain = asyncio.create_task(runner.drain(self.settings.stop_timeout_seconds))
        forced = asyncio.create_task(self._force.wait())
        await asyncio.wait([drain, forced], return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if drain.done():
            return drain.result()
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
        return await runner.drain(0)

    async def _handle(self, command: msg.Command) -> dict[str, Any] | None:
        if self.commands is not None:
            return await self.commands.handle(command)
        if isinstance(command, msg.Status) and self._starting is not None:
            return msgspec.to_builtins(self._starting)
        raise CommandError("the daemon is starting (its workers are loading the models); try again when "
                           "`aud status` says ready (`aud tail` shows daemon_ready)")

    # --- signals ----------------------------------------------------------------------------------

    def stop(self, reason: str = "stop requested") -> None:
        """Stop gracefully; asked a second time, stop at once."""
        if self._stop.is_set():
            log.warning("stopping now: %s (running shards are ended and run again after a restart)", reason)
            self._force.set()
        else:
            log.info("stopping: %s", reason)
            self._reason = f"{reason}: finishing running shards, then exiting"
        self._stop.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT call ``stop`` while the daemon lives; the previous handlers come back after."""
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.stop, sig.name)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)
