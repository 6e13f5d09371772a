"""The daemon's lifecycle: start, serve, stop. Nothing else.

``Daemon.run()`` starts the pieces on one asyncio loop and stops them in reverse order:

* the job store, the executor (workers loaded before the first video), the progress socket;
* the runner (``daemon.jobs.runner``): plans, dispatches, retries, assembles and writes every job;
* intake (``intake.py``): the inbox watcher's settled files and ``aud submit`` become jobs;
* commands (``commands.py``): the socket's status, submit, cancel, pause and resume.

SIGTERM or Ctrl-C stops taking work, lets running shards finish (each is committed as it ends) for
up to ``stop_timeout_seconds``, closes the socket with ``daemon_stopping`` and exits 0. A second
signal stops at once: running shards are ended and run again after a restart. The previous signal
handlers are restored on the way out.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from .. import protocol as msg
from ..config import Settings
from ..core.models import ModelSet, load_model_set
from ..core.pipeline import roles_for
from ..core.providers import choose
from ..core.video import quiet_decoder_logs
from ..jobs.executor import Executor, make_executor
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


def void(_: object) -> None:
    """Drop a value (a callback's handle) where nothing is returned."""


class AlreadyRunning(RuntimeError):
    """Another daemon holds this state directory."""


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


def starting_status(s: Settings, store: JobStore) -> msg.StatusReply:
    """Status while the workers load their models: the store's counts, nothing running yet."""
    return msg.StatusReply(
        state="starting", paused=False, queued=[], running=[], waiting=[], duplicates=[], recent_failures=[],
        workers=msg.Workers(count=0, provider="?", providers=[], restarts=0, executor=s.executor, state="ok"),
        counts=store.counts(), versions={}, inbox=str(s.inbox), outbox=str(s.outbox))


def check_setup(settings: Settings) -> ModelSet:
    """Before anything starts: the provider is there and the model files are, hashed (their hashes
    are part of every job's key and of every sidecar)."""
    choose(settings.provider, settings.coreml_cache_dir)
    return load_model_set(settings.models, roles_for(settings.au45), signatures=False)


class Daemon:
    def __init__(self, settings: Settings,
                 make: Callable[[Settings, Callable[[str], None]], Executor] = make_executor):
        self.settings = settings
        self._make_executor = make
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._reason = "shutdown"
        self.commands: Commands | None = None
        self._starting: msg.StatusReply | None = None  # what status says until the workers are ready

    async def run(self) -> int:
        s = self.settings
        s.ensure_dirs()
        quiet_decoder_logs()
        lock = StateLock(s.state)
        lock.acquire()
        try:
            models = check_setup(s)
            store = JobStore(s.database_path)
            try:
                return await self._serve(models, store)
            finally:
                store.close()
        finally:
            lock.release()

    async def _serve(self, models: ModelSet, store: JobStore) -> int:
        s = self.settings
        server = ProgressServer(s.socket_path, self._handle)
        restarts = 0

        def restarted(reason: str) -> None:
            nonlocal restarts
            restarts += 1
            server.publish(msg.WorkerRestarted(reason=reason))

        executor = self._make_executor(s, restarted)  # a settings error (path_map, ...) before the socket exists
        self._starting = starting_status(s, store)
        await server.start()
        try:
            providers = await executor.start()  # every worker loads its models now, not at the first video
        except BaseException as exc:
            await server.close(f"the workers could not start: {exc}")
            await executor.close(kill=True)
            raise
        outbox = Outbox(s)
        config = runner_config(s, models, providers, output_retry_seconds=s.rescan_seconds)
        runner = Runner(store, executor, config, outbox, publish=server.publish)
        runner.providers = providers
        await runner.warm_up()  # the first result's plot should not pay for loading matplotlib and its fonts
        intake = Intake(s, store, outbox, config.key, server.publish, runner.wake)
        loop = asyncio.get_running_loop()
        outbox.forget = lambda path: void(loop.call_soon_threadsafe(intake.forget, path))  # moves: in threads
        self.commands = Commands(s, runner, intake, executor, lambda: restarts)
        # web (issue 25): the morning view, fed by the socket's events: the live page and the outbox's index.html
        view = MorningView(s, store, self._handle)
        server.listeners.append(view.publish)
        await view.seed()
        page = await start_page(view, s, self._handle, store)
        self.commands.web_url = view.url
        watcher = intake.watch()
        restore = self._capture_signals()
        tasks = [asyncio.create_task(watcher.run(), name="watcher"), asyncio.create_task(runner.run(), name="runner")]
        log.info("ready: inbox %s, outbox %s, models %s, socket %s, %d workers on %s (executor %s)", s.inbox,
                 s.outbox, s.models, s.socket_path, len(executor.workers()) or s.workers,
                 providers.get("detector", "?"), s.executor)
        server.publish(msg.DaemonReady(workers=len(executor.workers()) or s.workers,
                                       provider=providers.get("detector", "?")))
        try:
            stopped = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:  # a task that ended by itself ended with an error: raise it below
                if task.done() and not task.cancelled() and task.exception() is not None:
                    self._reason = f"internal error: {task.exception()}"
                    log.error("the daemon stops on an internal error", exc_info=task.exception())
            runner.stop()
            tasks[0].cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            finished = await self._drain(runner)
            runner.close()
            if page is not None:  # web (issue 25)
                await page.close()
            await view.close()  # web (issue 25): the last index.html is written
            await server.close(self._reason)
            await executor.close(kill=not finished)
        finally:
            restore()
        return 0

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

    def stop(self, reason: str = "stop requested") -> None:
        """Stop gracefully; asked a second time, stop at once."""
        if self._stop.is_set():
            log.warning("stopping now: %s (running shards are ended and run again after a restart)", reason)
            self._force.set()
        else:
            log.info("stopping: %s", reason)
            self._reason = f"{reason}: finishing running shards, then exiting"
        self._stop.set()

    def _capture_signals(self) -> Callable[[], None]:
        """SIGTERM and SIGINT call ``stop``; returns what restores the previous handlers."""
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.stop, sig.name)

        def restore() -> None:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)

        return restore
