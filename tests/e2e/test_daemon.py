"""The daemon end to end: a real `aud run` subprocess, real models, real video, a real socket."""

from __future__ import annotations

import os
import plistlib
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.output import read_csv
from tests.conftest import SHARED, require_shared
from tests.e2e.daemonproc import MODELS
from tests.media import copy_slowly, cut_clip, drop

pytestmark = pytest.mark.slow
CLIP = SHARED / "media" / "hamilton_clip.mp4"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    require_shared("media/hamilton_clip.mp4", "models/openface3/retinaface.onnx",
                   "models/openface3/mtl.onnx", "models/openface3/star.onnx")
    d = tmp_path_factory.mktemp("clips")
    return {"a": cut_clip(CLIP, d / "a.mp4", 0, 32), "b": cut_clip(CLIP, d / "b.mp4", 150, 24),
            "c": cut_clip(CLIP, d / "c.mp4", 60, 48)}


def extract(video: Path, out: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "daemon", "extract", str(video), "-o", str(out), "--models",
                           str(MODELS), "--workers", "2", "--provider", "cpu"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return out


def assert_same_csv(ours: Path, theirs: Path) -> None:
    a, b = read_csv(ours), read_csv(theirs)
    assert len(a) == len(b)
    assert list(a[0]) == list(b[0])
    for ra, rb in zip(a, b):
        for key in ra:
            if key == "emotion":
                assert ra[key] == rb[key]
            elif ra[key] == "" or rb[key] == "":
                assert ra[key] == rb[key], (key, ra["frame"])
            else:
                assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-5, abs=1e-5), (key, ra["frame"])


def test_full_clip_copied_slowly_streams_events_and_matches_extract(daemon, full_clip_extract):
    require_shared("media/hamilton_clip.mp4", "models/openface3/star.onnx")
    d = daemon(faces="best").start()  # as full_clip_extract
    sub = d.subscribe()
    copy_slowly(CLIP, d.inbox / "hamilton clip.mp4", chunks=8, pause=0.4)
    queued = sub.wait_for(lambda e: e["type"] == "job_queued", 60)
    started = sub.wait_for(lambda e: e["type"] == "job_started")
    progress = sub.wait_for(lambda e: e["type"] == "progress" and e["frames_done"] > 0)  # after a commit
    done = sub.wait_for(lambda e: e["type"] in ("job_done", "job_failed"), 900)
    assert done["type"] == "job_done", done
    assert queued["job"] == started["job"] == progress["job"] == done["job"]
    assert progress["frames_total"] == 275 and 0 < progress["frames_done"] <= 275
    assert done["frames"] == 275
    assert sum(1 for e in sub.events if e["type"] == "job_queued") == 1  # taken once, after the copy
    csv_path = Path(done["csv"])
    assert csv_path == d.outbox / "hamilton clip.csv"
    rows = read_csv(csv_path)
    assert [int(r["frame"]) for r in rows] == list(range(1, 276))
    assert_same_csv(csv_path, full_clip_extract)
    assert (d.inbox / ".done" / "hamilton clip.mp4").is_file()
    assert d.outbox_files() == ["hamilton clip.csv", "hamilton clip.json", "hamilton clip.png"]


def test_sigkill_mid_job_then_restart_gives_the_same_csv_once(daemon, clips, tmp_path):
    d = daemon().start()
    sub = d.subscribe()
    drop(clips["c"], d.inbox, "c.mp4")
    killed_at = sub.wait_for(lambda e: e["type"] == "progress" and 0 < e["frames_saved"] < e["frames_total"])
    d.kill_hard()
    assert not any(p.suffix == ".csv" for p in d.outbox.rglob("*"))

    again = daemon(root=d.root).start()
    sub = again.subscribe()
    done = sub.wait_for(lambda e: e["type"] in ("job_done", "job_failed"), 600)
    assert done["type"] == "job_done", done
    assert again.outbox_files() == ["c.csv", "c.json", "c.png"]
    assert_same_csv(again.outbox / "c.csv", extract(clips["c"], tmp_path / "c.csv"))
    # the work finished before the kill was not redone: fewer frames ran after the restart
    progress = [e for e in sub.events if e["type"] == "progress"]
    assert progress and progress[0]["frames_done"] >= killed_at["frames_saved"]  # from the saved frames on
    assert progress[0]["frames_saved"] >= killed_at["frames_saved"]


def test_same_video_twice_is_one_job_and_a_second_video_shares_the_workers(daemon, clips):
    d = daemon().start()
    sub = d.subscribe()
    drop(clips["a"], d.inbox, "a.mp4")
    drop(clips["a"], d.inbox, "a again.mp4")
    started_a = sub.wait_for(lambda e: e["type"] == "job_started")
    drop(clips["b"], d.inbox, "b.mp4")
    done = [sub.wait_for(lambda e, n=n: e["type"] in ("job_done", "job_failed") and
                         sum(x["type"] in ("job_done", "job_failed") for x in sub.events) >= n, 600)
            for n in (1, 2)]
    assert all(e["type"] == "job_done" for e in done), done
    queued = [e for e in sub.events if e["type"] == "job_queued"]
    assert len(queued) == 2, queued  # a.mp4 and its copy are one job; b.mp4 the other
    started_b = next(e for e in sub.events if e["type"] == "job_started" and e["job"] != started_a["job"])
    done_a = next(e for e in sub.events if e["type"] == "job_done" and e["job"] == started_a["job"])
    assert started_b["ts"] < done_a["ts"], "the second video waited for the first instead of sharing"
    names = d.outbox_files()
    assert "b.csv" in names and len([n for n in names if n.endswith(".csv")]) == 2
    assert sorted(p.name for p in (d.inbox / ".done").iterdir()) == ["a again.mp4", "a.mp4", "b.mp4"]


def test_aud_tail_renders_progress_for_a_running_job(daemon, clips):
    d = daemon().start()
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "30", "TERM": "xterm"}
    # SIGINT back to its default in the child: a test run started in the background (nohup …, CI)
    # inherits SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt
    tail = subprocess.Popen([sys.executable, "-m", "daemon", "tail", "--state", str(d.state)],
                            stdin=slave, stdout=slave, stderr=slave, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(slave)
    sub = d.subscribe()
    drop(clips["b"], d.inbox, "b.mp4")
    sub.wait_for(lambda e: e["type"] == "job_done", 600)
    screen = b""
    deadline = time.monotonic() + 60
    interrupted = False
    while tail.poll() is None and time.monotonic() < deadline:
        if b"done" in screen and not interrupted:
            tail.send_signal(signal.SIGINT)  # Ctrl-C; keep reading so its last redraw is not blocked
            interrupted = True
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                screen += os.read(master, 65536)
            except OSError:
                break
    assert tail.wait(30) in (0, 130), "aud tail did not stop cleanly on Ctrl-C"
    os.close(master)
    text = screen.decode(errors="replace")
    assert "b.mp4" in text
    assert "/24" in text or "24 frames" in text, text[-2000:]
    assert "done" in text and "b.csv" in text, text[-2000:]


def test_launchd_print_emits_a_complete_plist(tiny_models):
    out = subprocess.run([sys.executable, "-m", "daemon", "launchd", "print", "--models", str(tiny_models)],
                         capture_output=True, check=True)
    plist = plistlib.loads(out.stdout)
    for key in ("Label", "ProgramArguments", "RunAtLoad", "KeepAlive", "ThrottleInterval", "ExitTimeOut",
                "StandardOutPath", "StandardErrorPath", "EnvironmentVariables", "WorkingDirectory"):
        assert key in plist, key
    assert Path(plist["ProgramArguments"][0]).is_absolute()
    assert plist["ProgramArguments"][-3:] == ["run", "--models", str(tiny_models)]
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["RunAtLoad"] is True and plist["ExitTimeOut"] >= 100
