"""The client side: request/subscribe against a live server, ``aud tail`` and ``aud status`` output."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from daemon import protocol as p
from daemon.cli.client import ClientError, render_status, request, subscribe, tail
from daemon.shell.server import CommandError, ProgressServer
from tests.shell.test_server import short_dir

TIMEOUT = 10.0

STATUS = {
    "paused": True,
    "queued": [{"job": 7, "file": "next.mp4"}],
    "running": [
        {"job": 5, "file": "clip.mp4", "frames_done": 100, "frames_total": 275, "fps": 2.4, "eta_s": 73.0},
        {"job": 6, "file": "fresh.mp4", "frames_done": 0, "frames_total": None, "fps": 0.0, "eta_s": None},
    ],
    "recent_failures": [{"job": 3, "file": "bad.mp4", "reason": "cannot decode video"}],
    "workers": {"count": 2, "provider": "CPUExecutionProvider",
                "providers": ["CoreMLExecutionProvider", "CPUExecutionProvider"]},
    "counts": {"done": 12, "failed": 1, "queued": 1},
}


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def make_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=120)


def output(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined]




async def status_handler(command: p.Command) -> dict[str, Any] | None:
    if isinstance(command, p.Status):
        return STATUS
    if isinstance(command, p.Submit):
        return {"job": 8, "file": Path(command.path).name}
    if isinstance(command, p.Cancel):
        raise CommandError(f"no job {command.job}")
    return None


@contextlib.asynccontextmanager
async def serving(handler: Callable[..., Any] = status_handler) -> AsyncIterator[ProgressServer]:
    with short_dir() as directory:
        server = ProgressServer(directory / "aud.sock", handler)
        await server.start()
        try:
            yield server
        finally:
            await server.close()


async def wait_for_subscribers(server: ProgressServer, n: int = 1) -> None:
    deadline = time.monotonic() + 5
    while server.subscriber_count < n:
        assert time.monotonic() < deadline, "client never subscribed"
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def fake_daemon(lines: list[bytes]) -> AsyncIterator[Path]:
    """A stand-in daemon that acknowledges subscribe, sends ``lines`` and hangs up."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = p.decode_command(await reader.readline())
        writer.write(p.encode(p.Reply(id=command.id, ok=True)) + b"".join(lines))
        await writer.drain()
        writer.close()

    with short_dir() as directory:
        path = directory / "aud.sock"
        server = await asyncio.start_unix_server(serve, os.fspath(path))
        async with server:
            yield path


DONE = p.JobDone(job=2, file="other.mp4", csv="/out/other.csv", frames=275, fps=2.4)


# --------------------------------------------------------------------------- request


def test_request_against_live_server() -> None:
    async def main() -> None:
        async with serving() as server:
            reply = await request(server.path, p.Status())
            assert reply.ok and reply.data == STATUS and reply.id == 1
            reply = await request(server.path, p.Submit("/videos/a.mov", id="mine"))
            assert reply.id == "mine" and reply.data == {"job": 8, "file": "a.mov"}
            reply = await request(server.path, p.Cancel(99))
            assert not reply.ok and reply.error == "no job 99" and reply.id == 1

    run(main())


def test_request_without_daemon_raises_client_error() -> None:
    async def main() -> None:
        with short_dir() as directory:
            path = directory / "aud.sock"
            with pytest.raises(ClientError, match=f"no aud daemon is listening on {path}"):
                await request(path, p.Status())
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(os.fspath(path))
            stale.close()
            with pytest.raises(ClientError, match=r"is `aud run` running\?"):
                await request(path, p.Status())
            with pytest.raises(ClientError, match="no aud daemon"):
                async for _ in subscribe(path):
                    pass

    run(main())


def test_request_times_out_with_client_error() -> None:
    async def main() -> None:
        never = asyncio.Event()

        async def handler(command: p.Command) -> None:
            await never.wait()

        async with serving(handler) as server:
            with pytest.raises(ClientError, match="no reply from the aud daemon .* within 0.2 s"):
                await request(server.path, p.Pause(), timeout=0.2)
            never.set()

    run(main())


# --------------------------------------------------------------------------- subscribe / tail


def test_subscribe_yields_events_until_daemon_stopping() -> None:
    async def main() -> None:
        async with serving() as server:

            async def collect() -> list[p.Event]:
                return [event async for event in subscribe(server.path)]

            task = asyncio.create_task(collect())
            await wait_for_subscribers(server)
            queued = p.JobQueued(job=2, file="other.mp4")
            server.publish(queued)
            server.publish(DONE)
            await server.close("bye")
            events = await task
            assert events[:2] == [queued, DONE]
            assert isinstance(events[2], p.DaemonStopping) and events[2].reason == "bye"
            assert len(events) == 3

    run(main())


def tail_while_publishing(console: Console, events: list[p.Event], as_json: bool = False) -> None:
    """``tail`` into ``console`` while a server publishes ``events``, then stops with the reason "bye"."""
    async def main() -> None:
        async with serving() as server:
            task = asyncio.create_task(tail(server.path, console, as_json=as_json))
            await wait_for_subscribers(server)
            for event in events:
                server.publish(event)
            await server.close("bye")
            await task

    run(main())


def test_tail_json_prints_raw_event_lines() -> None:
    console = make_console()
    sent = [p.JobQueued(job=2, file="[bold]odd name.mp4"), DONE]
    tail_while_publishing(console, sent, as_json=True)
    lines = output(console).splitlines()
    assert lines[:2] == [p.encode(e).decode().rstrip("\n") for e in sent]
    assert json.loads(lines[2])["type"] == "daemon_stopping"
    assert len(lines) == 3


SESSION: list[p.Event] = [
    p.JobStarted(job=1, file="clip.mp4", frames_total=275),
    p.JobProgress(job=1, file="clip.mp4", frames_done=100, frames_total=275, fps=2.4, eta_s=70.0),
    p.JobStarted(job=2, file="other.mp4", frames_total=275),
    DONE,
    p.JobFailed(job=3, file="bad.mp4", reason="cannot decode video"),
    p.JobCancelled(job=4, file="later.mp4"),
    p.ExecutorUnavailable(reason="lost the Dask scheduler at tcp://10.0.0.2:8786"),
    p.ExecutorAvailable(),
    p.FileWaiting(file="/in/copying.mp4", reason="not openable as a video yet", fails_in_s=42.0),
    p.FileDuplicate(file="/in/again.mp4", job=2, state="done", moved_to="/in/.done/again.mp4"),
]


def assert_result_lines(text: str) -> None:
    assert "done  other.mp4 -> /out/other.csv (275 frames, 2.4 fps)" in text
    assert "FAILED bad.mp4: cannot decode video" in text
    assert "cancelled later.mp4" in text
    assert "daemon stopping: bye" in text
    assert "executor unavailable, waiting for it: lost the Dask scheduler at tcp://10.0.0.2:8786" in text
    assert "executor available again" in text
    assert "waiting /in/copying.mp4: not openable as a video yet (fails in 42s)" in text
    assert "duplicate /in/again.mp4: same content and settings as job 2 (done); moved to /in/.done/again.mp4" in text


def test_tail_on_a_terminal_renders_bars_and_result_lines() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=120)
    tail_while_publishing(console, SESSION)
    text = output(console)
    assert_result_lines(text)
    assert "100/275 frames" in text and "ETA 1m10s" in text  # the running job's bar
    assert "progress clip.mp4" not in text  # no plain lines on a terminal


def test_tail_through_a_pipe_prints_a_line_per_progress_step() -> None:
    """``aud tail | cat``: no terminal to redraw bars on, so progress is a plain line (rate-limited)."""
    console = make_console()
    tail_while_publishing(console, [
        *SESSION,
        *(p.JobProgress(job=1, file="clip.mp4", frames_done=done, frames_total=275, fps=2.4)
          for done in (101, 102, 103)),  # within the rate limit of the line above: not printed
        p.JobProgress(job=1, file="clip.mp4", frames_done=275, frames_total=275, fps=2.4),
    ])
    text = output(console)
    assert_result_lines(text)
    lines = [line for line in text.splitlines() if line.startswith("progress clip.mp4")]
    assert lines == ["progress clip.mp4 (job 1): 100/275 frames, 2.4 fps, ETA 1m10s",
                     "progress clip.mp4 (job 1): 275/275 frames, 2.4 fps"], text  # the last one always


def test_tail_returns_when_until_matches() -> None:
    async def main() -> None:
        console = make_console()
        async with serving() as server:
            def second_done(event: p.Event) -> bool:
                return isinstance(event, p.JobDone) and event.job == 2

            task = asyncio.create_task(tail(server.path, console, as_json=False, until=second_done))
            await wait_for_subscribers(server)
            server.publish(p.JobDone(job=1, file="first.mp4", csv="/out/first.csv", frames=1, fps=1.0))
            server.publish(DONE)
            await task  # returns although the daemon keeps running
            deadline = time.monotonic() + 5
            while server.subscriber_count:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
        text = output(console)
        assert "first.mp4" in text and "other.mp4" in text and "daemon stopping" not in text

    run(main())


def test_tail_skips_unknown_events_and_raises_when_connection_drops() -> None:
    future = b'{"type": "future_event", "ts": 1.0}\n'

    async def main() -> None:
        async with fake_daemon([future, p.encode(DONE)]) as path:
            console = make_console()
            with pytest.raises(ClientError, match="connection to the aud daemon .* was lost"):
                await tail(path, console, as_json=False)
            assert "done  other.mp4" in output(console)

            console = make_console()
            with pytest.raises(ClientError):
                await tail(path, console, as_json=True)
            assert output(console).splitlines() == [future.decode().strip(), p.encode(DONE).decode().strip()]

            assert [e async for e in subscribe(path)] == [DONE]  # subscribe() just ends at EOF

    run(main())


# --------------------------------------------------------------------------- status


def test_render_status_shows_queue_running_failures_and_workers() -> None:
    console = make_console()
    render_status(STATUS, console)
    text = output(console)
    for expected in ("paused", "clip.mp4", "100/275", "1m13s", "fresh.mp4", "next.mp4", "bad.mp4",
                     "cannot decode video", "2 × CPUExecutionProvider", "CoreMLExecutionProvider",
                     "done 12"):
        assert expected in text, expected


def test_render_status_lists_a_clusters_workers_and_an_unavailable_executor() -> None:
    workers = {"count": 2, "provider": "CPUExecutionProvider", "providers": ["CPUExecutionProvider"],
               "restarts": 0, "executor": "dask", "state": "executor_unavailable",
               "reason": "lost the Dask scheduler at tcp://10.0.0.2:8786",
               "workers": [{"name": "tcp://10.0.0.7:40123", "provider": "CUDAExecutionProvider", "threads": 1,
                            "tasks_done": 17, "busy": True},
                           {"name": "tcp://10.0.0.8:40999", "provider": "CoreMLExecutionProvider", "threads": 2,
                            "tasks_done": 3, "busy": False}]}
    console = make_console()
    render_status({**STATUS, "workers": workers}, console)
    text = output(console)
    assert "dask: unavailable, waiting for it: lost the Dask scheduler at tcp://10.0.0.2:8786" in text
    rows = {cells[0]: cells[1:] for line in text.splitlines()
            if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 5}
    assert rows["tcp://10.0.0.7:40123"] == ["CUDAExecutionProvider", "1", "17", "busy"]
    assert rows["tcp://10.0.0.8:40999"] == ["CoreMLExecutionProvider", "2", "3", ""]


def test_render_status_says_why_the_runner_waits() -> None:
    console = make_console()
    render_status({**STATUS, "runner_waiting": "the job store cannot start job 4: disk I/O error"}, console)
    assert "waiting: the job store cannot start job 4: disk I/O error" in " ".join(output(console).split())


def test_render_status_tolerates_sparse_data_and_long_queues() -> None:
    console = make_console()
    render_status({"paused": False, "queued": [f"/in/{i}.mp4" for i in range(25)]}, console)
    text = output(console)
    assert "running" in text and "no jobs running" in text
    assert "/in/19.mp4" in text and "/in/20.mp4" not in text and "and 5 more" in text
    console = make_console()
    render_status({}, console)
    assert "no jobs running" in output(console)


def test_render_status_shows_the_time_left_of_each_job_and_of_the_queue() -> None:
    data = {**STATUS,
            "queued": [{"job": 7, "file": "next.mp4", "frames_total": 600, "eta_s": 250.0},
                       {"job": 8, "file": "new.mp4", "frames_total": None, "eta_s": None}],
            "running": [{"job": 5, "file": "clip.mp4", "frames_done": 0, "frames_total": 275, "fps": 0.0,
                         "eta_s": 73.0, "eta_basis": "recent_jobs"},
                        {"job": 6, "file": "own.mp4", "frames_done": 50, "frames_total": 275, "fps": 2.0,
                         "eta_s": 112.0, "eta_basis": "job"}],
            "queue_eta_s": 3725.0, "queue_eta_unknown": 1, "recent_fps": 2.4}
    console = make_console()
    render_status(data, console)
    text = output(console)
    assert "~1m13s" in text and "1m52s" in text and "~1m52s" not in text  # the recent jobs' rate is marked
    assert "~4m10s" in text and "not probed" in text  # the queued jobs
    assert "done in 1h02m" in text and "1 job without an estimate" in text and "recent jobs: 2.4 fps" in text


def test_tail_shows_the_estimate_its_basis_and_the_queue() -> None:
    console = make_console()
    tail_while_publishing(console, [
        p.JobProgress(job=1, file="a.mp4", frames_done=0, frames_total=275, fps=0.0, eta_s=70.0,
                      eta_basis="recent_jobs", queue_eta_s=300.0),
        p.JobProgress(job=2, file="b.mp4", frames_done=5, frames_total=275, fps=2.0, eta_s=70.0,
                      eta_basis="job", queue_eta_s=70.0),
        p.JobProgress(job=3, file="c.mp4", frames_done=5, frames_total=275, fps=2.0, eta_s=70.0,
                      eta_basis="job", queue_eta_s=70.0, queue_eta_unknown=2),
    ])
    lines = [line for line in output(console).splitlines() if line.startswith("progress")]
    assert lines == ["progress a.mp4 (job 1): 0/275 frames, 0.0 fps, ETA ~1m10s, queue 5m00s",
                     "progress b.mp4 (job 2): 5/275 frames, 2.0 fps, ETA 1m10s",
                     "progress c.mp4 (job 3): 5/275 frames, 2.0 fps, ETA 1m10s, queue 1m10s + 2 jobs not estimated"]
