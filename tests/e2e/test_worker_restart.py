"""A worker that cannot be replaced, against a real `aud run` subprocess (issue 22 item 1).

A model file damaged while the daemon runs, then the one worker killed: the replacement cannot load its
models. The daemon used to drop to 0 workers and fail every later video ("no worker process is left")
for good while it stayed up. Now the pool keeps trying with backoff, jobs wait (the executor is
unavailable, ``status`` and ``tail`` say why, naming the file), and once the file is back the waiting
video and the next one are processed by the same daemon.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
import pytest

from tests.conftest import SHARED, require_shared
from tests.e2e.checks import assert_alive, assert_done
from tests.e2e.daemonproc import DaemonProcess
from tests.media import cut_clip, drop

pytestmark = pytest.mark.slow
CLIP = SHARED / "media" / "hamilton_clip.mp4"
MODELS = SHARED / "models" / "openface3"
NEEDS = ("media/hamilton_clip.mp4", "models/openface3/retinaface.onnx", "models/openface3/mtl.onnx",
         "models/openface3/star.onnx")


def models_copy(folder: Path) -> Path:
    """The shared model set in ``folder``: mtl.onnx copied (the test damages and restores it), the
    others linked."""
    folder.mkdir()
    shutil.copyfile(MODELS / "mtl.onnx", folder / "mtl.onnx")
    for name in ("retinaface.onnx", "star.onnx"):
        (folder / name).symlink_to(MODELS / name)
    return folder


def put_in_place(data: bytes, target: Path) -> None:
    """Write beside, then rename over: a worker starting meanwhile sees the old file or the new one."""
    part = target.with_name(f".{target.name}.part")
    part.write_bytes(data)
    part.replace(target)


def workers_of(d: DaemonProcess) -> list[psutil.Process]:
    return [p for p in psutil.Process(d.proc.pid).children(recursive=True)
            if "spawn_main" in " ".join(p.cmdline())]


def test_a_worker_that_cannot_restart_makes_jobs_wait_and_the_daemon_recovers(daemon, tmp_path):
    require_shared(*NEEDS)
    models = models_copy(tmp_path / "models")
    good = (models / "mtl.onnx").read_bytes()
    d = daemon(workers=1, models=models).start()
    sub = d.subscribe()
    pid = d.proc.pid

    put_in_place(b"not an onnx model", models / "mtl.onnx")
    (worker,) = workers_of(d)
    worker.kill()
    failed = sub.wait_for(lambda e: e["type"] == "worker_restarted" and "could not start" in e["reason"], 120)
    assert "mtl.onnx" in failed["reason"] and "trying again in" in failed["reason"], failed
    idle = assert_alive(d)["workers"]  # no job yet: status already says why no worker can run
    assert idle["state"] == "executor_unavailable" and "no worker process can start" in idle["reason"], idle
    assert "mtl.onnx" in idle["reason"], idle

    drop(cut_clip(CLIP, tmp_path / "waits.mp4", 100, 5), d.inbox, "waits.mp4")
    lost = sub.wait_for(lambda e: e["type"] == "executor_unavailable", 120)
    assert "no worker process can start" in lost["reason"] and "mtl.onnx" in lost["reason"], lost
    status = assert_alive(d)["workers"]
    assert status["state"] == "executor_unavailable" and "mtl.onnx" in status["reason"], status
    assert not [e for e in sub.events if e["type"] == "job_failed"]  # the job waits: it is not failed

    put_in_place(good, models / "mtl.onnx")  # the same bytes, another inode: hashed, then accepted
    sub.wait_for(lambda e: e["type"] == "executor_available", 180)
    assert_done(d, sub, "waits.mp4", 5, timeout=180)
    drop(cut_clip(CLIP, tmp_path / "next.mp4", 140, 5), d.inbox, "next.mp4")
    assert_done(d, sub, "next.mp4", 5, timeout=180)

    assert d.proc.pid == pid and d.proc.poll() is None  # the same daemon, never restarted
    assert not [e for e in sub.events if e["type"] == "job_failed"]
    final = assert_alive(d)["workers"]
    assert final["state"] == "ok" and final["count"] == 1, final
    assert not (d.inbox / ".failed").exists() or not os.listdir(d.inbox / ".failed")
