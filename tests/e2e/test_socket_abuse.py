"""The control socket of a real `aud run` against misbehaving clients.

In every case the daemon answers or drops that one client and keeps serving the others: afterwards a
``status`` request is answered and a normal subscriber still receives the events of a new job.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import require_shared
from tests.e2e.checks import assert_alive, no_face_video
from tests.e2e.daemonproc import DaemonProcess, Subscriber, request

pytestmark = pytest.mark.slow
NEEDS = ("models/openface3/retinaface.onnx", "models/openface3/mtl.onnx", "models/openface3/star.onnx")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One daemon, a well-behaved subscriber, and a folder for the videos the health checks submit."""
    require_shared(*NEEDS)
    d = DaemonProcess(workers=1).start()
    sub = d.subscribe()
    yield d, sub, tmp_path_factory.mktemp("submitted")
    sub.close()
    d.stop()
    shutil.rmtree(d.root, ignore_errors=True)
    assert d.proc.returncode == 0, "".join(d.log[-40:])
    assert "Traceback" not in "".join(d.log), "".join(d.log)  # every case handled, none crashed a task


_seeds = iter(range(100, 10_000))


def assert_serving(d: DaemonProcess, sub: Subscriber, folder: Path, *others: Subscriber) -> None:
    """``status`` is answered, and a submitted video's events reach ``sub`` (and ``others``)."""
    assert_alive(d)
    seed = next(_seeds)
    video = no_face_video(folder / f"health-{seed}.mp4", seed)
    reply = d.request({"type": "submit", "id": seed, "path": str(video)})
    assert reply["ok"] and reply["id"] == seed, reply
    job = reply["data"]["job"]
    for s in (sub, *others):
        done = s.wait_for(lambda e: e["type"] in ("job_done", "job_failed") and e.get("job") == job, 60)
        assert done["type"] == "job_done", done


def connect(d: DaemonProcess, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(d.socket_path))
    return sock


def read_reply(sock: socket.socket) -> dict:
    with sock.makefile("rb") as f:
        for line in f:
            message = json.loads(line)
            if message["type"] == "reply":
                return message
    raise AssertionError("connection closed before a reply")


def test_socket_is_0600_in_a_directory_only_the_user_can_enter(served):
    d, _, _ = served
    sock_mode = os.stat(d.socket_path)
    assert stat.S_ISSOCK(sock_mode.st_mode)
    assert stat.S_IMODE(sock_mode.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d.socket_path.parent).st_mode) == 0o700
    assert sock_mode.st_uid == os.getuid()


def test_garbage_gets_an_error_reply_and_the_connection_keeps_serving(served):
    d, sub, folder = served
    with connect(d) as sock:
        f = sock.makefile("rwb")
        for garbage in (b"hello\n", b"\x00\xff\xfe binary \x80\n", b'{"type": "launch_missiles", "id": 3}\n',
                        b"[1, 2, 3]\n", b'{"type": "cancel", "job": "seven", "id": 4}\n'):
            f.write(garbage)
            f.flush()
            reply = json.loads(f.readline())
            assert reply["type"] == "reply" and reply["ok"] is False and reply["error"], reply
        f.write(b'{"type": "status", "id": "after"}\n')
        f.flush()
        reply = json.loads(f.readline())
        assert reply["ok"] and reply["id"] == "after"
    assert_serving(d, sub, folder)


def test_a_10_mb_line_is_refused_and_only_that_client_dropped(served):
    d, sub, folder = served
    sock = connect(d, timeout=30)
    sent = threading.Event()

    def send() -> None:
        try:
            sock.sendall(b"x" * (10 * 1024 * 1024))
        except OSError:  # the daemon hung up on us mid-send: fine
            pass
        sent.set()

    threading.Thread(target=send, daemon=True).start()
    try:
        reply = read_reply(sock)
        assert not reply["ok"] and "line too long" in reply["error"], reply
    except (ConnectionError, AssertionError):
        pass  # dropped without (or before reading) the reply: also fine
    assert sent.wait(30), "the daemon neither read nor dropped the 10 MB line"
    sock.close()
    assert_serving(d, sub, folder)


def test_half_a_line_then_silence_blocks_nobody(served):
    d, sub, folder = served
    with connect(d) as silent:
        silent.sendall(b'{"type": "status", "id": ')
        assert_serving(d, sub, folder)
        silent.sendall(b'"late"}\n')  # it can still finish its line and be answered
        reply = read_reply(silent)
        assert reply["ok"] and reply["id"] == "late"


def test_subscriber_that_never_reads_stalls_nobody(served):
    d, sub, folder = served
    with connect(d) as deaf:
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # subscribe, then ask for thousands of replies it will never read
        deaf.sendall(b'{"type": "subscribe", "id": 1}\n' + b'{"type": "status"}\n' * 3000)
        for _ in range(3):
            assert_serving(d, sub, folder)


def test_50_clients_at_once(served):
    d, sub, folder = served
    barrier = threading.Barrier(50)
    clients: list[Subscriber | None] = [None] * 50
    answers: list[dict | None] = [None] * 50

    def client(i: int) -> None:
        barrier.wait(10)
        s = Subscriber(d.socket_path)
        s.sock.sendall(json.dumps({"type": "status", "id": f"c{i}"}).encode() + b"\n")
        answers[i] = s.wait_for(lambda e: e["type"] == "reply" and e["id"] == f"c{i}", 30)
        clients[i] = s

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert all(a is not None and a["ok"] for a in answers), answers
        assert_serving(d, sub, folder, *clients)  # all 50 still subscribed get the events
    finally:
        for s in clients:
            if s is not None:
                s.close()


def test_clients_disconnecting_mid_message(served):
    d, sub, folder = served
    for fragment in (b'{"type": "sta', b'{"type": "subscribe", "id": 1}\n{"type": "stat'):
        with connect(d) as sock:
            sock.sendall(fragment)
    with connect(d) as sock:  # mid-reply: asks for a lot and hangs up without reading
        sock.sendall(b'{"type": "status"}\n' * 200)
    with connect(d) as sock:  # a subscriber that resets the connection
        sock.sendall(b'{"type": "subscribe", "id": 1}\n')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert_serving(d, sub, folder)


def test_stale_socket_after_a_crash_is_replaced_and_a_foreign_file_is_not(tmp_path):
    require_shared(*NEEDS)
    d = DaemonProcess(workers=1).start()
    try:
        d.kill_hard()
        assert stat.S_ISSOCK(os.lstat(d.socket_path).st_mode)  # left behind, nobody listening
        with pytest.raises(ConnectionRefusedError):
            connect(d)
        again = DaemonProcess(root=d.root, workers=1).start()
        try:
            assert request(again.socket_path, {"type": "status", "id": 1})["ok"]
            assert stat.S_IMODE(os.stat(again.socket_path).st_mode) == 0o600
        finally:
            again.stop()
        assert not again.socket_path.exists()  # a clean stop removes it
    finally:
        if d.proc.poll() is None:
            d.kill_hard()

    # a regular file where the socket goes is not ours to delete: refuse to start
    d.socket_path.write_text("not a socket\n")
    result = subprocess.run(d.command(), env={**os.environ, **d.env}, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "is not a socket" in result.stderr, result.stderr
    assert d.socket_path.read_text() == "not a socket\n"
    shutil.rmtree(d.root, ignore_errors=True)


def test_sigkilled_subscriber_process_does_not_hurt(served):
    """A subscriber whose whole process dies (no close, no shutdown)."""
    d, sub, folder = served
    code = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "s.sendall(b'{\"type\": \"subscribe\", \"id\": 1}\\n'); print('ok', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(d.socket_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ok"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert_serving(d, sub, folder)
