"""The control-socket wire format: round trips, tags, and the errors bad lines produce."""

from __future__ import annotations

import json
import time

import pytest

from daemon import protocol as p

EVENTS = [
    p.JobQueued(job=1, file="clip.mp4"),
    p.JobStarted(job=1, file="clip.mp4", frames_total=275),
    p.JobStarted(job=2, file="unknown.mp4"),
    p.JobProgress(job=1, file="clip.mp4", frames_done=100, frames_total=275, fps=2.4, eta_s=72.9),
    p.JobProgress(job=1, file="clip.mp4", frames_done=0, frames_total=275, fps=0.0),
    p.JobDone(job=1, file="clip.mp4", csv="/out/clip.csv", frames=275, fps=2.4),
    p.JobFailed(job=3, file="bad.mp4", reason="cannot decode video"),
    p.JobCancelled(job=4, file="later.mp4"),
    p.WorkerRestarted(reason="worker 1 exited with signal 9"),
    p.DaemonStopping(reason="SIGTERM"),
]

COMMANDS = [
    p.Status(),
    p.Status(id=7),
    p.Subscribe(id="sub-1"),
    p.Submit("/videos/a clip.mov", id=1),
    p.Cancel(3),
    p.Pause(),
    p.Resume(id="r"),
]

EXPECTED_EVENT_TAGS = {
    "job_queued", "job_started", "progress", "job_done", "job_failed", "job_cancelled",
    "worker_restarted", "file_waiting", "file_duplicate", "executor_unavailable", "executor_available",
    "daemon_ready", "daemon_stopping",
}


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_round_trip(event: p.Event) -> None:
    line = p.encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert p.decode_event(line) == event
    assert p.decode_server_message(line) == event
    assert json.loads(line)["type"] == event.__struct_config__.tag


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_command_round_trip(command: p.Command) -> None:
    line = p.encode(command)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert p.decode_command(line) == command


def test_tags_are_the_documented_ones() -> None:
    assert set(p.EVENT_TAGS) == EXPECTED_EVENT_TAGS
    assert set(p.COMMAND_TAGS) == {"status", "subscribe", "submit", "cancel", "pause", "resume"}


def test_events_carry_a_timestamp() -> None:
    before = time.time()
    event = json.loads(p.encode(p.JobQueued(job=1, file="a.mp4")))
    assert before <= event["ts"] <= time.time()
    assert event == {"type": "job_queued", "job": 1, "file": "a.mp4", "ts": event["ts"]}


def test_progress_keeps_null_eta_on_the_wire() -> None:
    line = p.encode(p.JobProgress(job=1, file="a", frames_done=1, frames_total=2, fps=1.0))
    assert json.loads(line)["eta_s"] is None


def test_commands_are_compact() -> None:
    assert p.encode(p.Status()) == b'{"type":"status"}\n'
    assert p.encode(p.Cancel(3, id=9)) == b'{"type":"cancel","job":3,"id":9}\n'


def test_reply_round_trip() -> None:
    reply = p.Reply(id="x", ok=True, data={"paused": False, "queued": [], "workers": {"count": 2}})
    line = p.encode(reply)
    assert json.loads(line) == {"type": "reply", "id": "x", "ok": True, "data": reply.data, "error": None}
    assert p.decode_reply(line) == reply
    assert p.decode_server_message(line) == reply
    error = p.Reply(id=3, ok=False, error="unknown job 3")
    assert p.decode_server_message(p.encode(error)) == error


def test_decoding_accepts_crlf_and_missing_newline() -> None:
    assert p.decode_command(b'{"type":"pause"}\r\n') == p.Pause()
    assert p.decode_command(b'{"type":"pause"}') == p.Pause()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json\n", "invalid JSON"),
        (b"\xff\xfe\n", "invalid JSON"),
        (b"[1, 2]\n", "expected a JSON object, got list"),
        (b'"status"\n', "expected a JSON object, got str"),
        (b"{}\n", 'missing "type"'),
        (b'{"type": "reboot"}\n', "unknown command type 'reboot' (expected one of: cancel, pause"),
        (b'{"type": "progress", "job": 1}\n', "unknown command type 'progress'"),
        (b'{"type": "cancel", "job": "3"}\n',
         "invalid 'cancel' command: Expected `int`, got `str` - at `$.job`"),
        (b'{"type": "cancel"}\n', "invalid 'cancel' command: Object missing required field `job`"),
        (b'{"type": "submit", "path": 5}\n', "at `$.path`"),
        (b'{"type": "status", "id": [1]}\n', "at `$.id`"),
        (b'{"type": "status", "id": true}\n', "at `$.id`"),
        (b"\n", "empty line"),
        (b"   \n", "empty line"),
    ],
)
def test_bad_commands_raise_protocol_error(line: bytes, message: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_command(line)
    assert message in str(info.value)


def test_too_long_line_is_rejected_before_parsing() -> None:
    padded = b'{"type":"status"' + b" " * (p.MAX_LINE - 17) + b"}"
    assert len(padded) == p.MAX_LINE
    assert p.decode_command(padded + b"\n") == p.Status()
    with pytest.raises(p.ProtocolError, match=r"line too long \(max 65536 bytes\)"):
        p.decode_command(b" " + padded + b"\n")


def test_event_decoder_rejects_commands_and_unknown_events() -> None:
    with pytest.raises(p.ProtocolError, match="unknown event type 'status'"):
        p.decode_event(p.encode(p.Status()))
    with pytest.raises(p.ProtocolError, match="unknown event type 'future_event'"):
        p.decode_event(b'{"type": "future_event", "ts": 1.0}\n')
    with pytest.raises(p.ProtocolError, match="invalid 'progress' event"):
        p.decode_event(b'{"type": "progress", "job": 1, "file": "a", "ts": 1.0}\n')


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"type": "nope", "id": 5}', 5),
        (b'{"type": "cancel", "job": "x", "id": "c"}', "c"),
        (b'{"id": true}', None),
        (b"[1]", None),
        (b"garbage", None),
    ],
)
def test_salvage_id(line: bytes, expected: object) -> None:
    assert p.salvage_id(line) == expected


@pytest.mark.parametrize("line, words", [
    (b'{"type": "bogus"} x', "invalid JSON"),  # the typed decoder stops early; the junk is still found
    (b'{"type": "status"} {"type": "status"}', "invalid JSON"),
    (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
    (b'{"type": "cancel", "job": 18446744073709551616}', "<= 9223372036854775807"),
    (b'{"type": "cancel", "job": -1}', ">= 1"),
    (b'{"type": "status", "id": 18446744073709551616}', "<= 9223372036854775807"),
])
def test_hostile_lines_are_protocol_errors(line: bytes, words: str) -> None:
    with pytest.raises(p.ProtocolError, match=words):
        p.decode_command(line)
    assert p.salvage_id(line) is None


def test_largest_ids_still_decode() -> None:
    assert p.decode_command(b'{"type": "cancel", "job": 9223372036854775807, "id": -9223372036854775808}') == \
        p.Cancel(job=2**63 - 1, id=-(2**63))
