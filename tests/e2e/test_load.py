"""Load: 50 short videos dropped at once into a real `aud run`: each processed exactly once, memory flat."""

from __future__ import annotations

import json
import shutil
import threading
import time

import psutil
import pytest

from daemon.output import read_csv
from tests.conftest import SHARED, require_shared
from tests.e2e.checks import assert_alive, assert_outbox_clean, sha256
from tests.e2e.daemonproc import DaemonProcess
from tests.media import drop, read_frames, write_video

pytestmark = pytest.mark.slow
CLIP = SHARED / "media" / "hamilton_clip.mp4"
VIDEOS = 50
RSS_GROWTH_LIMIT = 150 * 1024 * 1024


class RssSampler:
    """Samples a process's resident memory every ``period`` seconds in a thread."""

    def __init__(self, pid: int, period: float = 0.1):
        self.process = psutil.Process(pid)
        self.samples: list[int] = [self.process.memory_info().rss]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            self.samples.append(self.process.memory_info().rss)

    def stop(self) -> tuple[int, int, int]:
        self._stop.set()
        self._thread.join(5)
        self.samples.append(self.process.memory_info().rss)
        return self.samples[0], max(self.samples), self.samples[-1]


def test_50_short_videos_dropped_at_once_are_each_processed_once_in_flat_memory(tmp_path):
    require_shared("media/hamilton_clip.mp4", "models/openface3/retinaface.onnx", "models/openface3/mtl.onnx",
                   "models/openface3/star.onnx")
    frames = read_frames(CLIP, 0, 5 * VIDEOS + 2)
    videos = {}  # name -> (path, frames)
    for i in range(VIDEOS):
        count = 1 + i % 2
        # names 0-19 come in pairs sharing a stem (x.mp4 and x.mov): their CSVs must not collide
        name = f"pair {i // 2:02d}.{'mp4' if i % 2 else 'mov'}" if i < 20 else f"clip {i:02d}.mp4"
        videos[name] = (write_video(tmp_path / name, frames[5 * i:5 * i + count]), count)
    frames_of = {sha256(path): count for path, count in videos.values()}
    assert len(frames_of) == VIDEOS  # all different content

    d = DaemonProcess(workers=2).start()
    try:
        sub = d.subscribe()
        rss = RssSampler(d.proc.pid)
        fds_before = rss.process.num_fds()
        began = time.monotonic()
        for name, (path, _) in videos.items():
            drop(path, d.inbox, name)
        for n in range(1, VIDEOS + 1):
            sub.wait_for(lambda e, n=n: sum(x["type"] in ("job_done", "job_failed") for x in sub.events) >= n, 300)
        took = time.monotonic() - began
        start, peak, end = rss.stop()
        fds_after = rss.process.num_fds()
        assert_alive(d)
    finally:
        d.stop()
    mb = 1024 * 1024
    print(f"\n50 videos in {took:.1f} s; daemon RSS start {start / mb:.1f} MB, peak {peak / mb:.1f} MB, "
          f"end {end / mb:.1f} MB (peak - start {(peak - start) / mb:.1f} MB, {len(rss.samples)} samples); "
          f"open files {fds_before} -> {fds_after}")

    failed = [e for e in sub.events if e["type"] == "job_failed"]
    assert not failed, failed
    queued = [e for e in sub.events if e["type"] == "job_queued"]
    done = [e for e in sub.events if e["type"] == "job_done"]
    assert len(queued) == len({e["job"] for e in queued}) == VIDEOS
    assert len(done) == len({e["job"] for e in done}) == VIDEOS
    assert sorted(e["file"] for e in done) == sorted(videos)
    assert len({e["csv"] for e in done}) == VIDEOS
    assert_outbox_clean(d.outbox)
    csvs = sorted(d.outbox.glob("*.csv"))
    assert len(csvs) == VIDEOS
    seen = {}
    for csv_path in csvs:
        fingerprint = json.loads(csv_path.with_suffix(".json").read_text())["fingerprint"]
        seen[fingerprint] = len(read_csv(csv_path))
    assert seen == frames_of  # every video's result once, complete, under its own name
    assert sorted(p.name for p in (d.inbox / ".done").iterdir()) == sorted(videos)
    assert not [p for p in d.inbox.iterdir() if not p.name.startswith(".")]
    assert peak - start < RSS_GROWTH_LIMIT
    assert fds_after <= fds_before + 5  # no descriptor left open per video
    shutil.rmtree(d.root, ignore_errors=True)  # kept for a look when a check above fails
