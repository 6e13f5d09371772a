"""An in-process daemon for unit tests: the real ``Daemon`` on the in-process executor (no worker
processes, no real model: shards are computed by ``fake_compute`` from the task alone), tiny models
for the start-up checks, short folders (a Unix socket path must stay under ~100 bytes)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from daemon import protocol as msg
from daemon.config import Settings
from daemon.core.models import ModelSet
from daemon.jobs.inline import InlineExecutor
from daemon.shell.app import Daemon
from tests.fakeshards import fake_compute


@contextlib.contextmanager
def short_dir():
    """A folder with a short path (the socket lives in it)."""
    path = Path(tempfile.mkdtemp(prefix="aud", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def settings_for(root: Path, models: Path, **overrides) -> Settings:
    values = dict(inbox=root / "in", outbox=root / "out", state=root / "st", models=models, workers=1,
                  provider="cpu", plots=False, settle_seconds=0.1, rescan_seconds=1.0, stop_timeout_seconds=30.0)
    return Settings(**{**values, **overrides})


class InlineFactory:
    """The executor factory handed to ``Daemon``: remembers what it made."""

    def __init__(self, compute=fake_compute, capacity: int = 1):
        self.compute = compute
        self.capacity = capacity
        self.made: list[InlineExecutor] = []
        self.closes: list[bool] = []  # each close's ``kill``

    def __call__(self, settings: Settings, on_restart: Callable[[str], None],
                 models: ModelSet | None = None) -> InlineExecutor:
        executor = InlineExecutor(self.compute, self.capacity)
        close = executor.close

        async def recorded_close(*, kill: bool = False) -> None:
            self.closes.append(kill)
            await close(kill=kill)

        executor.close = recorded_close  # type: ignore[method-assign]
        self.made.append(executor)
        return executor


@contextlib.asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[asyncio.Task]:
    """The daemon running as a task, ready; stopped (gracefully) and awaited on the way out."""
    task = asyncio.create_task(daemon.run())
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED, timeout=60)
    if task.done():
        ready.cancel()
        task.result()  # raises the start-up error
        raise AssertionError("the daemon ended before it was ready")
    assert ready.done(), "the daemon was not ready within 60 s"
    try:
        yield task
    finally:
        if not task.done():
            daemon.stop("test over")
        assert await asyncio.wait_for(task, 60) == 0


class Connection:
    """A raw control-socket client (the protocol's own encoding, no client module)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path) -> Connection:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=16 * 1024 * 1024)
        return cls(reader, writer)

    async def send(self, command: msg.Command) -> None:
        self.writer.write(msg.encode(command))
        await self.writer.drain()

    async def reply(self) -> msg.Reply:
        """The next reply (events in between are skipped)."""
        while True:
            line = await self.reader.readline()
            assert line, "the daemon closed the connection"
            message = msg.decode_server_message(line)
            if isinstance(message, msg.Reply):
                return message

    async def ask(self, command: msg.Command) -> msg.Reply:
        await self.send(command)
        return await self.reply()

    async def event(self, kind: type[msg.Event]) -> msg.Event:
        while True:
            line = await self.reader.readline()
            assert line, "the daemon closed the connection"
            message = msg.decode_server_message(line)
            if isinstance(message, kind):
                return message

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
