"""ProgressServer on a real Unix socket: permissions, framing, fan-out and back-pressure."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from daemon import protocol as p
from daemon.shell import server as server_mod
from daemon.shell.errors import CommandError
from daemon.shell.server import ProgressServer, SendQueue

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
    uvloop = None

TIMEOUT = 10.0
LOOPS = ["asyncio", "uvloop"] if uvloop else ["asyncio"]


# --------------------------------------------------------------------------- helpers


def run(coro: Awaitable[Any], loop: str = "asyncio") -> Any:
    """Run one test coroutine on a fresh event loop, bounded by TIMEOUT."""
    factory = uvloop.new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(coro, TIMEOUT))


@contextlib.contextmanager
def short_dir() -> Any:
    """A private directory whose path fits in sun_path (tmp_path can be too long)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="aud-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def echo_handler(command: p.Command) -> dict[str, Any]:
    return {"command": command.__struct_config__.tag, "id": command.id}


@contextlib.asynccontextmanager
async def serving(handler: Callable[..., Any] = echo_handler, **kwargs: Any) -> AsyncIterator[ProgressServer]:
    """A started server in a fresh short directory; fails the test if the loop saw an unhandled error."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    with short_dir() as directory:
        server = ProgressServer(directory / "aud.sock", handler, **kwargs)
        await server.start()
        try:
            yield server
        finally:
            await server.close()
    assert not errors, errors


class Conn:
    """A raw JSON Lines client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path) -> Conn:
        return cls(*await asyncio.open_unix_connection(os.fspath(path), limit=16 * 1024 * 1024))

    async def send(self, message: bytes | p.Command) -> None:
        self.writer.write(message if isinstance(message, bytes) else p.encode(message))
        await self.writer.drain()

    async def recv(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        assert line.endswith(b"\n"), f"connection closed: {line!r}"
        return json.loads(line)

    async def ask(self, message: bytes | p.Command) -> dict[str, Any]:
        await self.send(message)
        return await self.recv()

    async def subscribe(self) -> None:
        assert (await self.ask(p.Subscribe(id="s")))["ok"]

    def stop_reading(self) -> None:
        """Stop taking bytes off the socket, like a client that hangs (the kernel buffer fills)."""
        self.writer.transport.pause_reading()

    async def at_eof(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(), 5) == b""
        except ConnectionResetError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition on the loop (for server-internal state that has no event to await)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def progress(job: int, done: int, total: int = 100_000) -> p.JobProgress:
    return p.JobProgress(
        job=job, file=f"clip{job}.mp4", frames_done=done, frames_total=total, fps=2.4, eta_s=1.0
    )


# --------------------------------------------------------------------------- socket file


@pytest.mark.parametrize("loop", LOOPS)
def test_socket_is_0600_and_parent_is_made_private(loop: str) -> None:
    async def main() -> None:
        with short_dir() as directory:
            os.chmod(directory, 0o755)
            server = ProgressServer(directory / "aud.sock", echo_handler)
            await server.start()
            try:
                st = os.stat(server.path)
                assert stat.S_ISSOCK(st.st_mode)
                assert stat.S_IMODE(st.st_mode) == 0o600
                assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
                conn = await Conn.open(server.path)
                assert (await conn.ask(p.Status(id=1)))["data"] == {"command": "status", "id": 1}
                await conn.close()
            finally:
                await server.close()
            assert not server.path.exists()

    run(main(), loop)


def test_shared_sticky_directory_is_refused() -> None:
    async def main() -> None:
        with short_dir() as directory:
            os.chmod(directory, 0o1777)
            server = ProgressServer(directory / "aud.sock", echo_handler)
            with pytest.raises(RuntimeError, match="sticky"):
                await server.start()
            assert not server.path.exists()
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o1777

    run(main())


def test_stale_socket_is_replaced() -> None:
    async def main() -> None:
        with short_dir() as directory:
            path = directory / "aud.sock"
            dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            dead.bind(os.fspath(path))
            dead.close()  # what a crashed daemon leaves: a socket file nobody listens on
            os.chmod(path, 0o666)
            with pytest.raises(ConnectionRefusedError):
                await Conn.open(path)
            server = ProgressServer(path, echo_handler)
            await server.start()
            try:
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # a fresh socket, not the stale one
                conn = await Conn.open(path)
                assert (await conn.ask(p.Pause(id=2)))["ok"]
                await conn.close()
            finally:
                await server.close()

    run(main())


def test_second_server_is_refused_and_first_keeps_serving() -> None:
    async def main() -> None:
        async with serving() as first:
            second = ProgressServer(first.path, echo_handler)
            with pytest.raises(RuntimeError, match=f"another aud daemon is listening on {first.path}"):
                await second.start()
            assert stat.S_ISSOCK(os.stat(first.path).st_mode)
            conn = await Conn.open(first.path)
            assert (await conn.ask(p.Status(id=3)))["data"]["id"] == 3
            await conn.close()

    run(main())


def test_path_that_is_not_a_socket_is_never_removed() -> None:
    async def main() -> None:
        with short_dir() as directory:
            path = directory / "aud.sock"
            path.write_text("precious")
            with pytest.raises(RuntimeError, match="not a socket"):
                await ProgressServer(path, echo_handler).start()
            assert path.read_text() == "precious"

    run(main())


def test_close_leaves_a_replacement_socket_alone() -> None:
    async def main() -> None:
        async with serving() as old:
            os.unlink(old.path)
            new = ProgressServer(old.path, echo_handler)
            await new.start()
            await old.close()
            assert old.path.exists()
            conn = await Conn.open(new.path)
            assert (await conn.ask(p.Status(id=4)))["ok"]
            await conn.close()
            await new.close()
            assert not old.path.exists()

    run(main())


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize("loop", LOOPS)
def test_malformed_lines_get_error_replies_and_connection_survives(loop: str) -> None:
    seen: list[p.Command] = []

    async def handler(command: p.Command) -> dict[str, Any]:
        seen.append(command)
        return {"ok": "yes"}

    async def main() -> None:
        async with serving(handler) as server:
            conn = await Conn.open(server.path)
            reply = await conn.ask(b"this is not json\n")
            assert reply["ok"] is False and "invalid JSON" in reply["error"]
            reply = await conn.ask(b'{"type": "reboot", "id": 5}\n')
            assert reply == {
                "type": "reply", "id": 5, "ok": False, "data": None,
                "error": reply["error"],
            }
            assert "unknown command type 'reboot'" in reply["error"]
            reply = await conn.ask(b'{"type": "cancel", "job": "x", "id": "c"}\n')
            assert reply["id"] == "c" and "`$.job`" in reply["error"]
            await conn.send(b"\n   \n")  # blank lines are ignored, not answered
            reply = await conn.ask(b'{"type": "status", "id": 9}\n')
            assert reply == {"type": "reply", "id": 9, "ok": True, "data": {"ok": "yes"}, "error": None}
            assert seen == [p.Status(id=9)]
            await conn.close()

    run(main(), loop)


def test_line_of_exactly_max_line_is_accepted() -> None:
    async def main() -> None:
        async with serving() as server:
            conn = await Conn.open(server.path)
            line = b'{"type":"status","id":1' + b" " * (p.MAX_LINE - 24) + b"}"
            assert len(line) == p.MAX_LINE
            assert (await conn.ask(line + b"\n"))["ok"]
            reply = await conn.ask(b" " + line + b"\n")
            assert reply["error"] == "line too long (max 65536 bytes)"
            assert await conn.at_eof()
            await conn.close()

    run(main())


def _blast(path: Path, size: int) -> bytes:
    """Blocking client: send one huge unterminated line, then collect what comes back until EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(os.fspath(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b'{"type":"submit","path":"' + b"x" * size)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


@pytest.mark.parametrize("loop", LOOPS)
def test_huge_line_gets_error_and_disconnect_while_others_keep_receiving(loop: str) -> None:
    async def main() -> None:
        async with serving() as server:
            watcher = await Conn.open(server.path)
            await watcher.subscribe()
            received = await asyncio.to_thread(_blast, server.path, 10 * 1024 * 1024)
            reply = json.loads(received.splitlines()[0])
            assert reply["ok"] is False
            assert reply["error"] == "line too long (max 65536 bytes)"
            server.publish(p.JobQueued(job=1, file="after.mp4"))
            assert (await watcher.recv())["file"] == "after.mp4"
            await wait_until(lambda: len(server.clients) == 1)
            other = await Conn.open(server.path)
            assert (await other.ask(p.Status(id=1)))["ok"]
            await other.close()
            await watcher.close()

    run(main(), loop)


def test_half_line_and_silence_blocks_nobody() -> None:
    async def main() -> None:
        async with serving() as server:
            silent = await Conn.open(server.path)
            await silent.send(b'{"type": "sta')
            watcher = await Conn.open(server.path)
            await watcher.subscribe()
            asker = await Conn.open(server.path)
            assert (await asker.ask(p.Status(id=1)))["ok"]
            server.publish(p.JobQueued(job=1, file="a.mp4"))
            assert (await watcher.recv())["type"] == "job_queued"
            reply = await silent.ask(b'tus", "id": "late"}\n')  # the connection was only waiting
            assert reply["id"] == "late" and reply["ok"]
            for conn in (silent, watcher, asker):
                await conn.close()

    run(main())


# --------------------------------------------------------------------------- back-pressure


def test_send_queue_coalesces_progress_and_keeps_every_other_event() -> None:
    queue = SendQueue(4)
    sent: list[p.Event] = [p.JobStarted(job=1, file="a")]
    sent += [progress(1, i) for i in range(1, 11)]
    sent += [p.JobQueued(job=2, file="b")]
    sent += [progress(2, i) for i in range(1, 6)]
    sent += [p.JobDone(job=1, file="a", csv="a.csv", frames=10, fps=1.0)]
    for event in sent:
        job = event.job if isinstance(event, p.JobProgress) else None
        assert queue.put(p.encode(event), job)
        assert len(queue) <= 4
    out = [p.decode_event(line) for line in queue.pop_batch()]
    assert [(type(e).__name__, getattr(e, "frames_done", None)) for e in out] == [
        ("JobStarted", None),
        ("JobQueued", None),
        ("JobProgress", 5),  # job 2's newest progress; job 1's was dropped as the oldest
        ("JobDone", None),
    ]
    assert queue.pop_batch() == [] and len(queue) == 0


def test_send_queue_keeps_newest_progress_when_not_dropping() -> None:
    queue = SendQueue(3)
    queue.put(p.encode(progress(1, 0)), 1)
    queue.put(p.encode(progress(2, 0)), 2)
    for i in range(1, 50):
        queue.put(p.encode(progress(1, i)), 1)
        queue.put(p.encode(progress(2, i)), 2)
    got = [(e.job, e.frames_done) for e in map(p.decode_event, queue.pop_batch())]
    assert got == [(1, 0), (2, 49), (1, 49)]  # full from the 3rd line on: newest progress replaces in place


def test_send_queue_drops_progress_when_only_terminal_events_wait() -> None:
    queue = SendQueue(2)
    for job in range(5):
        assert queue.put(p.encode(p.JobQueued(job=job, file="x")))
    assert queue.put(p.encode(progress(9, 1)), 9)
    assert len(queue) == 5 and queue.undroppable == 5 and queue.dropped == 1


def test_send_queue_hard_cap_refuses_undroppable_backlog() -> None:
    queue = SendQueue(2, hard_cap=5)
    assert all(queue.put(p.encode(p.JobQueued(job=i, file="x"))) for i in range(5))
    assert not queue.put(p.encode(p.JobQueued(job=5, file="x")))


def test_send_queue_stays_compact_under_churn() -> None:
    queue = SendQueue(8)
    queue.put(b"terminal\n")
    for job in range(20_000):  # a new job every time: drops, never coalesces
        queue.put(b"p\n", job)
    assert len(queue) == 8
    assert len(queue._items) <= 2 * 8 + 65  # dropped slots are compacted away
    assert queue.pop_batch()[0] == b"terminal\n"


def test_burst_is_coalesced_per_subscriber() -> None:
    async def main() -> None:
        async with serving(client_queue_size=8) as server:
            conn = await Conn.open(server.path)
            await conn.subscribe()
            server.publish(p.JobStarted(job=1, file="a", frames_total=100))
            server.publish(p.JobStarted(job=2, file="b", frames_total=100))
            for i in range(100):  # one loop iteration: the writer cannot run in between
                server.publish(progress(1, i, 100))
                server.publish(progress(2, i, 100))
            server.publish(p.JobDone(job=1, file="a", csv="a.csv", frames=100, fps=2.0))
            server.publish(p.JobCancelled(job=2, file="b"))
            server.publish(p.WorkerRestarted(reason="test"))
            events = []
            while not events or events[-1]["type"] != "worker_restarted":
                events.append(await conn.recv())
            terminal = [e["type"] for e in events if e["type"] != "progress"]
            assert terminal == ["job_started", "job_started", "job_done", "job_cancelled", "worker_restarted"]
            assert len(events) <= 8
            last = {e["job"]: e["frames_done"] for e in events if e["type"] == "progress"}
            assert last == {1: 99, 2: 99}
            ended: set[int] = set()
            for e in events:
                if e["type"] in ("job_done", "job_cancelled"):
                    ended.add(e["job"])
                assert not (e["type"] == "progress" and e["job"] in ended)
            await conn.close()

    run(main())


async def _collect_until(conn: Conn, kind: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != kind:
        events.append(await conn.recv())
    return events


@pytest.mark.parametrize("loop", LOOPS)
def test_stuck_subscriber_never_slows_publish_and_stays_bounded(loop: str) -> None:
    size = 64

    async def main() -> None:
        async with serving(client_queue_size=size) as server:
            stuck = await Conn.open(server.path)
            await stuck.subscribe()
            stuck.stop_reading()
            await wait_until(lambda: server.subscriber_count == 1)
            (stuck_client,) = [c for c in server.clients if c.subscribed]
            normal = await Conn.open(server.path)
            await normal.subscribe()
            collector = asyncio.create_task(_collect_until(normal, "job_done"))

            worst = 0
            started = time.perf_counter()
            for i in range(100_000):
                server.publish(progress(1, i))
                if i % 1000 == 999:
                    worst = max(worst, *(c.queued for c in server.clients))
                    await asyncio.sleep(0)  # let writers and the normal reader run
            server.publish(p.JobDone(job=1, file="clip1.mp4", csv="/out/clip1.csv", frames=100_000, fps=2.4))
            elapsed = time.perf_counter() - started

            events = await collector
            assert events[-1]["type"] == "job_done"
            assert [e["frames_done"] for e in events if e["type"] == "progress"][-1] == 99_999
            assert worst <= size
            assert stuck_client.queued <= size
            assert stuck_client.queue.undroppable == 1  # the job_done waits for it, never dropped
            assert stuck_client.queue.coalesced > 90_000  # it really was stuck
            assert elapsed < 8
            closing = time.perf_counter()
            await server.close()
            assert time.perf_counter() - closing < server_mod.FLUSH_TIMEOUT * 3 + 1
            await normal.close()
            await stuck.close()

    run(main(), loop)


def test_subscriber_owing_too_many_terminal_events_is_disconnected(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server_mod, "HARD_BACKLOG", 100)

    async def main() -> None:
        async with serving(client_queue_size=8) as server:
            stuck = await Conn.open(server.path)
            await stuck.subscribe()
            stuck.stop_reading()
            normal = await Conn.open(server.path)
            await normal.subscribe()
            job = 0
            while server.subscriber_count == 2:
                assert job < 200_000, "stuck subscriber was never disconnected"
                for _ in range(50):
                    job += 1
                    server.publish(p.JobQueued(job=job, file="f.mp4"))
                while (await normal.recv())["job"] != job:  # the normal client keeps up
                    pass
            server.publish(p.JobQueued(job=-1, file="still.mp4"))
            assert (await normal.recv())["file"] == "still.mp4"
            await wait_until(lambda: len(server.clients) == 1)
            await normal.close()
            await stuck.close()

    with caplog.at_level(logging.WARNING, logger="daemon.shell.server"):
        run(main())
    assert any("owes more than 100" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- connections


@pytest.mark.parametrize("loop", LOOPS)
def test_fifty_concurrent_clients_each_get_their_reply(loop: str) -> None:
    async def handler(command: p.Command) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"for": command.id}

    async def one(path: Path, i: int) -> dict[str, Any]:
        conn = await Conn.open(path)
        try:
            return await conn.ask(p.Status(id=i))
        finally:
            await conn.close()

    async def main() -> None:
        async with serving(handler) as server:
            replies = await asyncio.gather(*(one(server.path, i) for i in range(50)))
            assert [(r["id"], r["data"]["for"]) for r in replies] == [(i, i) for i in range(50)]

    run(main(), loop)


def test_max_clients_refuses_extra_connection() -> None:
    async def main() -> None:
        async with serving(max_clients=2) as server:
            conns = [await Conn.open(server.path) for _ in range(2)]
            await wait_until(lambda: len(server.clients) == 2)
            extra = await Conn.open(server.path)
            reply = await extra.recv()
            assert reply["ok"] is False and "too many clients (max 2)" in reply["error"]
            assert await extra.at_eof()
            await extra.close()
            await conns[0].close()
            await wait_until(lambda: len(server.clients) == 1)
            again = await Conn.open(server.path)
            assert (await again.ask(p.Status(id=1)))["ok"]
            for conn in (conns[1], again):
                await conn.close()

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_clients_disconnecting_mid_message_are_cleaned_up(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    release = None

    async def handler(command: p.Command) -> dict[str, Any]:
        if isinstance(command, p.Pause):
            await release.wait()
        return {}

    async def main() -> None:
        nonlocal release
        release = asyncio.Event()
        async with serving(handler) as server:
            half = await Conn.open(server.path)
            await half.send(b'{"type": "status", "id"')
            subscriber = await Conn.open(server.path)
            await subscriber.subscribe()
            waiting = await Conn.open(server.path)
            await waiting.send(p.Pause(id=1))
            await wait_until(lambda: len(server.clients) == 3)
            half.writer.transport.abort()
            subscriber.writer.transport.abort()
            waiting.writer.transport.abort()
            release.set()  # the handler's reply now goes to a closed connection
            await wait_until(lambda: not server.clients)
            assert server.subscriber_count == 0
            server.publish(p.JobQueued(job=1, file="nobody.mp4"))
            survivor = await Conn.open(server.path)
            assert (await survivor.ask(p.Status(id=2)))["ok"]
            await survivor.close()

    with caplog.at_level(logging.DEBUG, logger="daemon.shell.server"):
        run(main(), loop)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("daemon")]


@pytest.mark.parametrize("loop", LOOPS)
def test_half_closed_subscriber_keeps_receiving(loop: str) -> None:
    async def main() -> None:
        async with serving() as server:
            conn = await Conn.open(server.path)
            await conn.subscribe()
            conn.writer.write_eof()  # like `nc -N`: done sending, still listening
            await wait_until(lambda: server.subscriber_count == 1)
            server.publish(p.JobQueued(job=1, file="a.mp4"))
            assert (await conn.recv())["file"] == "a.mp4"
            await conn.close()
            server.publish(p.JobQueued(job=2, file="b.mp4"))  # the write fails: cleaned up
            await wait_until(lambda: not server.clients)

    run(main(), loop)


def test_handler_exception_becomes_error_reply(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(command: p.Command) -> dict[str, Any] | None:
        if isinstance(command, p.Cancel):
            raise CommandError(f"unknown job {command.job}")
        if isinstance(command, p.Status):
            raise ValueError("status is broken")
        if isinstance(command, p.Pause):
            raise KeyError("queue")
        if isinstance(command, p.Submit):
            return {"bad": object()}
        return None

    async def main() -> None:
        async with serving(handler) as server:
            conn = await Conn.open(server.path)
            reply = await conn.ask(p.Cancel(7, id="c"))
            assert reply["id"] == "c" and reply["ok"] is False and reply["error"] == "unknown job 7"
            reply = await conn.ask(p.Status(id="v"))  # a ValueError from inside is a bug, not a refusal
            assert reply["ok"] is False and reply["error"] == "internal error: ValueError: status is broken"
            reply = await conn.ask(p.Pause(id="p"))
            assert reply["ok"] is False and reply["error"] == "internal error: KeyError: 'queue'"
            reply = await conn.ask(p.Submit("/x.mp4", id="s"))
            assert reply["ok"] is False and "cannot encode reply" in reply["error"]
            assert await conn.ask(p.Resume(id="r")) == {
                "type": "reply", "id": "r", "ok": True, "data": None, "error": None,
            }
            await conn.close()

    with caplog.at_level(logging.ERROR, logger="daemon.shell.server"):
        run(main())
    crashes = [r for r in caplog.records if r.exc_info]
    assert len(crashes) == 2 and "Status" in crashes[0].getMessage() and "Pause" in crashes[1].getMessage()
    assert not any("Cancel" in r.getMessage() for r in crashes)  # refusals are not crashes


def test_only_subscribers_get_events_and_reply_comes_first() -> None:
    async def main() -> None:
        async with serving() as server:
            plain = await Conn.open(server.path)
            sub = await Conn.open(server.path)
            await sub.send(p.Subscribe(id="s"))
            await wait_until(lambda: server.subscriber_count == 1)
            server.publish(p.JobQueued(job=1, file="a.mp4"))
            assert (await sub.recv())["type"] == "reply"
            assert (await sub.recv())["type"] == "job_queued"
            assert (await plain.ask(p.Status(id=1)))["type"] == "reply"
            await plain.close()
            await sub.close()

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_close_sends_daemon_stopping_and_removes_socket(loop: str) -> None:
    hang = None

    async def handler(command: p.Command) -> dict[str, Any]:
        await hang.wait()  # never set: close() must not wait for it forever
        return {}

    async def main() -> None:
        nonlocal hang
        hang = asyncio.Event()
        with short_dir() as directory:
            server = ProgressServer(directory / "aud.sock", handler)
            await server.start()
            sub = await Conn.open(server.path)
            await sub.subscribe()
            plain = await Conn.open(server.path)
            await plain.send(p.Status(id=1))
            await wait_until(lambda: len(server.clients) == 2)
            started = time.perf_counter()
            await server.close("test over")
            assert time.perf_counter() - started < 3 * server_mod.FLUSH_TIMEOUT + 1
            event = await sub.recv()
            assert event["type"] == "daemon_stopping" and event["reason"] == "test over"
            assert await sub.at_eof()
            assert await plain.at_eof()
            await sub.close()
            await plain.close()
            assert not server.path.exists()
            assert not server.clients
            await server.close()  # idempotent
            server.publish(p.JobQueued(job=1, file="late.mp4"))  # ignored after close
            with pytest.raises((ConnectionRefusedError, FileNotFoundError)):
                await Conn.open(server.path)

    run(main(), loop)


# --------------------------------------------------------------------------- hostile lines, floods


@pytest.mark.parametrize("loop", LOOPS)
def test_junk_deep_nesting_and_huge_ids_get_clean_replies_without_a_traceback(
        loop: str, caplog: pytest.LogCaptureFixture) -> None:
    """Each used to drop the connection (or make an internal error) with a traceback in the log."""
    seen: list[p.Command] = []

    async def handler(command: p.Command) -> dict[str, Any]:
        seen.append(command)
        return {}

    lines = {
        b'{"type": "bogus"} trailing junk\n': "invalid JSON",
        b'{"type": "status"} {"type": "status"}\n': "invalid JSON",
        b"[" * 30_000 + b"]" * 30_000 + b"\n": "nested too deeply",
        b'{"type": "cancel", "job": 1180591620717411303424, "id": 3}\n': "<= 9223372036854775807",
        b'{"type": "status", "id": 1180591620717411303424}\n': "<= 9223372036854775807",
        b'{"type": "cancel", "job": 0}\n': ">= 1",
    }

    async def main() -> None:
        async with serving(handler) as server:
            conn = await Conn.open(server.path)
            for line, words in lines.items():
                reply = await conn.ask(line)
                assert reply["ok"] is False and words in reply["error"], (line[:40], reply)
            assert (await conn.ask(p.Status(id=1)))["ok"]  # the same connection still answers
            await conn.close()

    with caplog.at_level(logging.DEBUG):
        run(main(), loop)
    assert seen == [p.Status(id=1)]  # none of them reached a command handler
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_malformed_lines_and_refused_clients_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving(max_clients=1) as server:
            conn = await Conn.open(server.path)
            for _ in range(50):
                assert (await conn.ask(b"not json\n"))["ok"] is False
            for _ in range(20):
                extra = await Conn.open(server.path)
                assert "too many clients" in (await extra.recv())["error"]
                await extra.close()
            await conn.close()

    with caplog.at_level(logging.INFO, logger=server_mod.log.name):
        run(main())
    malformed = [r for r in caplog.records if "malformed" in r.getMessage()]
    refused = [r for r in caplog.records if "refusing" in r.getMessage()]
    assert len(malformed) == 1 and len(refused) == 1  # one line a minute each, the rest counted


def test_command_budget_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    budget = server_mod.CommandBudget(rate=100.0, burst=10, clock=lambda: now[0])
    assert [budget.wait_seconds() for _ in range(10)] == [0.0] * 10
    assert budget.wait_seconds() == pytest.approx(0.01)  # the 11th waits one token's time
    assert budget.wait_seconds() == pytest.approx(0.02)
    now[0] += 1.0  # a quiet second refills the bucket (up to the burst)
    assert budget.wait_seconds() == 0.0


def test_rate_limited_log_counts_what_it_did_not_log(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logger = logging.getLogger("aud.test.ratelimit")
    limited = server_mod.RateLimitedLog(logger, every=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger=logger.name):
        for _ in range(5):
            limited(logging.INFO, "bad line %s", "x")
        now[0] = 61.0
        limited(logging.INFO, "bad line %s", "y")
    assert [r.getMessage() for r in caplog.records] == ["bad line x", "bad line y (4 more like this in the last 61 s)"]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_flooding_client_does_not_hold_up_another(loop: str) -> None:
    """One client writes 4,000 commands at once; another's command is answered after a bounded number
    of them (the flooder gets its burst, then its rate; the connection task yields after each), not
    after all 4,000 as when buffered lines were answered without yielding. Counted, not timed."""
    handled: list[str] = []

    async def handler(command: p.Command) -> dict[str, Any]:
        handled.append(str(command.id))
        return {}

    async def main() -> None:
        async with serving(handler, command_rate=200.0, command_burst=100) as server:
            flooder, other = await Conn.open(server.path), await Conn.open(server.path)
            flooder.writer.write(b"".join(p.encode(p.Status(id=f"f{i}")) for i in range(4000)))
            await wait_until(lambda: len(handled) > 0)
            reply = await other.ask(p.Status(id="other"))
            assert reply["ok"]
            before = handled.index("other")
            assert before < 300, f"{before} flood commands were answered first"  # burst 100 + <1 s at 200/s
            flooder.writer.transport.abort()
            await other.close()

    run(main(), loop)
