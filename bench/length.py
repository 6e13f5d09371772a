#!/usr/bin/env python
"""Does an hour-long recording cost the same per frame as a clip? One daemon, videos of growing length.

    .venv/bin/python bench/length.py [--minutes 1 5 20 60] [--au45-minutes 1 5] [--workers 2]
                                     [--work DIR] [--plot docs/length.png] [--json out.json]

Each video is the shared clip (640x360, 29.97 fps) looped to the length asked, with the frame number burned
into every frame (so no two frames are the same picture and a misplaced frame would show), encoded once
with libx264 (CRF 18, B-frames, a keyframe every 250 frames: what a camera or phone writes) and kept in
``--work`` for the next run. Each is copied into the inbox of a real ``aud run`` (2 workers, AU45 off:
where per-frame overheads show most; then the ``--au45-minutes`` lengths with AU45 on) and timed from
its events on the socket:

* time to first committed shard: from ``job_started`` (and from the drop) to the first ``progress`` event
  with ``frames_saved`` > 0 (the runner publishes one when a shard's rows are committed);
* frames/s over the whole job (``job_started`` to ``job_done``), and the sidecar's ``frames_per_second``;
* assembly + CSV + plot: from the last shard's commit (``frames_saved`` = every frame) to ``job_done``;
* peak PSS of the parent and of the largest worker (sampled every second; Linux PSS, else USS);
* job-store bytes per frame: the peak growth of ``jobs.sqlite3`` and its WAL during the job, over the frames;
* the CSV's size.

Prints a markdown table for docs/benchmark.md and draws total time and memory against length on log-log
axes. Needs ../shared (models and clip) and PyAV (the test extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (PROJECT, log, machine_info, daemon_class, read_frames)

MB = 1 << 20
CLIP = bench.PROJECT.parent / "shared" / "media" / "hamilton_clip.mp4"
MODELS = bench.PROJECT.parent / "shared" / "models" / "openface3"
FPS = Fraction(30000, 1001)


def make_video(path: Path, minutes: float, clip: Path = CLIP) -> Path:
    """The clip looped to ``minutes``, each frame numbered; reused when it exists."""
    if path.exists():
        return path
    import av
    import cv2

    frames = bench.read_frames(clip)
    total = round(minutes * 60 * float(FPS))
    part = path.with_suffix(".part.mp4")
    with av.open(str(part), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": "veryfast", "bf": "3",
                                                               "g": "250"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for i in range(total):
            image = frames[i % len(frames)].copy()
            cv2.putText(image, f"{i:06d}", (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())
    part.rename(path)
    return path


class Memory(bench.Sampling):
    """Peak PSS of a process (the daemon) and of its largest child (a worker), every ``interval`` s, and the
    peak size of the job store's files."""

    def __init__(self, pid: int, store: Path, interval: float = 1.0):
        self.pid, self.store, self.interval = pid, store, interval
        self.parent = self.worker = self.store_bytes = 0
        self.store_before = self._store_size()  # earlier jobs' rows stay in the store's pages
        super().__init__()

    @staticmethod
    def _pss(proc: psutil.Process) -> int:
        full = proc.memory_full_info()
        return getattr(full, "pss", full.uss)

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            self.parent = max(self.parent, self._pss(root))
            for child in root.children(recursive=True):
                self.worker = max(self.worker, self._pss(child))
        except psutil.Error:
            pass
        self.store_bytes = max(self.store_bytes, self._store_size() - self.store_before)

    def _store_size(self) -> int:
        return sum(p.stat().st_size for p in self.store.parent.glob(self.store.name + "*") if p.exists())

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                break


def run_length(daemon, sub, video: Path, name: str) -> dict:
    part = daemon.inbox / f".{name}.part"
    shutil.copyfile(video, part)
    with Memory(daemon.proc.pid, daemon.state / "jobs.sqlite3") as memory:
        dropped = time.time()
        part.rename(daemon.inbox / name)
        queued = sub.wait_for(lambda e: e["type"] == "job_queued" and e["file"] == name, 600)
        job = queued["job"]
        done = sub.wait_for(lambda e: e.get("job") == job and e["type"] in ("job_done", "job_failed"), 6 * 3600)
    if done["type"] != "job_done":
        raise RuntimeError(f"the job failed: {done}")
    events = [e for e in sub.events if e.get("job") == job]
    started = next(e for e in events if e["type"] == "job_started")
    progress = [e for e in events if e["type"] == "progress"]
    # frames_saved: the frames whose rows are committed (frames_done also counts frames seen in running shards;
    # the event at planning has neither)
    saved = [e for e in progress if e.get("frames_saved", 0) > 0]
    first_shard = saved[0]
    last_shard = next(e for e in saved if e["frames_saved"] == e["frames_total"])
    csv = Path(done["csv"])
    sidecar = json.loads(csv.with_suffix(".json").read_text())
    frames = int(done["frames"])
    job_seconds = done["ts"] - started["ts"]
    return {
        "frames": frames, "minutes": round(frames / float(FPS) / 60, 2),
        "first_shard_from_start_s": round(first_shard["ts"] - started["ts"], 3),
        "first_shard_from_drop_s": round(first_shard["ts"] - dropped, 3),
        "job_seconds": round(job_seconds, 3), "fps": round(frames / job_seconds, 3),
        "sidecar_fps": sidecar.get("frames_per_second"),
        "finish_seconds": round(done["ts"] - last_shard["ts"], 3),
        "parent_pss_mb": round(memory.parent / MB, 1), "worker_pss_mb": round(memory.worker / MB, 1),
        "store_bytes_per_frame": round(memory.store_bytes / frames, 1),
        "csv_mb": round(csv.stat().st_size / MB, 2),
    }


def run_daemon(videos: list[tuple[float, Path]], workers: int, au45: bool, work: Path) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix=f"length-{'au45' if au45 else 'noau45'}-", dir=work))
    daemon = bench.daemon_class()(MODELS, root=root, workers=workers,
                                  env={"AUD_AU45": "true" if au45 else "false", "AUD_SETTLE_SECONDS": "1"})
    daemon.start()
    rows = []
    try:
        sub = daemon.subscribe()
        for minutes, video in videos:
            row = {"au45": au45, "length_min": minutes, **run_length(daemon, sub, video, video.name)}
            bench.log(f"{minutes} min, AU45 {'on' if au45 else 'off'}: {row}")
            rows.append(row)
        sub.close()
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rows


COLUMNS = [("length_min", "minutes"), ("au45", "AU45"), ("frames", "frames"), ("fps", "frames/s (job)"),
           ("sidecar_fps", "frames/s (sidecar)"), ("first_shard_from_start_s", "first shard s (from start)"),
           ("first_shard_from_drop_s", "first shard s (from drop)"), ("finish_seconds", "assembly+CSV+plot s"),
           ("parent_pss_mb", "parent PSS MB"), ("worker_pss_mb", "worker PSS MB"),
           ("store_bytes_per_frame", "store bytes/frame"), ("csv_mb", "CSV MB")]


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join("on" if r[k] is True else "off" if r[k] is False else str(r[k])
                                       for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for au45, style in ((False, "o-"), (True, "s--")):
        sel = [r for r in rows if r["au45"] is au45]
        if not sel:
            continue
        label = f"AU45 {'on' if au45 else 'off'}"
        minutes = np.array([r["length_min"] for r in sel], float)
        ax1.loglog(minutes, [r["job_seconds"] for r in sel], style, label=label)
        ax2.loglog(minutes, [r["parent_pss_mb"] for r in sel], style, label=f"parent, {label}")
        ax2.loglog(minutes, [r["worker_pss_mb"] for r in sel], style, alpha=0.6, label=f"largest worker, {label}")
        ref = minutes * sel[0]["job_seconds"] / minutes[0]
        ax1.loglog(minutes, ref, ":", color="grey", label=f"proportional to length ({label})")
    ax1.set(xlabel="video length (minutes)", ylabel="job time (s)", title="Time against length")
    ax2.set(xlabel="video length (minutes)", ylabel="peak PSS (MB)", title="Memory against length")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 20, 60])
    ap.add_argument("--au45-minutes", type=float, nargs="*", default=[1, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "aud-length")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    bench.log(f"machine: {bench.machine_info()}")
    lengths = sorted(set(args.minutes) | set(args.au45_minutes))
    videos = {m: make_video(args.work / f"length-{m:g}min.mp4", m) for m in lengths}
    rows = run_daemon([(m, videos[m]) for m in args.minutes], args.workers, False, args.work)
    if args.au45_minutes:
        rows += run_daemon([(m, videos[m]) for m in args.au45_minutes], args.workers, True, args.work)
    print(markdown(rows))
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
