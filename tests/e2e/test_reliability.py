"""Bad inputs and injected faults against a real `aud run` subprocess.

After every case: the daemon still runs (or, after a kill, restarts cleanly), every good video has its
complete CSV exactly once, every bad one sits in ``<inbox>/.failed/`` with a readable
``<name>.error.txt``, and the outbox holds no partial or temporary file.

The bad-input cases share one daemon (``inbox``); each drops its own uniquely named file and waits for
that file's events. The fault cases start daemons of their own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from daemon.jobs.plan import plan_shards
from daemon.jobs.store import JobStore
from tests.conftest import SHARED, require_shared
from tests.e2e.checks import (
    assert_alive,
    assert_done,
    assert_failed,
    assert_outbox_clean,
    ended,
    no_face_video,
    queued,
    sha256,
    wait_until,
)
from tests.e2e.daemonproc import DaemonProcess
from tests.media import (
    audio_only,
    blank_payload,
    copy_slowly,
    drop,
    faststart,
    read_frames,
    rotated_portrait,
    truncated_index_first,
    write_video,
)

pytestmark = pytest.mark.slow
CLIP = SHARED / "media" / "hamilton_clip.mp4"
NEEDS = ("media/hamilton_clip.mp4", "models/openface3/retinaface.onnx", "models/openface3/mtl.onnx",
         "models/openface3/star.onnx")


@pytest.fixture(scope="module")
def frames():
    require_shared(*NEEDS)
    return read_frames(CLIP, 0, 200)


@pytest.fixture(scope="module")
def clip(frames, tmp_path_factory):
    """``clip(name, start, count)``: frames [start, start+count) of the shared clip as an mp4 (distinct
    starts give distinct content, so no two tests' videos are one job)."""
    folder = tmp_path_factory.mktemp("clips")

    def make(name: str, start: int, count: int) -> Path:
        return write_video(folder / name, frames[start:start + count])

    return make


@pytest.fixture(scope="module")
def inbox():
    """One daemon for the bad-input cases, and a subscriber that records everything it publishes."""
    require_shared(*NEEDS)
    d = DaemonProcess(workers=2, settle_seconds=1.0, rescan_seconds=1, unopenable_grace_seconds=2).start()
    sub = d.subscribe()
    yield d, sub
    sub.close()
    d.stop()
    shutil.rmtree(d.root, ignore_errors=True)
    assert d.proc.returncode == 0, "".join(d.log[-40:])
    assert "Traceback" not in "".join(d.log), "".join(d.log)  # every case handled, none crashed a task




@contextlib.contextmanager
def paused(d: DaemonProcess):
    """Nothing new starts meanwhile (files are still discovered and queued)."""
    assert d.request({"type": "pause"})["ok"]
    try:
        yield
    finally:
        assert d.request({"type": "resume"})["ok"]


def sentinel(d: DaemonProcess, sub, name: str, seed: int, tmp: Path) -> None:
    """Drop a tiny good video and wait for its CSV: the watcher has seen everything dropped before it
    (its events come in order) and rescanned the inbox at least once meanwhile."""
    drop(no_face_video(tmp / name, seed), d.inbox, name)
    assert_done(d, sub, name, 1)


# --- bad inputs -----------------------------------------------------------------------------------------------

def test_zero_byte_file_fails_with_a_reason(inbox):
    d, sub = inbox
    (d.inbox / "empty.mp4").write_bytes(b"")
    assert_failed(d, sub, "empty.mp4", "the file is empty (0 bytes)")
    assert_alive(d)


def test_text_file_named_mp4_fails_with_a_reason(inbox, tmp_path):
    d, sub = inbox
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n" * 20)
    drop(tmp_path / "notes.mp4", d.inbox, "notes.mp4")
    assert_failed(d, sub, "notes.mp4", "not a video OpenCV can open")
    assert_alive(d)


def test_random_bytes_named_mov_fail_with_a_reason(inbox, tmp_path):
    d, sub = inbox
    (tmp_path / "noise.mov").write_bytes(os.urandom(200_000))
    drop(tmp_path / "noise.mov", d.inbox, "noise.mov")
    assert_failed(d, sub, "noise.mov", "not a video OpenCV can open")
    assert_alive(d)


def test_video_cut_in_half_by_bytes_fails_because_its_index_is_gone(inbox, clip, tmp_path):
    # OpenCV's mp4v writer puts the index (moov) last: the first half of the file does not open at all
    d, sub = inbox
    data = clip("whole.mp4", 10, 8).read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[:len(data) // 2])
    drop(tmp_path / "half.mp4", d.inbox, "half.mp4")
    assert_failed(d, sub, "half.mp4", "not a video OpenCV can open", "incomplete")
    assert_alive(d)


def test_truncated_video_with_its_index_first_fails_naming_the_frame_where_it_ends(inbox, clip, tmp_path):
    d, sub = inbox
    cut = truncated_index_first(clip("long.mp4", 20, 8), tmp_path / "cut short.mp4")
    drop(cut, d.inbox, "cut short.mp4")
    event = assert_failed(d, sub, "cut short.mp4", "the file announces 8 frames")
    ended_at = int(re.search(r"the video stream ends at frame (\d+)", event["reason"]).group(1))
    assert 0 < ended_at < 8, event  # never a silently short CSV


def test_video_without_a_decodable_frame_fails_with_a_reason(inbox, clip, tmp_path):
    d, sub = inbox
    blank = blank_payload(clip("blank source.mp4", 30, 4), tmp_path / "blank.mp4")
    drop(blank, d.inbox, "blank.mp4")
    assert_failed(d, sub, "blank.mp4", "no decodable video frames")
    assert_alive(d)


def test_audio_only_file_fails_with_a_reason(inbox, tmp_path):
    pytest.importorskip("av", reason="PyAV writes the audio-only file (pip install -e '.[test]')")
    d, sub = inbox
    drop(audio_only(tmp_path / "voice memo.mp4"), d.inbox, "voice memo.mp4")
    assert_failed(d, sub, "voice memo.mp4", "no video stream")
    assert_alive(d)


def test_video_where_no_face_is_ever_found_finishes_with_no_success(inbox, tmp_path):
    d, sub = inbox
    drop(no_face_video(tmp_path / "colours.mp4", seed=1, frames=6, size=96), d.inbox, "colours.mp4")
    _, rows, sidecar = assert_done(d, sub, "colours.mp4", 6)
    assert {r["success"] for r in rows} == {"0"}
    assert sidecar["frames_with_face"] == 0


def test_portrait_video_with_rotation_metadata_is_read_upright(inbox, tmp_path):
    require_shared(*NEEDS)
    d, sub = inbox
    video, upright = rotated_portrait(CLIP, tmp_path / "portrait.mp4", 150, 4, x0=120)
    height, width = upright[0].shape[:2]
    assert (width, height) == (288, 360)
    drop(video, d.inbox, "portrait.mp4")
    _, rows, sidecar = assert_done(d, sub, "portrait.mp4", 4)
    assert (sidecar["video_properties"]["width"], sidecar["video_properties"]["height"]) == (width, height)
    faces = [r for r in rows if r["success"] == "1"]
    assert faces, "the upright face was not found: the frames were not rotated"
    for r in faces:
        x1, y1, x2, y2 = (float(r[k]) for k in ("face_x1", "face_y1", "face_x2", "face_y2"))
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, r["frame"]
        assert y2 - y1 > x2 - x1, "a face box wider than tall: the face was found lying on its side"


def test_huge_resolution_does_not_take_the_daemon_down(inbox, frames, tmp_path):
    import cv2

    d, sub = inbox
    big = write_video(tmp_path / "8k.mp4", [cv2.resize(f, (7680, 4320)) for f in frames[160:162]])
    drop(big, d.inbox, "8k.mp4")
    event = ended(sub, "8k.mp4", timeout=120)
    if event["type"] == "job_done":  # processed (detection runs on a scaled copy above 4K)
        _, _, sidecar = assert_done(d, sub, "8k.mp4", 2)
        assert (sidecar["video_properties"]["width"], sidecar["video_properties"]["height"]) == (7680, 4320)
    else:  # or refused with a reason that says why
        assert_failed(d, sub, "8k.mp4")
    print(f"8K video: {event['type']} {event.get('reason', '')}")
    assert_alive(d)


def test_name_with_spaces_unicode_and_quotes(inbox, clip):
    d, sub = inbox
    name = "it's a \"quoted\" clip – café 🎬.mp4"
    drop(clip("plain.mp4", 40, 2), d.inbox, name)
    event, _, _ = assert_done(d, sub, name, 2)
    assert Path(event["csv"]) == d.outbox / "it's a \"quoted\" clip – café 🎬.csv"


def test_symlink_to_a_file_outside_the_inbox_is_not_followed(inbox, clip, tmp_path):
    d, sub = inbox
    outside = clip("outside.mp4", 50, 2)
    before = sha256(outside)
    link = d.inbox / "link.mp4"
    link.symlink_to(outside)
    sentinel(d, sub, "after link.mp4", 2, tmp_path)
    assert not queued(sub, "link.mp4")
    assert link.is_symlink() and os.readlink(link) == str(outside)  # nothing moved
    assert outside.is_file() and sha256(outside) == before
    assert not list((d.inbox / ".failed").glob("link.mp4*")) and not (d.inbox / ".done" / "link.mp4").exists()
    link.unlink()


def test_directory_named_like_a_video_is_ignored(inbox, tmp_path):
    d, sub = inbox
    folder = d.inbox / "holiday.mp4"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a video\n")
    sentinel(d, sub, "after folder.mp4", 3, tmp_path)
    assert not queued(sub, "holiday.mp4")
    assert (folder / "readme.txt").is_file()
    assert not list((d.inbox / ".failed").glob("holiday*")) and not (d.inbox / ".done" / "holiday.mp4").exists()


def test_file_growing_for_longer_than_the_settle_period_is_taken_once_complete(inbox, clip, tmp_path):
    # the index is at the front, so the partial file opens: only the settle period keeps it from
    # being taken early; it keeps growing for 3 s, three settle periods
    d, sub = inbox
    whole, _, _ = faststart(clip("grow source.mp4", 60, 8).read_bytes())
    (tmp_path / "growing.mp4").write_bytes(whole)
    copy_slowly(tmp_path / "growing.mp4", d.inbox / "growing.mp4", chunks=12, pause=0.25)
    assert_done(d, sub, "growing.mp4", 8)
    (event,) = queued(sub, "growing.mp4")
    last_write = (d.inbox / ".done" / "growing.mp4").stat().st_mtime
    assert event["ts"] >= last_write + 1.0 - 0.05, "queued before the file had been still for the settle period"


def test_file_deleted_between_discovery_and_processing(inbox, clip):
    d, sub = inbox
    with paused(d):
        drop(clip("gone.mp4", 70, 2), d.inbox, "gone.mp4")
        sub.wait_for(lambda e: e["type"] == "job_queued" and e["file"] == "gone.mp4", 60)
        (d.inbox / "gone.mp4").unlink()
    event = ended(sub, "gone.mp4")
    assert event["type"] == "job_failed" and "moved or deleted before it was processed" in event["reason"], event
    assert not list((d.inbox / ".failed").glob("gone.mp4*"))  # nothing to keep, nothing claimed kept
    assert_outbox_clean(d.outbox, d)
    assert_alive(d)


def test_file_replaced_between_discovery_and_processing(inbox, clip):
    d, sub = inbox
    old, new = clip("old.mp4", 80, 3), clip("new.mp4", 90, 2)
    with paused(d):
        drop(old, d.inbox, "swap.mp4")
        first = sub.wait_for(lambda e: e["type"] == "job_queued" and e["file"] == "swap.mp4", 60)
        drop(new, d.inbox, "swap.mp4")  # renamed over the old one
        second = sub.wait_for(lambda e: e["type"] == "job_queued" and e["file"] == "swap.mp4"
                              and e["job"] != first["job"], 60)
    gone = ended(sub, "swap.mp4", first["job"])
    assert gone["type"] == "job_failed" and "replaced by different content" in gone["reason"], gone
    event, rows, sidecar = assert_done(d, sub, "swap.mp4", 2, second["job"])
    assert sidecar["fingerprint"] == sha256(new) and len(rows) == 2  # the new content, as itself
    assert sha256(d.inbox / ".done" / "swap.mp4") == sha256(new)
    assert not list((d.inbox / ".failed").glob("swap*"))
    assert sorted(p.name for p in d.outbox.glob("swap*")) == ["swap.csv", "swap.json", "swap.png"]


def test_second_daemon_on_the_same_state_directory_is_refused(inbox):
    d, sub = inbox
    second = subprocess.run(d.command(), env={**os.environ, **d.env}, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert "already running" in second.stderr and f"pid {d.proc.pid}" in second.stderr, second.stderr
    assert_alive(d)
    assert d.socket_path.exists()
    assert d.request({"type": "status", "id": 7})["id"] == 7


# --- faults -------------------------------------------------------------------------------------------------

# Injected into the daemon's processes through PYTHONPATH, no product hooks. In spawned workers it wraps
# run_shard to die (exit 71) on frames after the first of any video named "crashme" while the crash flag
# file exists, the first time waiting until a shard of "innocent.mp4" (frames 0 and 2) runs beside it;
# in the daemon process it makes writing a CSV fail with ENOSPC while the full flag exists,
# or take AUD_TEST_SLOW_WRITE seconds. Each activation and each injected fault is logged to AUD_TEST_LOG,
# so the test sees the patch at work.
SITECUSTOMIZE = textwrap.dedent('''
    import errno, os, sys, time

    def _log(line):
        with open(os.environ["AUD_TEST_LOG"], "a") as f:
            f.write(f"{line} {os.getpid()}\\n")

    def _innocent_in_flight_or_done(shards):
        """True once a shard of innocent.mp4 runs (or all of them are done), or after the first crash."""
        with open(os.environ["AUD_TEST_LOG"]) as f:
            lines = [line.split() for line in f]
        started = {l[2] for l in lines if l[:2] == ["run", "innocent.mp4"]}
        ended = {l[2] for l in lines if l[:2] == ["end", "innocent.mp4"]}
        return bool(started - ended) or ended >= shards or ["crash"] in [l[:1] for l in lines]

    def _patch_worker():
        import daemon.core.shard as shard
        real = shard.run_shard

        def run_shard(pipeline, task, progress=None, reader=None):
            name = os.path.basename(task.video)
            _log(f"run {name} {task.start}")
            if "crashme" in name and task.start > 0 and os.path.exists(os.environ["AUD_TEST_CRASH_FLAG"]):
                for _ in range(400):
                    if _innocent_in_flight_or_done({"0", "2"}):
                        break
                    time.sleep(0.05)
                _log("crash")
                os._exit(71)
            done = real(pipeline, task, progress, reader)
            _log(f"end {name} {task.start}")
            return done

        shard.run_shard = run_shard
        _log("worker-patched")

    def _patch_outbox():
        import daemon.output as output
        real = output.write_outputs

        def write_outputs(csv_path, *args, **kwargs):
            if os.path.exists(os.environ.get("AUD_TEST_FULL_FLAG", "/nonexistent")):
                _log("enospc")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(csv_path))
            if "AUD_TEST_SLOW_WRITE" in os.environ:
                _log("slow-write")
                time.sleep(float(os.environ["AUD_TEST_SLOW_WRITE"]))
            return real(csv_path, *args, **kwargs)

        output.write_outputs = write_outputs
        _log("outbox-patched")

    if "AUD_TEST_LOG" in os.environ:
        if "--multiprocessing-fork" in sys.argv:
            if "AUD_TEST_CRASH_FLAG" in os.environ:
                _patch_worker()
        elif "run" in sys.argv:
            if "AUD_TEST_FULL_FLAG" in os.environ or "AUD_TEST_SLOW_WRITE" in os.environ:
                _patch_outbox()
''')


def injected(tmp_path: Path, **flags: Path) -> dict:
    """Environment for a daemon with SITECUSTOMIZE on its path; ``flags`` name the AUD_TEST_* flag files."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "AUD_TEST_LOG": str(tmp_path / "injected.log")}
    env.update({f"AUD_TEST_{k.upper()}_FLAG": str(v) for k, v in flags.items()})
    return env


def injected_log(tmp_path: Path, full: bool = False) -> list[str]:
    """What the injected code did, in order: its first words per line (``full``: whole lines)."""
    log = tmp_path / "injected.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return lines if full else [line.split()[0] for line in lines]


def worker_processes(d: DaemonProcess) -> list[psutil.Process]:
    return [p for p in psutil.Process(d.proc.pid).children(recursive=True)
            if "spawn_main" in " ".join(p.cmdline())]


def test_sigkill_of_a_worker_mid_shard_retries_the_shard(daemon, clip):
    d = daemon(workers=2).start()
    sub = d.subscribe()
    drop(clip("victim.mp4", 100, 8), d.inbox, "victim.mp4")  # two shards of four frames, one per worker
    sub.wait_for(lambda e: e["type"] == "job_started" and e["file"] == "victim.mp4", 60)
    workers = worker_processes(d)  # the warmed-up ones (the pool starts more on demand)
    assert workers
    base = {w.pid: w.cpu_times().user for w in workers}
    busy = wait_until(lambda: next((w for w in workers if w.cpu_times().user > base[w.pid] + 0.2), None),
                      60, "a worker busy with a shard")
    busy.kill()
    restarted = sub.wait_for(lambda e: e["type"] == "worker_restarted", 60)
    assert restarted["reason"]
    assert_done(d, sub, "victim.mp4", 8, timeout=180)
    assert not [e for e in sub.events if e["type"] == "job_failed"]
    assert assert_alive(d)["workers"]["restarts"] >= 1
    assert busy.pid not in {w.pid for w in worker_processes(d)}


def test_worker_crashing_on_one_video_fails_it_after_the_retries_and_spares_the_rest(daemon, clip, tmp_path):
    flag = tmp_path / "crash.flag"
    flag.touch()
    assert plan_shards(4, 32, 2) == [(0, 2), (2, 4)]  # each 4-frame video: two shards of two frames
    d = daemon(workers=2, shard_retries=1, shard_frames=32, env=injected(tmp_path, crash=flag)).start()
    sub = d.subscribe()
    with paused(d):  # queued in this order, so crashme.mp4 starts first and innocent.mp4 runs beside it
        drop(clip("crashme.mp4", 110, 4), d.inbox, "crashme.mp4")  # shard 1 (frames 3-4) kills its worker
        sub.wait_for(lambda e: e["type"] == "job_queued" and e["file"] == "crashme.mp4", 60)
        drop(clip("innocent.mp4", 120, 4), d.inbox, "innocent.mp4")
        sub.wait_for(lambda e: e["type"] == "job_queued" and e["file"] == "innocent.mp4", 60)
    event = assert_failed(d, sub, "crashme.mp4", "frames 3-4 lost its worker 2 times")
    assert "exited with code 71" in event["reason"], event
    innocent, _, _ = assert_done(d, sub, "innocent.mp4", 4)
    assert [e for e in sub.events if e["type"] == "worker_restarted"]
    assert assert_alive(d)["recent_failures"][0]["reason"] == event["reason"]
    # the injection really ran; the innocent shards in flight beside the crash were neither blamed nor run
    # again: the executor tells which shard's worker died
    log = injected_log(tmp_path, full=True)
    assert "worker-patched" in injected_log(tmp_path) and injected_log(tmp_path).count("crash") >= 2, log
    runs = [line.split()[2] for line in log if line.startswith("run innocent.mp4 ")]
    ends = [line.split()[2] for line in log if line.startswith("end innocent.mp4 ")]
    assert sorted(ends) == ["0", "2"] and sorted(runs) == ["0", "2"], log
    blamed = [line for line in d.log if f"job {innocent['job']} shard" in line]  # "...; retrying"
    assert not blamed, blamed

    # the cause fixed, the failed video dropped again is processed in full
    flag.unlink()
    shutil.move(d.inbox / ".failed" / "crashme.mp4", d.inbox / "crashme.mp4")
    assert_done(d, sub, "crashme.mp4", 4, times_queued=2, after=event["ts"])
    assert sorted(d.outbox_files()) == [f"{n}.{x}" for n in ("crashme", "innocent") for x in ("csv", "json", "png")]


def test_two_videos_with_one_stem_finishing_together_get_a_csv_each(daemon, clip, tmp_path):
    # writing a CSV takes 3 s here, so the second job finishes (its frames all saved, its name chosen)
    # while the first one still writes; results are written one after the other
    env = {**injected(tmp_path), "AUD_TEST_SLOW_WRITE": "3"}
    d = daemon(workers=2, env=env).start()
    sub = d.subscribe()
    with paused(d):
        drop(clip("same a.mp4", 170, 1), d.inbox, "same.mp4")
        drop(clip("same b.mp4", 172, 1), d.inbox, "same.mov")
        for name in ("same.mp4", "same.mov"):
            sub.wait_for(lambda e, name=name: e["type"] == "job_queued" and e["file"] == name, 60)
    mp4, _, mp4_side = assert_done(d, sub, "same.mp4", 1)
    mov, _, mov_side = assert_done(d, sub, "same.mov", 1)
    assert injected_log(tmp_path).count("slow-write") == 2
    first, second = sorted((mp4, mov), key=lambda e: e["ts"])
    computed = [e for e in sub.events if e["type"] == "progress" and e["job"] == second["job"]
                and e["frames_saved"] == e["frames_total"]]
    assert computed and computed[0]["ts"] < first["ts"], "the two did not overlap: the test proves nothing"
    assert d.outbox_files() == ["same (2).csv", "same (2).json", "same (2).png", "same.csv", "same.json",
                                "same.png"]
    assert {mp4_side["fingerprint"], mov_side["fingerprint"]} == {sha256(d.inbox / ".done" / n)
                                                                 for n in ("same.mp4", "same.mov")}
    assert mp4["csv"] != mov["csv"]


# SIGKILL of the daemon mid-job, then a restart, is
# test_daemon.py::test_sigkill_mid_job_then_restart_gives_the_same_csv_once

@pytest.mark.parametrize("how", ["SIGTERM to the daemon", "Ctrl-C: SIGINT to its process group"])
def test_stop_signal_during_a_job_exits_0_and_the_job_resumes_on_restart(daemon, clip, how):
    settings = dict(workers=2, shard_frames=2, stop_timeout_seconds=30)
    ctrl_c = how.startswith("Ctrl-C")
    d = daemon(**settings, preexec_fn=os.setsid if ctrl_c else None).start()  # own group: killpg hits only it
    sub = d.subscribe()
    name = "interrupted.mp4" if ctrl_c else "terminated.mp4"
    drop(clip(name, 130 + 10 * ctrl_c, 8), d.inbox, name)  # four shards of two frames
    first = sub.wait_for(lambda e: e["type"] == "progress" and e["file"] == name, 120)
    assert first["frames_done"] < first["frames_total"]
    asked = time.monotonic()
    if ctrl_c:  # the terminal signals the daemon and its workers alike
        os.killpg(d.proc.pid, signal.SIGINT)
    else:
        d.signal(signal.SIGTERM)
    assert d.wait(30 + 15) == 0, "".join(d.log[-30:])
    assert time.monotonic() - asked < 30 + 5
    assert "Traceback" not in "".join(d.log), "".join(d.log)
    sub.wait_for(lambda e: e["type"] == "daemon_stopping", 10)
    assert not [e for e in sub.events if e["type"] in ("job_done", "job_failed")]
    assert not list(d.outbox.rglob("*.csv")) and not d.socket_path.exists()
    stopped_at = max(e["frames_saved"] for e in sub.events if e["type"] == "progress")

    again = daemon(root=d.root, **settings).start()
    sub = again.subscribe()
    assert_done(again, sub, name, 8, timeout=180, times_queued=0)  # resumed, not queued anew
    progress = [e for e in sub.events if e["type"] == "progress"]
    assert progress[0]["frames_done"] >= stopped_at, "work finished before the stop was done again"
    assert again.outbox_files() == [name.replace(".mp4", suffix) for suffix in (".csv", ".json", ".png")]


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def _fill(folder: Path, leave_pages: int) -> Path:
    """Fill the filesystem of ``folder`` (with ``folder/.filler``) until only ``leave_pages`` blocks are free."""
    filler = folder / ".filler"
    with open(filler, "wb") as f:
        while os.statvfs(folder).f_bavail > leave_pages:
            f.write(b"\0" * os.statvfs(folder).f_bsize)
            f.flush()
    return filler


def _waiting(d: DaemonProcess, name: str) -> str | None:
    return next((r["waiting"] for r in d.status()["running"] if r["file"] == name and r.get("waiting")), None)


def test_full_or_read_only_outbox_makes_finished_jobs_wait_and_resume(daemon, clip, tmp_path):
    """Decided behaviour: a job whose CSV cannot be written for a reason of the outbox's filesystem (full,
    read-only, no permission) waits, its input and results kept, says why in ``status`` and the log,
    and retries every rescan period until it can write. Needs root to mount a 64 KiB tmpfs; without
    it, ENOSPC is injected into the daemon process instead (the first part only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = _mount_tmpfs(disk, "64k")
    outbox = disk / "outbox"
    full = tmp_path / "full.flag"
    d = None
    try:
        # a waiting job retries every rescan period (2 s): the checks below fall between two attempts
        # no plots: a 64 KiB disk is sized for CSVs and sidecars (a plot alone is larger)
        d = daemon(workers=2, rescan_seconds=2, plots="false", env={} if mounted else injected(tmp_path, full=full))
        d.outbox = outbox
        d.start()
        sub = d.subscribe()

        # full: the finished job waits with the reason; its input is kept
        filler = _fill(disk, 0) if mounted else full
        filler.touch()
        drop(clip("first.mp4", 150, 2), d.inbox, "first.mp4")
        reason = wait_until(lambda: _waiting(d, "first.mp4"), 120, "first.mp4 waiting for space")
        assert "No space left on device" in reason and str(outbox) in reason
        assert (d.inbox / "first.mp4").is_file()
        assert not [e for e in sub.events if e["type"] in ("job_done", "job_failed")]
        assert not list(outbox.glob("first*"))
        assert_outbox_clean(outbox)
        filler.unlink()
        first, _, _ = assert_done(d, sub, "first.mp4", 2)
        if not mounted:
            assert {"outbox-patched", "enospc"} <= set(injected_log(tmp_path))
            return

        # room for the CSV but not for its sidecar: the CSV must not stay behind alone
        filler = _fill(disk, -(-Path(first["csv"]).stat().st_size // os.statvfs(disk).f_bsize))
        drop(clip("second.mp4", 152, 2), d.inbox, "second.mp4")
        wait_until(lambda: _waiting(d, "second.mp4"), 120, "second.mp4 waiting for space")
        assert not list(outbox.glob("second*"))
        assert_outbox_clean(outbox)
        filler.unlink()
        assert_done(d, sub, "second.mp4", 2)

        # read-only: the same, until it is writable again
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        drop(clip("third.mp4", 154, 2), d.inbox, "third.mp4")
        reason = wait_until(lambda: _waiting(d, "third.mp4"), 120, "third.mp4 waiting for a writable outbox")
        assert "Read-only file system" in reason
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        assert_done(d, sub, "third.mp4", 2)
        assert d.outbox_files() == [f"{n}.{x}" for n in ("first", "second", "third") for x in ("csv", "json")]
        assert_alive(d)
    finally:
        if d is not None:
            d.stop()
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


def _without_dac_override() -> None:
    """preexec_fn: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so that root,
    after exec, is bound by file permissions like anyone else."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_file_without_read_permission_is_set_aside_with_a_reason(daemon, clip, tmp_path):
    secret = clip("secret source.mp4", 160, 2)
    preexec = None
    if os.geteuid() == 0:  # root reads anything: run the daemon as root without the override capabilities
        probe = tmp_path / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            denied = subprocess.run([sys.executable, "-c", f"open({str(probe)!r}).read()"],
                                    preexec_fn=_without_dac_override, capture_output=True).returncode != 0
        except subprocess.SubprocessError:
            denied = False
        if not denied:
            pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE here: chmod 000 would not stop reading")
        preexec = _without_dac_override
    d = daemon(workers=1, preexec_fn=preexec).start()
    sub = d.subscribe()
    shutil.copyfile(secret, tmp_path / "locked.mp4")
    (tmp_path / "locked.mp4").chmod(0)
    drop_target = d.inbox / "locked.mp4"
    os.rename(tmp_path / "locked.mp4", drop_target)
    wait_until(lambda: (d.inbox / ".failed" / "locked.mp4.error.txt").is_file(), 60,
               "locked.mp4.error.txt in .failed")  # no job, so no event: it never got a fingerprint
    text = (d.inbox / ".failed" / "locked.mp4.error.txt").read_text()
    assert "locked.mp4" in text and "cannot be read" in text and "permission" in text.lower(), text
    assert (d.inbox / ".failed" / "locked.mp4").is_file() and not drop_target.exists()
    assert not d.outbox_files()
    assert_alive(d)
    # after fixing the permissions, dropping it again works
    moved = d.inbox / ".failed" / "locked.mp4"
    moved.chmod(0o644)
    shutil.move(moved, d.inbox / "locked.mp4")
    assert_done(d, sub, "locked.mp4", 2)


def _store_with_a_job(state: Path) -> Path:
    state.mkdir(parents=True)
    with JobStore(state / "jobs.sqlite3") as store:
        job, _ = store.add_job("a" * 64, Path("/videos/a.mp4"), "", "a.mp4")
        store.start(job.id)
        store.set_plan(job.id, 10, "{}", [(0, 5), (5, 10)])
    return state / "jobs.sqlite3"


def _aud_run(d: DaemonProcess) -> subprocess.CompletedProcess:
    return subprocess.run(d.command(), env={**os.environ, **d.env}, capture_output=True, text=True, timeout=120)


def test_corrupted_state_database_stops_the_start_and_is_kept(tmp_path):
    require_shared(*NEEDS)
    d = DaemonProcess(root=tmp_path)
    db = _store_with_a_job(d.state)
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) >= 2 * page
    data[page + 8:page + 200] = os.urandom(192)  # damage the second page (a table's b-tree page)
    db.write_bytes(bytes(data))
    before = sha256(db)
    result = _aud_run(d)
    assert result.returncode != 0
    assert "corrupted" in result.stderr and "jobs.sqlite3" in result.stderr and "move it aside" in result.stderr, \
        result.stderr
    assert sha256(db) == before, "the corrupted store was written to"
    assert not d.socket_path.exists()


def test_locked_state_database_stops_the_start_without_losing_jobs(tmp_path):
    require_shared(*NEEDS)
    d = DaemonProcess(root=tmp_path)
    db = _store_with_a_job(d.state)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = _aud_run(d)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode != 0
    assert "locked" in result.stderr and "jobs.sqlite3" in result.stderr, result.stderr
    with JobStore(db) as store:
        (job,) = store.jobs()
        assert (job.name, job.state, job.frames_total) == ("a.mp4", "running", 10)
        assert len(store.shards(job.id)) == 2


def test_empty_state_database_stops_the_start_and_is_kept(tmp_path):
    """A 0-byte jobs.sqlite3 (a full disk, a failed copy) used to be taken silently as a new store: the job
    history and the queued jobs gone without a word."""
    require_shared(*NEEDS)
    d = DaemonProcess(root=tmp_path)
    d.state.mkdir(parents=True)
    db = d.state / "jobs.sqlite3"
    db.touch()
    result = _aud_run(d)
    assert result.returncode != 0
    assert "jobs.sqlite3 is empty (0 bytes)" in result.stderr and "move it aside" in result.stderr, result.stderr
    assert db.stat().st_size == 0 and not d.socket_path.exists()


# Injected into `aud run` (PYTHONPATH, no product hooks): while the flag file exists, the job store's
# add_job raises StoreError, as a full state disk makes SQLite do.
STORE_FAULT = textwrap.dedent('''
    import os, sys
    if "run" in sys.argv and "--multiprocessing-fork" not in sys.argv:
        import daemon.jobs.store as store
        real = store.JobStore.add_job

        def add_job(self, *args, **kwargs):
            if os.path.exists(os.environ["AUD_TEST_STORE_FLAG"]):
                with open(os.environ["AUD_TEST_LOG"], "a") as f:
                    f.write("store-full\\n")
                raise store.StoreError("job store: database or disk is full")
            return real(self, *args, **kwargs)

        store.JobStore.add_job = add_job
''')


def test_a_store_error_makes_a_dropped_file_wait_in_status_and_it_is_taken_later(daemon, clip, tmp_path):
    """Issue 22 item 3(a): the watcher marked the file delivered before the store took it, and the
    StoreError was not caught: the file was never looked at again until a restart."""
    flag = tmp_path / "store.flag"
    flag.touch()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(STORE_FAULT)
    path = os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))
    d = daemon(workers=1, plots="false", env={"PYTHONPATH": path, "AUD_TEST_LOG": str(tmp_path / "injected.log"),
                                              "AUD_TEST_STORE_FLAG": str(flag)}).start()
    sub = d.subscribe()
    drop(clip("stuck.mp4", 60, 4), d.inbox, "stuck.mp4")
    waiting = wait_until(lambda: next((w for w in d.status()["waiting"] if w["file"].endswith("stuck.mp4")
                                       and "job store" in w["reason"]), None), 60, "stuck.mp4 waiting in status")
    assert "database or disk is full" in waiting["reason"] and "tried again every 2 s" in waiting["reason"]
    assert (tmp_path / "injected.log").read_text().count("store-full") >= 1
    flag.unlink()  # space freed
    assert_done(d, sub, "stuck.mp4", 4)
    assert not [w for w in d.status()["waiting"] if w["file"].endswith("stuck.mp4")]
    assert_alive(d)
