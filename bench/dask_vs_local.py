#!/usr/bin/env python
"""The same video through ``aud run`` on the local process pool and on a Dask cluster, on the same cores.

    .venv/bin/python bench/dask_vs_local.py [VIDEO] [--frames N] [--repeat 3] [--workers 2]

Local: ``aud run --workers W``. Dask: a ``dask scheduler`` and W ``dask worker --nthreads 1`` processes
on 127.0.0.1 (``tests/jobs/daskcluster.py``, started once and kept for every run), and ``aud run
--executor dask``. Each run is a fresh daemon (own inbox, outbox and state, so the video is a new job
every time), started and ready (models loaded) before the clock starts; the two sides alternate, local
first, ``--repeat`` times. A run's frames/s is the job's frames over the time from ``job_started`` to
``job_done`` (probe, shards, assembly, the CSV and sidecar written); the time from the drop (rename into
the inbox, ``--settle`` seconds of settling) is reported beside it. The ratio is Dask's median over the
local pool's median, and each pair's ratio is printed as it comes.

Every number is wall-clock time on this machine: run it on a quiet one. ``--frames 24 --repeat 1`` is a
smoke run. The shared MTL and STAR have random weights (their cost is real, their outputs are not AUs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench
from tests.jobs.daskcluster import Cluster


def run_once(name: str, video: Path, models: Path, work: Path, settle: float, workers: int,
             cluster: Cluster | None) -> dict:
    """One fresh ``aud run``, the video dropped once; its timings."""
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    env = {"AUD_SETTLE_SECONDS": str(settle), "AUD_PLOTS": "false"}
    if cluster is not None:
        env.update({"AUD_EXECUTOR": "dask", "AUD_DASK_SCHEDULER": cluster.address})
    daemon = bench.daemon_class()(models, root=root, workers=workers, env=env)
    daemon.start(timeout=300)
    try:
        sub = daemon.subscribe()
        part = daemon.inbox / f".{video.name}.part"
        shutil.copyfile(video, part)
        dropped = time.time()
        part.rename(daemon.inbox / video.name)
        done = sub.wait_for(lambda e: e["type"] in ("job_done", "job_failed"), 4 * 3600)
        if done["type"] != "job_done":
            raise RuntimeError(f"{name}: the job failed: {done}")
        started = next(e for e in sub.events if e["type"] == "job_started")
        sub.close()
    finally:
        daemon.stop()
    frames = int(done["frames"])
    processing, from_drop = done["ts"] - started["ts"], done["ts"] - dropped
    shutil.rmtree(root, ignore_errors=True)
    return {"frames": frames, "seconds": round(processing, 3), "fps": round(frames / processing, 3),
            "drop_to_done_seconds": round(from_drop, 3), "fps_from_drop": round(frames / from_drop, 3)}


def main(argv: list[str] | None = None) -> int:
    shared = bench.PROJECT.parent / "shared"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", type=Path, nargs="?", default=shared / "media" / "hamilton_clip.mp4")
    ap.add_argument("--frames", type=int, help="measure a cut of the first N frames (default: the whole video)")
    ap.add_argument("--repeat", type=int, default=3, help="runs on each side, alternating (default 3)")
    ap.add_argument("--workers", type=int, default=2, help="local workers and Dask workers (default 2)")
    ap.add_argument("--models", type=Path, default=shared / "models" / "openface3")
    ap.add_argument("--settle", type=float, default=0.5, help="the daemons' settle seconds (default 0.5)")
    ap.add_argument("--json", type=Path, help="also write every run's numbers to this file")
    args = ap.parse_args(argv)
    if not args.video.is_file():
        ap.error(f"no such video: {args.video}")
    with tempfile.TemporaryDirectory(prefix="aud-dask-bench-", dir="/tmp") as tmp:  # short: AF_UNIX paths
        work = Path(tmp)
        bench.isolate_environment(work)
        video = args.video.resolve()
        if args.frames:
            video = bench.write_video(video, work / f"cut{args.frames}.mp4", None, args.frames)
        (work / "cluster").mkdir()
        cluster = Cluster(work / "cluster", workers=args.workers)
        runs: dict[str, list[dict]] = {"local": [], "dask": []}
        try:
            for i in range(args.repeat):
                for side, c in (("local", None), ("dask", cluster)):
                    runs[side].append(run_once(side, video, args.models.resolve(), work, args.settle,
                                               args.workers, c))
                local, dask = runs["local"][-1], runs["dask"][-1]
                print(f"pair {i + 1}: local {local['fps']} frames/s, dask {dask['fps']} frames/s, "
                      f"ratio {dask['fps'] / local['fps']:.3f} (from the drop: {local['fps_from_drop']} and "
                      f"{dask['fps_from_drop']})", flush=True)
        finally:
            cluster.stop()
    medians = {side: statistics.median(r["fps"] for r in rs) for side, rs in runs.items()}
    frames = runs["local"][0]["frames"]
    print(f"{video.name if not args.frames else args.video.name + f' (first {frames} frames)'}, "
          f"{args.workers} workers, median of {args.repeat}: local {medians['local']:.3f} frames/s "
          f"({', '.join(str(r['fps']) for r in runs['local'])}), dask {medians['dask']:.3f} frames/s "
          f"({', '.join(str(r['fps']) for r in runs['dask'])}); dask/local {medians['dask'] / medians['local']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"video": str(args.video), "frames": frames, "workers": args.workers,
                                         "runs": runs, "medians": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
