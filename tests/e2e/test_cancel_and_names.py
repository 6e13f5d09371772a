"""A real `aud run`: a job is named after the file it was made from (issue 26 item 2); a cancel is not a
failure and a re-run from ``.failed`` or ``.cancelled`` cleans up after itself (issue 26 item 6); aud
writes nothing beside a submitted file outside its folders (issue 22 item 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import SHARED, require_shared
from tests.e2e.checks import wait_until
from tests.e2e.daemonproc import DaemonProcess, is_summary
from tests.e2e.test_reliability import injected
from tests.media import cut_clip, drop

pytestmark = pytest.mark.slow
CLIP = SHARED / "media" / "hamilton_clip.mp4"
NEEDS = ("media/hamilton_clip.mp4", "models/openface3/retinaface.onnx", "models/openface3/mtl.onnx",
         "models/openface3/star.onnx")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    require_shared(*NEEDS)
    folder = tmp_path_factory.mktemp("clips")
    return {name: cut_clip(CLIP, folder / f"{name}.mp4", start, 4)
            for name, start in (("ham", 100), ("can", 120), ("crashme", 140))}


def ok(d: DaemonProcess, command: dict) -> dict:
    reply = d.request(command)
    assert reply["ok"], reply
    return reply.get("data") or {}


def listing(folder: Path) -> list[str]:
    """The files under ``folder``, less the outbox's static summary (index.html, rewritten after each job)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if not p.is_dir() and not is_summary(p, folder))


def test_a_cancelled_submit_re_dropped_under_another_name_is_named_after_the_new_file(daemon, clips, tmp_path):
    d = daemon(workers=1, plots="false").start()
    sub = d.subscribe()
    user = tmp_path / "sub"
    user.mkdir()
    shutil.copyfile(clips["ham"], user / "ham_sub.mp4")
    ok(d, {"type": "pause"})
    job = ok(d, {"type": "submit", "path": str(user / "ham_sub.mp4")})["job"]
    ok(d, {"type": "cancel", "job": job})
    sub.wait_for(lambda e: e["type"] == "job_cancelled" and e["job"] == job, 60)
    assert listing(user) == ["ham_sub.mp4"]  # nothing written beside the user's file
    assert listing(d.outbox) == []
    drop(clips["ham"], d.inbox, "ham_inbox.mp4")  # the same content, dropped under another name
    requeued = sub.wait_for(lambda e: e["type"] == "job_queued" and e["file"] == "ham_inbox.mp4", 60)
    assert requeued["job"] == job
    assert [q["file"] for q in d.status()["queued"]] == ["ham_inbox.mp4"]
    ok(d, {"type": "resume"})
    done = sub.wait_for(lambda e: e["type"] == "job_done" and e["job"] == job, 300)
    assert done["file"] == "ham_inbox.mp4" and Path(done["csv"]) == d.outbox / "ham_inbox.csv"
    sidecar = json.loads((d.outbox / "ham_inbox.json").read_text())
    assert sidecar["received_as"] == str(d.inbox / "ham_inbox.mp4")
    assert listing(d.outbox) == ["ham_inbox.csv", "ham_inbox.json"]
    assert listing(user) == ["ham_sub.mp4"]


def test_cancel_sets_aside_with_a_plain_note_and_a_re_run_cleans_up(daemon, clips, tmp_path):
    flag = tmp_path / "crash.flag"
    flag.touch()
    d = daemon(workers=1, plots="false", shard_frames=2, shard_retries=0, env=injected(tmp_path, crash=flag))
    d.start()
    sub = d.subscribe()
    # cancelled: into inbox/.cancelled with a note that is not a failure report
    ok(d, {"type": "pause"})
    drop(clips["can"], d.inbox, "can.mp4")
    job = sub.wait_for(lambda e: e["type"] == "job_queued" and e["file"] == "can.mp4", 60)["job"]
    ok(d, {"type": "cancel", "job": job})
    wait_until(lambda: (d.inbox / ".cancelled" / "can.mp4.cancelled.txt").exists(), 30, "the cancel note")
    assert listing(d.inbox) == [".cancelled/can.mp4", ".cancelled/can.mp4.cancelled.txt"]
    note = (d.inbox / ".cancelled" / "can.mp4.cancelled.txt").read_text()
    assert "cancelled by the user" in note and "could not process" not in note and "Fix the cause" not in note
    # a re-run from .cancelled: the input goes to .done, the note goes
    ok(d, {"type": "submit", "path": str(d.inbox / ".cancelled" / "can.mp4")})
    ok(d, {"type": "resume"})
    sub.wait_for(lambda e: e["type"] == "job_done" and e["job"] == job, 300)
    wait_until(lambda: listing(d.inbox) == [".done/can.mp4"], 30, f"only .done/can.mp4 in {listing(d.inbox)}")

    # failed (a worker that dies on the video, injected), then re-run from .failed once the cause is gone
    drop(clips["crashme"], d.inbox, "crashme.mp4")
    failed = sub.wait_for(lambda e: e["type"] == "job_failed" and e["file"] == "crashme.mp4", 300)
    wait_until(lambda: (d.inbox / ".failed" / "crashme.mp4.error.txt").exists(), 30, "the error report")
    assert "Fix the cause" in (d.inbox / ".failed" / "crashme.mp4.error.txt").read_text()
    flag.unlink()
    ok(d, {"type": "submit", "path": str(d.inbox / ".failed" / "crashme.mp4")})
    sub.wait_for(lambda e: e["type"] == "job_done" and e["job"] == failed["job"], 300)
    wait_until(lambda: listing(d.inbox) == [".done/can.mp4", ".done/crashme.mp4"], 30,
               f"the re-run input in .done and no stale report: {listing(d.inbox)}")
    assert sorted(listing(d.outbox)) == ["can.csv", "can.json", "crashme.csv", "crashme.json"]
