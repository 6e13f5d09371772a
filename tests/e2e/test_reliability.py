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
import errno
import json
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

from daemon.core.csvfile import read_csv
from daemon.shell.jobstore import JobStore
from tests.conftest import SHARED, require_shared
from tests.e2e.checks import (assert_alive, assert_done, assert_failed, assert_outbox_clean, ended, no_face_video,
                              queued, sha256, wait_until)
from tests.e2e.daemonproc import DaemonProcess
from tests.media import (audio_only, blank_payload, copy_slowly, drop, faststart, read_frames, rotated_portrait,
                         truncated_index_first, write_video)

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
    assert d.proc.returncode == 0, "".join(d.log[-40:])


@pytest.fixture
def daemon():
    procs = []

    def make(**kw) -> DaemonProcess:
        proc = DaemonProcess(**kw)
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        proc.stop()


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
    event = ended(sub, "8k.mp4", timeout=300)
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
    assert_outbox_clean(d.outbox)
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
    assert sorted(p.name for p in d.outbox.glob("swap*")) == ["swap.csv", "swap.json"]


def test_second_daemon_on_the_same_state_directory_is_refused(inbox):
    d, sub = inbox
    second = subprocess.run(d.command(), env={**os.environ, **d.env}, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert "already running" in second.stderr and f"pid {d.proc.pid}" in second.stderr, second.stderr
    assert_alive(d)
    assert d.socket_path.exists()
    assert d.request({"type": "status", "id": 7})["id"] == 7
