"""The control socket: a Unix-socket JSON Lines server that answers commands and streams events.

Each connection runs as two tasks: the connection task reads and answers commands, a writer task
drains that client's bounded send queue. ``publish`` only appends to those queues, so a slow or
stuck subscriber can stall nothing but its own writer task. A client that floods commands stalls
nothing either: the connection task yields to the loop after every command, and each client gets
at most ``command_rate`` commands a second (after a burst of ``command_burst``); beyond that its
own reading waits, nobody else's. Malformed lines and refused connections are logged, rate-limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import socket
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .. import protocol
from ..protocol import MAX_LINE, Command, DaemonStopping, Event, JobProgress, ProtocolError, Reply, Subscribe
from .errors import CommandError

log = logging.getLogger(__name__)

Handler = Callable[[Command], Awaitable[dict | None]]

HARD_BACKLOG = 10_000
"""Undroppable messages a client may owe before it is disconnected."""
DRAIN_TIMEOUT = 5.0
"""A write that cannot drain for this long marks the client as stalled (logged once)."""
FLUSH_TIMEOUT = 1.0
"""How long a closing connection (or close()) waits for queued messages to go out."""
PROBE_TIMEOUT = 1.0
"""How long start() waits when probing an existing socket for a live daemon."""
COMMAND_RATE = 200.0
"""Commands per second one client is answered at, once its burst is spent (``aud`` sends one or two)."""
COMMAND_BURST = 100
"""Commands one client may send at once before the rate applies."""
LOG_EVERY = 60.0
"""Seconds between two log lines about malformed lines (or refused connections); the rest are counted."""
LISTEN_BACKLOG = 100
"""Connections the kernel queues before the server accepts them (asyncio's own default)."""
WRITE_BATCH = 64 * 1024
"""Bytes handed to the transport per write."""


class _Slot:
    """One queued line; ``job`` is set for droppable progress lines, ``data`` is None once dropped."""

    __slots__ = ("data", "job")

    def __init__(self, data: bytes, job: int | None) -> None:
        self.data: bytes | None = data
        self.job = job


class SendQueue:
    """A client's bounded outgoing queue.

    Once ``size`` messages are waiting, a new progress line replaces the queued progress of the
    same job; failing that the oldest queued progress line is dropped. Every other message (events
    that are not progress, replies) is always kept; ``put`` returns False once more than
    ``hard_cap`` of those are waiting, and the caller disconnects the client.
    """

    def __init__(self, size: int, hard_cap: int = HARD_BACKLOG) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self.hard_cap = hard_cap
        self.dropped = 0
        self.coalesced = 0
        self._items: deque[_Slot] = deque()  # send order; may hold dropped (dead) slots
        self._progress: deque[_Slot] = deque()  # live progress slots, oldest first
        self._latest: dict[int, _Slot] = {}  # job -> newest queued progress slot
        self._dead = 0
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items) - self._dead

    @property
    def undroppable(self) -> int:
        """Queued messages that will never be dropped."""
        return len(self) - len(self._progress)

    def put(self, data: bytes, job: int | None = None) -> bool:
        """Queue one line (``job`` marks a progress line of that job). False: hard cap exceeded."""
        if len(self) >= self.size:
            if job is not None and self._coalesce(job, data):
                return True
            if not self._drop_oldest_progress() and job is not None:
                self.dropped += 1  # only undroppable messages are waiting: drop the newcomer
                return True
        if job is None and self.undroppable >= self.hard_cap:
            return False
        slot = _Slot(data, job)
        self._items.append(slot)
        if job is not None:
            self._progress.append(slot)
            self._latest[job] = slot
        self._ready.set()
        return True

    def pop_batch(self, max_bytes: int = WRITE_BATCH) -> list[bytes]:
        """Take queued lines, oldest first, up to about ``max_bytes`` (at least one if any)."""
        batch: list[bytes] = []
        size = 0
        while self._items and size < max_bytes:
            slot = self._items.popleft()
            if slot.data is None:
                self._dead -= 1
                continue
            if slot.job is not None:
                self._progress.popleft()  # live progress leaves in FIFO order: it is this slot
                self._forget(slot)
            batch.append(slot.data)
            size += len(slot.data)
        if not self._items:
            self._ready.clear()
        return batch

    async def wait(self) -> None:
        """Return once something is queued (or ``wake`` was called)."""
        await self._ready.wait()

    def wake(self) -> None:
        """Wake a waiter even though nothing was queued."""
        self._ready.set()

    def _coalesce(self, job: int, data: bytes) -> bool:
        slot = self._latest.get(job)
        if slot is None:
            return False
        slot.data = data
        self.coalesced += 1
        return True

    def _drop_oldest_progress(self) -> bool:
        if not self._progress:
            return False
        slot = self._progress.popleft()
        self._forget(slot)
        slot.data = None
        self._dead += 1
        self.dropped += 1
        if self._dead > 64 and self._dead > len(self):
            self._items = deque(s for s in self._items if s.data is not None)
            self._dead = 0
        return True

    def _forget(self, slot: _Slot) -> None:
        if slot.job is not None and self._latest.get(slot.job) is slot:
            del self._latest[slot.job]


class CommandBudget:
    """A token bucket: ``burst`` commands at once, then ``rate`` a second; ``spend`` waits when empty."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def wait_seconds(self) -> float:
        """Take one command's token; how long to wait before answering it (0: now)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def spend(self) -> None:
        """Always yields to the loop (other clients' commands, the runner), sleeping when over budget."""
        await asyncio.sleep(self.wait_seconds())


class RateLimitedLog:
    """One log line per ``every`` seconds for a recurring condition, saying how many were not logged."""

    def __init__(self, logger: logging.Logger, every: float = LOG_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every = every
        self._clock = clock
        self._last: float | None = None
        self.suppressed = 0

    def __call__(self, level: int, message: str, *args: Any) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self.every:
            self.suppressed += 1
            return
        if self.suppressed:
            message += f" ({self.suppressed} more like this in the last {now - self._last:.0f} s)"  # type: ignore[operator]
        self._last, self.suppressed = now, 0
        self.logger.log(level, message, *args)


class ClientConnection:
    """One connected client: its stream pair, send queue and writer task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, queue_size: int) -> None:
        self.reader = reader
        self.writer = writer
        self.queue = SendQueue(queue_size, HARD_BACKLOG)
        self.subscribed = False
        self.stalled = False
        self._finishing = False
        self._writer_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ClientConnection subscribed={self.subscribed} queued={len(self.queue)}>"

    @property
    def queued(self) -> int:
        """Messages waiting to be written."""
        return len(self.queue)

    def start(self) -> None:
        """Start the writer task."""
        self._writer_task = asyncio.get_running_loop().create_task(self._write_loop())

    def send(self, data: bytes, job: int | None = None) -> bool:
        """Queue one line; False when the client owes too much and must be disconnected."""
        if self._finishing and self.writer_done:
            return True
        return self.queue.put(data, job)

    @property
    def writer_task(self) -> asyncio.Task[None] | None:
        return self._writer_task

    @property
    def writer_done(self) -> bool:
        return self._writer_task is None or self._writer_task.done()

    async def wait_writer(self) -> None:
        """Wait until the writer task ends (peer gone, or finish() and the queue is empty)."""
        if self._writer_task is not None:
            await asyncio.shield(self._writer_task)

    def finish(self) -> None:
        """Let the writer task end once the queue is empty."""
        self._finishing = True
        self.queue.wake()

    def abort(self) -> None:
        """Drop the connection now, discarding anything unsent."""
        if self._writer_task is not None:
            self._writer_task.cancel()
        self.writer.transport.abort()

    def shut(self) -> None:
        """Close gracefully if everything was written, else abort."""
        if self.writer_done and self.writer.transport.get_write_buffer_size() == 0:
            self.writer.transport.close()
        else:
            self.abort()

    async def close(self, flush_timeout: float = FLUSH_TIMEOUT) -> None:
        """Flush what is queued (bounded), then close the transport."""
        self.finish()
        await _wait_tasks([self._writer_task] if self._writer_task else [], flush_timeout)
        self.shut()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(flush_timeout):
                await self.writer.wait_closed()

    async def _write_loop(self) -> None:
        try:
            while True:
                batch = self.queue.pop_batch()
                if batch:
                    self.writer.write(b"".join(batch))
                    await self._drain()
                elif self._finishing:
                    return
                else:
                    await self.queue.wait()
        except (ConnectionError, OSError, RuntimeError) as exc:
            log.debug("client gone while writing: %r", exc)

    async def _drain(self) -> None:
        while True:
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await self.writer.drain()
            except TimeoutError:
                if not self.stalled:
                    log.info("a control-socket client stopped reading; its progress events are coalesced")
                self.stalled = True
                continue
            self.stalled = False
            return


class ProgressServer:
    """Serve ``handler`` and stream published events on the Unix socket ``path``."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        client_queue_size: int = 256,
        max_clients: int = 256,
        command_rate: float = COMMAND_RATE,
        command_burst: int = COMMAND_BURST,
    ) -> None:
        self.path = Path(path)
        self._handler = handler
        self._client_queue_size = client_queue_size
        self._max_clients = max_clients
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[ClientConnection, asyncio.Task[None]] = {}
        self._subscribers: set[ClientConnection] = set()
        self._socket_id: tuple[int, int] | None = None
        self._closing = False
        self._command_rate = command_rate
        self._command_burst = command_burst
        self._log_malformed = RateLimitedLog(log)
        self._log_refused = RateLimitedLog(log)
        self.listeners: list[Callable[[Event], None]] = []  # in-process subscribers (the page's view)

    # ------------------------------------------------------------------ public API

    @property
    def clients(self) -> tuple[ClientConnection, ...]:
        """Currently connected clients."""
        return tuple(self._clients)

    @property
    def subscriber_count(self) -> int:
        """Clients that sent ``subscribe`` and are still connected."""
        return len(self._subscribers)

    async def start(self) -> None:
        """Bind the socket (mode 0600) and start accepting; replaces a stale socket file."""
        if self._server is not None:
            raise RuntimeError("ProgressServer already started")
        self._secure_parent()
        await self._remove_stale_socket()
        sock = self._bind()
        try:
            self._server = await asyncio.start_unix_server(self._serve_client, sock=sock, limit=MAX_LINE)
        except BaseException:
            sock.close()
            self._unlink_socket()
            raise
        log.info("control socket listening on %s", self.path)

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every subscriber; never blocks, never raises for a bad client."""
        for listen in self.listeners:
            listen(event)
        if self._closing or not self._subscribers:
            return
        self._fan_out(event)

    async def close(self, reason: str = "shutdown") -> None:
        """Tell subscribers the daemon is stopping, flush briefly, close everything, remove the socket."""
        if self._server is None or self._closing:
            return
        self._fan_out(DaemonStopping(reason=reason))
        self._closing = True
        self._server.close()
        await self._disconnect_all()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FLUSH_TIMEOUT):
                await self._server.wait_closed()
        self._unlink_socket()
        log.info("control socket closed (%s)", reason)

    async def _disconnect_all(self) -> None:
        """Let every client's queue drain (bounded), close the connections, end their tasks."""
        connections = dict(self._clients)
        for client in connections:
            client.finish()
        await _wait_tasks([c.writer_task for c in connections if c.writer_task], FLUSH_TIMEOUT)
        for client in connections:
            client.shut()
        pending = await _wait_tasks(list(connections.values()), FLUSH_TIMEOUT)
        for task in pending:  # a handler that does not return
            task.cancel()
        await _wait_tasks(list(pending), FLUSH_TIMEOUT)

    # ------------------------------------------------------------------ socket file

    def _secure_parent(self) -> None:
        """Make sure nobody but us can reach the socket's directory (chmod 0700 if it is ours)."""
        parent = self.path.parent
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(parent)
        if not st.st_mode & 0o077:
            return
        if st.st_uid != os.getuid():
            raise RuntimeError(
                f"{parent} is accessible to other users and not owned by us; "
                "refusing to create the control socket there"
            )
        if st.st_mode & stat.S_ISVTX:
            raise RuntimeError(
                f"{parent} is a shared directory (sticky bit set); use a private state directory"
            )
        log.warning("state directory %s was accessible to other users; chmod 0700", parent)
        os.chmod(parent, 0o700)

    async def _remove_stale_socket(self) -> None:
        """Remove a socket file nobody listens on; refuse if a daemon is there or it is not a socket."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise RuntimeError(f"{self.path} exists and is not a socket; refusing to remove it")
        if await _is_listening(self.path):
            raise RuntimeError(f"another aud daemon is listening on {self.path}")
        log.info("removing stale control socket %s", self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _bind(self) -> socket.socket:
        """Bind a private name, chmod 0600 and listen, then link it to ``path``: the socket appears
        only once it accepts (a client that sees the file can connect), never with a wider mode, and
        never over someone else's (link refuses an existing name)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        try:
            sock.bind(os.fspath(staging))
            try:
                os.chmod(staging, 0o600)
                sock.listen(LISTEN_BACKLOG)
                os.link(staging, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(staging)
            st = os.stat(self.path)
            self._socket_id = (st.st_dev, st.st_ino)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EEXIST):
                raise RuntimeError(f"another aud daemon is listening on {self.path}") from exc
            raise RuntimeError(f"cannot create the control socket {self.path}: {exc}") from exc
        return sock

    def _unlink_socket(self) -> None:
        """Remove the socket file, unless it has since been replaced by someone else's."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._socket_id:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    # ------------------------------------------------------------------ connections

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = ClientConnection(reader, writer, self._client_queue_size)
        if self._closing or len(self._clients) >= self._max_clients:
            await self._refuse(client)
            return
        self._clients[client] = asyncio.current_task()  # type: ignore[assignment]
        client.start()
        try:
            if await self._read_commands(client) and client.subscribed and not _hung_up(writer):
                await client.wait_writer()  # half-closed subscriber: stream until the peer goes away
        except asyncio.CancelledError:
            pass  # close() gave up on a hung handler; end quietly (3.11 logs cancelled callbacks)
        except Exception:  # pragma: no cover - nothing above should raise; keep the server alive
            log.exception("control-socket connection failed")
        finally:
            self._clients.pop(client, None)
            self._subscribers.discard(client)
            await client.close()

    async def _refuse(self, client: ClientConnection) -> None:
        if not self._closing:
            self._log_refused(logging.WARNING, "refusing a control-socket client: %d clients connected (max %d)",
                              len(self._clients), self._max_clients)
        error = "daemon is stopping" if self._closing else f"too many clients (max {self._max_clients})"
        client.writer.write(protocol.encode(Reply(ok=False, error=error)))
        client.writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FLUSH_TIMEOUT):
                await client.writer.wait_closed()

    async def _read_commands(self, client: ClientConnection) -> bool:
        """Answer commands until EOF (True) or a protocol violation / lost connection (False)."""
        budget = CommandBudget(self._command_rate, self._command_burst)
        while True:
            try:
                line = await client.reader.readline()
            except ValueError:  # the StreamReader limit (MAX_LINE) was overrun
                self._log_malformed(logging.INFO, "control socket: a line longer than %d bytes; client dropped",
                                    MAX_LINE)
                client.send(protocol.encode(Reply(ok=False, error=f"line too long (max {MAX_LINE} bytes)")))
                return False
            except (ConnectionError, OSError):
                return False
            if not line.endswith(b"\n"):
                return True  # EOF, possibly in the middle of a line: drop the fragment
            if not line.strip():
                continue
            reply = await self._answer(client, line)
            if not client.send(_encode_reply(reply)):
                return False
            await budget.spend()  # yield between commands; a flooding client waits, alone

    async def _answer(self, client: ClientConnection, line: bytes) -> Reply:
        try:
            command = protocol.decode_command(line)
        except ProtocolError as exc:
            self._log_malformed(logging.INFO, "control socket: a malformed line: %s", exc)
            return Reply(id=protocol.salvage_id(line), ok=False, error=str(exc))
        if isinstance(command, Subscribe):
            client.subscribed = True  # the reply is queued before any event: no await in between
            self._subscribers.add(client)
            return Reply(id=command.id, ok=True)
        try:
            data = await self._handler(command)
        except CommandError as exc:  # a refusal the user caused, not a crash
            return Reply(id=command.id, ok=False, error=str(exc))
        except Exception as exc:
            log.exception("control command %r failed", command)
            return Reply(id=command.id, ok=False, error=f"internal error: {type(exc).__name__}: {exc}")
        return Reply(id=command.id, ok=True, data=data)

    def _fan_out(self, event: Event) -> None:
        data = protocol.encode(event)
        job = event.job if isinstance(event, JobProgress) else None
        for client in list(self._subscribers):
            if not client.send(data, job):
                log.warning(
                    "disconnecting a subscriber that owes more than %d events", client.queue.hard_cap
                )
                self._subscribers.discard(client)
                client.abort()


def _encode_reply(reply: Reply) -> bytes:
    """Encode a reply; a handler result that cannot be encoded becomes an error reply."""
    try:
        return protocol.encode(reply)
    except (TypeError, ValueError) as exc:
        log.error("cannot encode reply data: %s", exc)
        return protocol.encode(Reply(id=reply.id, ok=False, error=f"cannot encode reply: {exc}"))


def _hung_up(writer: asyncio.StreamWriter) -> bool:
    """After EOF: did the peer close completely (POLLHUP), rather than just shut down its write side?"""
    sock = writer.get_extra_info("socket")
    if sock is None or writer.transport.is_closing() or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLOUT)
    return any(ev & (select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0))


async def _is_listening(path: Path) -> bool:
    """Does something accept connections on ``path``? (ECONNREFUSED means a stale file.)"""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            _, writer = await asyncio.open_unix_connection(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except TimeoutError:
        return True  # bound and listening, just not accepting quickly
    except OSError as exc:
        raise RuntimeError(f"cannot probe existing socket {path}: {exc}") from exc
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


async def _wait_tasks(tasks: list[asyncio.Task[Any]], timeout: float) -> set[asyncio.Task[Any]]:
    """Wait up to ``timeout`` for ``tasks``; return those still pending."""
    tasks = [t for t in tasks if not t.done()]
    if not tasks:
        return set()
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    return pending
