#!/usr/bin/env python
"""How much memory does the daemon take to write a long recording's result? The results writer alone.

    PYTHONPATH=$PWD .venv/bin/python bench/assembly_memory.py VIDEO [VIDEO ...] [--au45] [--faces primary]

For each video (e.g. ``bench/length.py``'s looped 1- and 60-minute clips), in a fresh process: a job store
holding every shard's rows as the workers would have stored them (one face a frame; random measurements;
landmarks and eye openness empty unless ``--au45``), then ``ResultsWriter.write`` as the runner calls it
at the end of a job (the stored results read, assembled, the person followed, tables, the plot, the sidecar
and the CSV). Measured: the peak resident memory of the process during the write above what it held just
before reading the stored results (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``), per
frame; and the write's time. The job store's rows are random, so the CSV is not a result: only its size and
the memory and time it takes matter. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1 << 20


def _vm(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {name} in /proc/self/status")


def measure(video: Path, au45: bool, faces: str) -> dict:
    """In this process: store the rows, then write the result; the peak memory of the write."""
    import numpy as np

    from daemon.core.results import FaceRows
    from daemon.core.schema import SHARD_FORMAT
    from daemon.core.video import probe
    from daemon.jobs import inputs
    from daemon.jobs.active import prepare
    from daemon.jobs.plan import TimeSelection
    from daemon.jobs.store import JobStore
    from daemon.jobs.writer import ResultsWriter
    from daemon.output import OutputOptions
    from tests.jobs.test_runner import Destination

    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="aud-assembly-"))
    store = JobStore(work / "jobs.sqlite3")
    job, _ = store.add_job(inputs.fingerprint(video), video, "", video.name, "k",
                           identity=inputs.identity_text(inputs.identity(video)))
    store.start(job.id)
    active = prepare(store, job, TimeSelection(), 32, 2, probe)
    for index in sorted(active.ranges):
        task = active.task(index)
        frames = np.arange(task.start, task.stop, task.step)
        rows = FaceRows.empty(len(frames))
        rows.frame[:], rows.timestamp[:] = frames, frames / 29.97
        rows.success[:], rows.detection[:], rows.confidence[:] = True, 0, rng.uniform(0.5, 1, len(frames))
        rows.box[:] = [100, 50, 300, 300] + rng.normal(0, 2, (len(frames), 4))
        rows.gaze[:], rows.emotion[:], rows.au[:] = (rng.normal(0, 1, (len(frames), k)) for k in (2, 8, 8))
        if au45:
            rows.landmarks[:] = rng.uniform(100, 300, (len(frames), 98, 2))
            rows.eye_open[:] = rng.uniform(0.1, 0.4, (len(frames), 2))
        store.shard_done(job.id, index, rows.to_bytes(), SHARD_FORMAT)
    destination = Destination(work / "out")
    destination.folder.mkdir()
    writer = ResultsWriter(destination, OutputOptions(faces=faces), {})

    async def write() -> tuple[Path, float, int, int]:
        await writer.warm_up()  # the daemon's writer has the plot's library loaded before its first result
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current resident memory
        before = _vm("VmRSS")
        began = time.perf_counter()
        csv = await writer.write(active, await asyncio.to_thread(store.shard_results, job.id))
        return csv, time.perf_counter() - began, before, _vm("VmHWM")

    try:
        csv, seconds, before, peak = asyncio.run(write())
    finally:
        writer.close()
        store.close()
    return {"video": video.name, "frames": active.frames_total, "au45": au45, "faces": faces,
            "write_s": round(seconds, 2), "rss_before_mb": round(before / MB, 1),
            "peak_growth_mb": round((peak - before) / MB, 1),
            "bytes_per_frame": round((peak - before) / active.frames_total),
            "csv_mb": round(csv.stat().st_size / MB, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", type=Path, nargs="+")
    ap.add_argument("--au45", action="store_true", help="rows with landmarks and eye openness (STAR on)")
    ap.add_argument("--faces", default="primary", choices=["primary", "best", "all"])
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # the child: measure this video, print JSON
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.au45, args.faces)))
        return 0
    rows = []
    project = Path(__file__).resolve().parents[1]
    for video in args.videos:
        cmd = [sys.executable, __file__, str(video), "--one", str(video), "--faces", args.faces,
               *(["--au45"] if args.au45 else [])]
        env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(project))}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
