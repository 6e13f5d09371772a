"""Talking to a running daemon over its control socket: requests, event streams, rendering.

Used by ``aud status``, ``aud tail``, ``aud submit`` and ``aud cancel``; the CLI resolves the
socket path and turns ClientError into a message and an exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .. import protocol
from ..jobs.estimate import Basis
from ..protocol import (
    Command,
    DaemonReady,
    DaemonStopping,
    Event,
    ExecutorAvailable,
    ExecutorUnavailable,
    FileDuplicate,
    FileWaiting,
    JobCancelled,
    JobDone,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
    ProtocolError,
    Reply,
    Subscribe,
    WorkerRestarted,
)

MAX_SERVER_LINE = 16 * 1024 * 1024
"""Longest line accepted from the daemon (a status reply with a long queue can exceed MAX_LINE)."""
MAX_QUEUED_SHOWN = 20
RECENT_JOBS = str(Basis.RECENT_JOBS)  # an estimate's basis: the recent jobs' rate, before the job has its own


class ClientError(RuntimeError):
    """The daemon could not be reached or did not answer; the text is meant for the user."""


# --------------------------------------------------------------------------- transport


async def request(socket_path: Path, command: Command, timeout: float = 10.0) -> Reply:
    """Send one command and return its reply (``ok=False`` replies are returned, not raised)."""
    if command.id is None:
        command = msgspec.structs.replace(command, id=1)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _connect(socket_path)
            try:
                await _send(writer, command)
                return await _read_reply(reader, command.id, socket_path)
            finally:
                await _close(writer)
    except TimeoutError:
        raise ClientError(f"no reply from the aud daemon on {socket_path} within {timeout:g} s") from None


async def subscribe(socket_path: Path) -> AsyncIterator[Event]:
    """Yield every event the daemon publishes, ending after daemon_stopping or at EOF."""
    async with contextlib.aclosing(_event_lines(socket_path)) as lines:
        async for _, event in lines:
            if event is not None:
                yield event


async def _event_lines(socket_path: Path, timeout: float = 10.0) -> AsyncGenerator[tuple[bytes, Event | None], None]:
    """Subscribe and yield ``(raw line, event)``; event is None for a line this client cannot parse."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _connect(socket_path)
    except TimeoutError:
        raise ClientError(f"timed out connecting to the aud daemon on {socket_path}") from None
    try:
        command = Subscribe(id="subscribe")
        async with asyncio.timeout(timeout):
            await _send(writer, command)
            reply = await _read_reply(reader, command.id, socket_path)
        if not reply.ok:
            raise ClientError(f"aud daemon refused to subscribe: {reply.error}")
        while (line := await _readline(reader)) is not None:
            event = _parse_event(line)
            yield line, event
            if isinstance(event, DaemonStopping):
                return
    except TimeoutError:
        raise ClientError(f"no reply from the aud daemon on {socket_path} within {timeout:g} s") from None
    finally:
        await _close(writer)


async def _connect(socket_path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_unix_connection(os.fspath(socket_path), limit=MAX_SERVER_LINE)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ClientError(f"no aud daemon is listening on {socket_path} (is `aud run` running?)") from None
    except PermissionError:
        raise ClientError(f"permission denied on {socket_path} (the daemon runs as another user?)") from None
    except OSError as exc:
        raise ClientError(f"cannot connect to {socket_path}: {exc}") from None


async def _send(writer: asyncio.StreamWriter, command: Command) -> None:
    try:
        writer.write(protocol.encode(command))
        await writer.drain()
    except (ConnectionError, OSError) as exc:
        raise ClientError(f"connection to the aud daemon lost: {exc}") from None


async def _readline(reader: asyncio.StreamReader) -> bytes | None:
    """One complete line from the daemon, or None at EOF."""
    try:
        line = await reader.readline()
    except ValueError:
        raise ClientError(f"the aud daemon sent a line longer than {MAX_SERVER_LINE} bytes") from None
    except (ConnectionError, OSError) as exc:
        raise ClientError(f"connection to the aud daemon lost: {exc}") from None
    return line if line.endswith(b"\n") else None


async def _read_reply(reader: asyncio.StreamReader, request_id: Any, socket_path: Path) -> Reply:
    """Skip anything that is not the reply to ``request_id``."""
    while (line := await _readline(reader)) is not None:
        try:
            message = protocol.decode_server_message(line)
        except ProtocolError:
            continue  # a newer daemon's event type: not our reply
        if isinstance(message, Reply) and message.id in (request_id, None):
            return message
    raise ClientError(f"the aud daemon on {socket_path} closed the connection without replying")


def _parse_event(line: bytes) -> Event | None:
    try:
        return protocol.decode_event(line)
    except ProtocolError:
        return None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


# --------------------------------------------------------------------------- aud tail


async def tail(
    socket_path: Path,
    console: Console,
    *,
    as_json: bool,
    until: Callable[[Event], bool] | None = None,
) -> None:
    """Follow the daemon's events until daemon_stopping or ``until(event)``; ClientError if the link drops.

    ``as_json`` prints every event line exactly as received; otherwise a live progress bar per
    running job and one line per finished, failed or cancelled job.
    """
    view = None if as_json else _TailView(console)
    ended = False
    async with contextlib.aclosing(_event_lines(socket_path)) as lines:
        with view.progress if view and not view.plain else contextlib.nullcontext():
            async for line, event in lines:
                if view is None:
                    console.out(line.decode("utf-8", "replace").rstrip("\n"), highlight=False)
                elif event is not None:
                    view.show(event)
                if event is not None and (isinstance(event, DaemonStopping) or (until and until(event))):
                    ended = True
                    break
    if not ended:
        raise ClientError(f"connection to the aud daemon on {socket_path} was lost")


PLAIN_PROGRESS_SECONDS = 2.0  # without a terminal: at most one progress line per job this often


class _TailView:
    """Rich rendering of an event stream: bars for running jobs, a line for each finished one. Without a
    terminal (``aud tail | cat``, a log file) bars cannot be redrawn, so progress becomes one plain line
    per step, at most one per job every ``PLAIN_PROGRESS_SECONDS`` (and the last one)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.plain = not console.is_terminal
        self.last_line: dict[int, float] = {}
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[frames]}", markup=False),
            TextColumn("{task.fields[speed]}", markup=False),
            TextColumn("{task.fields[eta]}", markup=False),
            console=console,
        )
        self.tasks: dict[int, TaskID] = {}

    def show(self, event: Event) -> None:
        """Update the display for one event."""
        match event:
            case JobQueued():
                self._print(Text.assemble(("queued ", "dim"), event.file, (f"  (job {event.job})", "dim")))
            case JobStarted():
                self._bar(event.job, event.file, 0, event.frames_total)
            case JobProgress() if self.plain:
                self._line(event)
            case JobProgress():
                self._bar(event.job, event.file, event.frames_done, event.frames_total, event.fps,
                          _eta(event.eta_s, event.eta_basis, event.queue_eta_s, event.queue_eta_unknown))
            case JobDone():
                self._end(event.job)
                summary = f" ({event.frames} frames, {event.fps:.1f} fps)"
                self._print(Text.assemble(("done  ", "bold green"), event.file, " -> ", event.csv, summary))
            case JobFailed():
                self._end(event.job)
                self._print(Text.assemble(("FAILED ", "bold red"), event.file, ": ", event.reason))
            case JobCancelled():
                self._end(event.job)
                self._print(Text.assemble(("cancelled ", "yellow"), event.file))
            case WorkerRestarted():
                self._print(Text.assemble(("worker restarted: ", "yellow"), event.reason))
            case FileWaiting():
                wait = f" (fails in {_duration(event.fails_in_s)})" if event.fails_in_s is not None else ""
                self._print(Text.assemble(("waiting ", "yellow"), event.file, ": ", event.reason, wait))
            case FileDuplicate():
                moved = f"; moved to {event.moved_to}" if event.moved_to else ""
                self._print(Text.assemble(("duplicate ", "yellow"), event.file,
                                          f": same content and settings as job {event.job} ({event.state}){moved}"))
            case ExecutorUnavailable():
                self._print(Text.assemble(("executor unavailable, waiting for it: ", "bold yellow"), event.reason))
            case ExecutorAvailable():
                self._print(Text("executor available again: shards run", style="green"))
            case DaemonReady():
                self._print(Text(f"daemon ready: {event.workers} workers on {event.provider}", style="green"))
            case DaemonStopping():
                self._print(Text.assemble(("daemon stopping: ", "bold"), event.reason))

    def _line(self, event: JobProgress) -> None:
        now = time.monotonic()
        final = event.frames_done >= event.frames_total
        if not final and now - self.last_line.get(event.job, -PLAIN_PROGRESS_SECONDS) < PLAIN_PROGRESS_SECONDS:
            return
        self.last_line[event.job] = now
        eta = _eta(event.eta_s, event.eta_basis, event.queue_eta_s, event.queue_eta_unknown)
        eta = f", {eta}" if eta else ""
        self._print(Text(f"progress {event.file} (job {event.job}): {event.frames_done}/{event.frames_total} "
                         f"frames, {event.fps:.1f} fps{eta}"))

    def _bar(
        self,
        job: int,
        file: str,
        done: int,
        total: int | None,
        fps: float | None = None,
        eta: str = "",
    ) -> None:
        """Add or update the bar of one running job."""
        fields: dict[str, Any] = {
            "frames": f"{done}/{total if total is not None else '?'} frames",
            "speed": f"{fps:.1f} fps" if fps is not None else "",
            "eta": eta,
        }
        task = self.tasks.get(job)
        if task is None:
            self.tasks[job] = self.progress.add_task(file, total=total, completed=done, **fields)
        else:
            self.progress.update(task, description=file, total=total, completed=done, **fields)

    def _end(self, job: int) -> None:
        task = self.tasks.pop(job, None)
        if task is not None:
            self.progress.remove_task(task)

    def _print(self, text: Text) -> None:
        self.progress.console.print(text)


def _eta(eta_s: float | None, basis: str | None, queue_eta_s: float | None = None, unknown: int = 0) -> str:
    """"ETA 3m05s", marked "~" when it rests on the recent jobs' rate (the job has none of its own yet),
    and the queue's when it ends later than the job ("+ N jobs" it leaves out: not probed yet)."""
    text = f"ETA {'~' if basis == RECENT_JOBS else ''}{_duration(eta_s)}" if eta_s is not None else ""
    if queue_eta_s is not None and (eta_s is None or queue_eta_s > eta_s + 0.5 or unknown):
        text += f"{', ' if text else ''}queue {_duration(queue_eta_s)}"
        text += f" + {unknown} job{'s' if unknown != 1 else ''} not estimated" if unknown else ""
    return text


# --------------------------------------------------------------------------- aud status


def render_status(data: dict[str, Any], console: Console) -> None:
    """Print a status reply's ``data``: summary, workers (of a cluster), running jobs, queue, recent failures."""
    console.print(_summary(data))
    worker_lines = (data.get("workers") or {}).get("workers") or []
    if worker_lines:
        console.print(_workers_table(worker_lines))
    running = data.get("running") or []
    queued = data.get("queued") or []
    failures = data.get("recent_failures") or []
    console.print(_running_table(running) if running else Text("no jobs running", style="dim"))
    if queued:
        console.print(_queued_table(queued))
    waiting = data.get("waiting") or []
    if waiting:
        console.print(_waiting_table(waiting, data.get("inbox")))
    duplicates = data.get("duplicates") or []
    if duplicates:
        console.print(_duplicates_table(duplicates, data.get("inbox")))
    if failures:
        console.print(_failures_table(failures))


def _shown_path(path: Any, inbox: str | None) -> Text:
    """A path as status shows it: below the inbox relative to it (shorter), never cut (a narrow
    terminal folds it: the distinguishing tail of two long names stays visible)."""
    text = str(path or "")
    if inbox and text.startswith(inbox.rstrip("/") + "/"):
        text = text[len(inbox.rstrip("/")) + 1:]
    return Text(text, overflow="fold")


def _waiting_table(waiting: list[dict[str, Any]], inbox: str | None = None) -> Table:
    """Files in the inbox that are not jobs yet: still copying, or not openable (with the time left)."""
    table = Table(title=f"waiting in the inbox ({len(waiting)})", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("why", overflow="fold")
    table.add_column("fails in", justify="right")
    for item in waiting[:MAX_QUEUED_SHOWN]:
        left = item.get("fails_in_s")
        table.add_row(_shown_path(item.get("file"), inbox), Text(str(item.get("reason", ""))),
                      _duration(left) if left is not None else "")
    return table


def _duplicates_table(duplicates: list[dict[str, Any]], inbox: str | None = None) -> Table:
    table = Table(title="set aside as duplicates (aud submit --force runs them again)", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("same as job", justify="right")
    table.add_column("moved to", overflow="fold")
    for item in duplicates[-MAX_QUEUED_SHOWN:]:
        table.add_row(_shown_path(item.get("file"), inbox), f"{item.get('job')} ({item.get('state')})",
                      _shown_path(item.get("moved_to"), inbox))
    return table


def _summary(data: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if data.get("state") == "starting":
        state = Text("starting: the workers are loading the models", style="yellow")
    elif data.get("paused"):
        state = Text("paused", style="bold yellow")
    else:
        state = Text("running", style="green")
    grid.add_row("daemon", state)
    workers = data.get("workers") or {}
    if workers:
        line = Text(f"{workers.get('count', '?')} × {workers.get('provider', '?')}")
        providers = workers.get("providers") or []
        if providers:
            line.append(f"  (available: {', '.join(map(str, providers))})", style="dim")
        grid.add_row("workers", line)
        executor = workers.get("executor")
        if workers.get("state") == "executor_unavailable":
            grid.add_row("executor", Text(f"{executor or '?'}: unavailable, waiting for it: "
                                          f"{workers.get('reason') or '?'}", style="bold yellow"))
        elif executor:
            grid.add_row("executor", Text(str(executor)))
    if data.get("runner_waiting"):
        grid.add_row("jobs", Text(f"waiting: {data['runner_waiting']}", style="bold yellow"))
    counts = data.get("counts") or {}
    if counts:
        grid.add_row("counts", Text(", ".join(f"{k} {v}" for k, v in counts.items())))
    if data.get("running") or data.get("queued"):
        grid.add_row("queue", _queue_eta(data))
    if data.get("web"):  # web (issue 25): where the live page is
        grid.add_row("page", Text(f"{data['web']}  (`aud open` opens it with its token)"))
    return grid


def _queue_eta(data: dict[str, Any]) -> Text:
    """When the running and queued jobs will be done, and which jobs that leaves out."""
    eta, unknown, recent = data.get("queue_eta_s"), data.get("queue_eta_unknown") or 0, data.get("recent_fps")
    text = Text(f"done in {_duration(eta)}" if eta is not None else "no estimate yet")
    if unknown:
        text.append(f" (+ {unknown} job{'s' if unknown != 1 else ''} without an estimate: not probed yet"
                    f"{'' if recent else ', or no job done yet'})", style="dim")
    if recent:
        text.append(f"  recent jobs: {recent:.1f} fps", style="dim")
    return text


def _running_table(running: list[dict[str, Any]]) -> Table:
    table = Table(title="running", title_justify="left", expand=False,
                  caption="~: at the recent jobs' rate (no shard of the job saved yet)"
                  if any(job.get("eta_basis") == RECENT_JOBS for job in running) else None, caption_justify="left")
    for name, justify in (("job", "right"), ("file", "left"), ("progress", "left"), ("frames", "right"),
                          ("fps", "right"), ("eta", "right")):
        table.add_column(name, justify=justify, overflow="fold" if name == "file" else "ellipsis")  # type: ignore[arg-type]
    for job in running:
        done, total = job.get("frames_done") or 0, job.get("frames_total")
        fps, eta = job.get("fps"), job.get("eta_s")
        table.add_row(
            str(job.get("job", "")),
            Text(str(job.get("file", ""))),
            ProgressBar(total=total, completed=done, width=24) if total else Text("starting", style="dim"),
            f"{done}/{total if total else '?'}",
            f"{fps:.1f}" if fps is not None else "",
            (("~" if job.get("eta_basis") == RECENT_JOBS else "") + _duration(eta)) if eta is not None else "",
        )
        if job.get("waiting"):  # finished, but the outbox cannot take the CSV yet
            table.add_row("", Text(f"waiting: {job['waiting']}", style="yellow"), "", "", "", "")
    return table


def _workers_table(workers: list[dict[str, Any]]) -> Table:
    """One line per worker the executor reports (a Dask cluster's workers)."""
    table = Table(title=f"workers ({len(workers)})", title_justify="left")
    for name, justify in (("worker", "left"), ("provider", "left"), ("threads", "right"),
                          ("tasks done", "right"), ("", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for w in workers:
        table.add_row(Text(str(w.get("name", "?"))), Text(str(w.get("provider", "?"))), str(w.get("threads", "?")),
                      str(w.get("tasks_done", 0)), Text("busy", style="green") if w.get("busy") else "")
    return table


def _queued_table(queued: list[Any]) -> Group | Table:
    table = Table(title=f"queued ({len(queued)})", title_justify="left")
    table.add_column("job", justify="right")
    table.add_column("file", overflow="fold")
    table.add_column("frames", justify="right")
    table.add_column("takes", justify="right")
    for item in queued[:MAX_QUEUED_SHOWN]:
        if isinstance(item, dict):
            frames, eta = item.get("frames_total"), item.get("eta_s")
            table.add_row(str(item.get("job", "")), Text(str(item.get("file", ""))),
                          str(frames) if frames is not None else Text("not probed", style="dim"),
                          "~" + _duration(eta) if eta is not None else "")
        else:
            table.add_row("", Text(str(item)), "", "")
    if len(queued) <= MAX_QUEUED_SHOWN:
        return table
    return Group(table, Text(f"… and {len(queued) - MAX_QUEUED_SHOWN} more", style="dim"))


def _failures_table(failures: list[dict[str, Any]]) -> Table:
    table = Table(title="recent failures", title_justify="left")
    table.add_column("job", justify="right")
    table.add_column("file", overflow="fold")
    table.add_column("reason", style="red", overflow="fold")
    for item in failures:
        job, file, reason = (str(item.get(key, "")) for key in ("job", "file", "reason"))
        table.add_row(job, Text(file), Text(reason))
    return table


def _duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
