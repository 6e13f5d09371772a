"""What Dask's nanny environment costs a shard, and what ``keep_frame_buffers_on_heap`` gives back.

A Dask nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.
pre-spawn-environ``). On glibc, setting it also freezes the mmap threshold at 128 KiB. This runs one
shard of the shared clip in a fresh one-thread process (as a worker would: ``prepare_process``) under
three environments, alternating, ``--repeat`` times, and prints the median frames/s of each:

- ``default``: glibc's defaults (a local pool's worker);
- ``dask-env``: ``MALLOC_TRIM_THRESHOLD_=65536``, as under a Dask nanny;
- ``dask-env+fix``: the same, then ``dask_worker.keep_frame_buffers_on_heap()`` (what the plugin does).

    .venv/bin/python bench/malloc_threshold.py [--frames 48] [--repeat 3] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = ("default", "dask-env", "dask-env+fix")


def child(mode: str, models: Path, video: Path, frames: int) -> None:
    from daemon.core.pipeline import PipelineOptions
    from daemon.core.shard import ShardTask, run_shard
    from daemon.core.video import probe
    from daemon.core.worker import prepare_process

    if mode == "dask-env+fix":
        from daemon.jobs.dask_worker import keep_frame_buffers_on_heap

        assert keep_frame_buffers_on_heap(), "mallopt did not take (not glibc?)"
    pipeline = prepare_process(PipelineOptions(models, threads=1))
    info = probe(str(video))
    run_shard(pipeline, ShardTask.of(info, 0, 4))  # warm-up
    began = time.perf_counter()
    run_shard(pipeline, ShardTask.of(info, 4, 4 + frames))
    print(json.dumps({"mode": mode, "fps": frames / (time.perf_counter() - began)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=MODES)
    args = parser.parse_args()
    models, video = args.shared / "models" / "openface3", args.shared / "media" / "hamilton_clip.mp4"
    if args.child:
        child(args.child, models, video, args.frames)
        return
    for path in (models, video):
        if not path.exists():
            sys.exit(f"{path} not found: this benchmark needs the shared models and clip (--shared)")
    fps: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.repeat):
        for mode in MODES:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            if mode != "default":
                env["MALLOC_TRIM_THRESHOLD_"] = "65536"
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--frames", str(args.frames),
                                  "--shared", str(args.shared)], env=env, check=True, capture_output=True,
                                 text=True, cwd=Path(__file__).resolve().parents[1])
            fps[mode].append(json.loads(out.stdout.strip().splitlines()[-1])["fps"])
    base = statistics.median(fps["default"])
    for mode in MODES:
        med = statistics.median(fps[mode])
        runs = ", ".join(f"{x:.2f}" for x in fps[mode])
        print(f"{mode:13s} {med:6.2f} frames/s ({med / base:.2f} of default)  runs: {runs}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
