"""The control-socket protocol: JSON Lines, one msgspec Struct per line, tagged by ``"type"``.

Server -> client: events (``job_queued``, ``progress`` ...) and ``reply``.
Client -> server: commands (``status``, ``subscribe``, ``submit`` ...), each with an optional ``id``
that the matching ``reply`` echoes. See docs/protocol.md for the full description.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Union

import msgspec

MAX_LINE = 64 * 1024
"""Longest command line the server accepts, in bytes, not counting the newline."""

Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""An integer SQLite (and every JSON reader) can hold; a larger one is refused when decoded."""
JobId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
RequestId = Union[str, Int64, None]


class ProtocolError(ValueError):
    """A line that is not a valid message; the text says what is wrong with it."""


# --------------------------------------------------------------------------- events


class Event(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of everything the daemon publishes; ``ts`` is the wall-clock time it happened."""

    ts: float = msgspec.field(default_factory=time.time)


class JobQueued(Event, tag="job_queued"):
    job: int
    file: str


class JobStarted(Event, tag="job_started"):
    job: int
    file: str
    frames_total: int | None = None


class JobProgress(Event, tag="progress"):
    job: int
    file: str
    frames_done: int  # measured so far, including the shards still running
    frames_total: int
    fps: float
    eta_s: float | None = None  # time left, estimated from eta_basis's rate
    frames_saved: int = 0  # of those, the frames whose results are committed (kept across a crash)
    eta_basis: str | None = None  # "job" (its own rate) or "recent_jobs" (the recent jobs' rate, before its own)
    queue_eta_s: float | None = None  # until every running and queued job is done (see StatusReply)
    queue_eta_unknown: int = 0  # jobs left out of queue_eta_s (see StatusReply)


class JobDone(Event, tag="job_done"):
    job: int
    file: str
    csv: str
    frames: int
    fps: float


class JobFailed(Event, tag="job_failed"):
    job: int
    file: str
    reason: str


class JobCancelled(Event, tag="job_cancelled"):
    job: int
    file: str


class WorkerRestarted(Event, tag="worker_restarted"):
    reason: str


class FileWaiting(Event, tag="file_waiting"):
    """A file in the inbox that is not a job yet: still being copied, or not openable yet (it is
    taken anyway, and fails with a reason, after ``fails_in_s``)."""

    file: str
    reason: str
    fails_in_s: float | None = None


class FileDuplicate(Event, tag="file_duplicate"):
    """A dropped file whose content and settings match a job that exists already: set aside."""

    file: str
    job: int
    state: str
    moved_to: str | None = None


class ExecutorUnavailable(Event, tag="executor_unavailable"):
    reason: str


class ExecutorAvailable(Event, tag="executor_available"):
    pass


class DaemonReady(Event, tag="daemon_ready"):
    """The workers have loaded their models: jobs run from now on."""

    workers: int
    provider: str


class DaemonStopping(Event, tag="daemon_stopping"):
    reason: str


EVENT_TYPES: tuple[type[Event], ...] = (
    JobQueued,
    JobStarted,
    JobProgress,
    JobDone,
    JobFailed,
    JobCancelled,
    WorkerRestarted,
    FileWaiting,
    FileDuplicate,
    ExecutorUnavailable,
    ExecutorAvailable,
    DaemonReady,
    DaemonStopping,
)

# --------------------------------------------------------------------------- commands


class Command(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    """Base of every client request; ``id`` (str or int) is echoed in the reply."""

    id: RequestId = None


class Status(Command, tag="status"):
    pass


class Subscribe(Command, tag="subscribe"):
    pass


class Submit(Command, tag="submit"):
    path: str
    force: bool = False  # a new job even when this content was done with the same settings


class Cancel(Command, tag="cancel"):
    job: JobId


class Pause(Command, tag="pause"):
    pass


class Resume(Command, tag="resume"):
    pass


COMMAND_TYPES: tuple[type[Command], ...] = (Status, Subscribe, Submit, Cancel, Pause, Resume)


class Reply(msgspec.Struct, tag_field="type", tag="reply", kw_only=True):
    """The answer to one command: ``ok`` with optional ``data``, or not ``ok`` with ``error``."""

    id: RequestId = None
    ok: bool
    data: dict[str, Any] | None = None
    error: str | None = None


def _tags(types: tuple[type[msgspec.Struct], ...]) -> tuple[str, ...]:
    return tuple(sorted(str(t.__struct_config__.tag) for t in types))


COMMAND_TAGS = _tags(COMMAND_TYPES)
EVENT_TAGS = _tags(EVENT_TYPES)

_ENCODER = msgspec.json.Encoder()
_COMMAND_DECODER = msgspec.json.Decoder(Union[COMMAND_TYPES])  # type: ignore[valid-type]
_EVENT_DECODER = msgspec.json.Decoder(Union[EVENT_TYPES])  # type: ignore[valid-type]
_SERVER_DECODER = msgspec.json.Decoder(Union[EVENT_TYPES + (Reply,)])  # type: ignore[valid-type]
_REPLY_DECODER = msgspec.json.Decoder(Reply)

# --------------------------------------------------------------------------- helpers


def encode(msg: Event | Command | Reply) -> bytes:
    """One message as one JSON line, ending in ``b"\\n"``."""
    return _ENCODER.encode(msg) + b"\n"


def decode_command(line: bytes) -> Command:
    """Parse one client line; raises ProtocolError saying what is wrong."""
    return _decode(line, _COMMAND_DECODER, "command", COMMAND_TAGS)  # type: ignore[return-value]


def decode_event(line: bytes) -> Event:
    """Parse one event line from the daemon; raises ProtocolError."""
    return _decode(line, _EVENT_DECODER, "event", EVENT_TAGS)  # type: ignore[return-value]


def decode_reply(line: bytes) -> Reply:
    """Parse one reply line from the daemon; raises ProtocolError."""
    return _decode(line, _REPLY_DECODER, "reply", ("reply",))  # type: ignore[return-value]


def decode_server_message(line: bytes) -> Event | Reply:
    """Parse any line the daemon sends (an event or a reply); raises ProtocolError."""
    return _decode(line, _SERVER_DECODER, "message", EVENT_TAGS + ("reply",))  # type: ignore[return-value]


def salvage_id(line: bytes) -> RequestId:
    """The ``id`` of a line that failed to decode, if one can be read, so the error reply echoes it."""
    try:
        obj = msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(obj, dict):
        value = obj.get("id")
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)
                                      and -(2**63) <= value < 2**63):
            return value
    return None


def _decode(line: bytes, decoder: msgspec.json.Decoder, kind: str, tags: tuple[str, ...]) -> Any:
    body = line.rstrip(b"\r\n")
    if len(body) > MAX_LINE:
        raise ProtocolError(f"line too long (max {MAX_LINE} bytes)")
    if not body.strip():
        raise ProtocolError(f"empty line (expected a JSON {kind})")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ProtocolError(_explain(body, kind, tags, exc)) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"invalid {kind}: nested too deeply") from None


def _explain(body: bytes, kind: str, tags: tuple[str, ...], exc: msgspec.ValidationError) -> str:
    """Turn msgspec's validation message into one that names the offending type or field."""
    try:
        obj = msgspec.json.decode(body)  # the typed decoder stops at the first wrong field: the rest of
    except msgspec.DecodeError as decode_error:  # the line may not even be JSON (trailing junk)
        return f"invalid JSON: {decode_error}"
    except RecursionError:
        return f"invalid {kind}: nested too deeply"
    if not isinstance(obj, dict):
        return f"invalid {kind}: expected a JSON object, got {type(obj).__name__}"
    tag = obj.get("type")
    if tag is None:
        return f"invalid {kind}: missing \"type\" (one of: {', '.join(tags)})"
    if tag not in tags:
        return f"unknown {kind} type {tag!r} (expected one of: {', '.join(tags)})"
    return f"invalid {tag!r} {kind}: {exc}"


# --------------------------------------------------------------------------- typed replies


class JobLine(msgspec.Struct, kw_only=True):
    job: int
    file: str


class QueuedJob(JobLine, kw_only=True):
    frames_total: int | None = None  # known once the video has been probed (the job was started before)
    eta_s: float | None = None  # its run at the recent jobs' rate (None: not probed, or no job done yet)


class RunningJob(JobLine, kw_only=True):
    frames_done: int
    frames_total: int
    fps: float
    eta_s: float | None = None  # time left, estimated from eta_basis's rate
    waiting: str | None = None  # finished, but the result cannot be written yet (e.g. the disk is full)
    eta_basis: str | None = None  # "job" (its own rate) or "recent_jobs" (the recent jobs' rate, before its own)


class FailedJob(JobLine, kw_only=True):
    reason: str | None


class WaitingFile(msgspec.Struct, kw_only=True):
    file: str
    reason: str
    fails_in_s: float | None = None


class WorkerLine(msgspec.Struct, kw_only=True):
    name: str
    provider: str
    threads: int
    tasks_done: int
    busy: bool
    memory_mb: float | None = None


class Workers(msgspec.Struct, kw_only=True):
    count: int
    provider: str
    providers: list[str]
    restarts: int
    executor: str  # "process" or "dask"
    state: str  # "ok" or "executor_unavailable"
    reason: str | None = None
    workers: list[WorkerLine] = msgspec.field(default_factory=list)


class StatusReply(msgspec.Struct, kw_only=True):
    state: str  # "starting" (the workers are loading the models) or "ready"
    paused: bool
    queued: list[QueuedJob]
    running: list[RunningJob]
    waiting: list[WaitingFile]
    duplicates: list[FileDuplicate]
    recent_failures: list[FailedJob]
    workers: Workers
    counts: dict[str, int]
    versions: dict[str, str]
    inbox: str
    outbox: str
    web: str | None = None  # the live page's address (without its token: `aud open` adds it)
    queue_eta_s: float | None = None  # until every running and queued job is done, of those with an estimate
    queue_eta_unknown: int = 0  # jobs left out of queue_eta_s: queued ones not probed yet, or no rate known
    recent_fps: float | None = None  # the recent done jobs' median frames/s (the estimates' stand-in rate)
    runner_waiting: str | None = None  # why no job can start or end now (the job store cannot commit), or None


class SubmitReply(JobLine, kw_only=True):
    state: str
    outcome: str  # "queued", "requeued" or "duplicate"


class CancelReply(msgspec.Struct, kw_only=True):
    job: int
    state: str


class PauseReply(msgspec.Struct, kw_only=True):
    paused: bool
