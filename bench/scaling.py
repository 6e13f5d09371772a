#!/usr/bin/env python
"""Two workers against one worker on one thread, `aud extract` runs alternating, in one sitting.

    .venv/bin/python bench/scaling.py [VIDEO] [--pairs 3] [--workers 2]

The ratio "N workers / one single-threaded worker" is the scaling target; measured from runs minutes
apart (as in ``bench.py``'s tables) it carries the machine's drift, so here each pair runs back to back
and the report gives every pair's ratio and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (bench.run_extract: the same subprocess run and sidecar reading)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", type=Path, nargs="?",
                    default=bench.PROJECT.parent / "shared" / "media" / "hamilton_clip.mp4")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", type=Path, default=bench.PROJECT.parent / "shared" / "models" / "openface3")
    args = ap.parse_args(argv)
    one, many = [], []
    with tempfile.TemporaryDirectory(prefix="aud-scaling-") as tmp:
        env = bench.isolate_environment(Path(tmp))  # no AUD_* variables, no user config file
        for i in range(args.pairs):
            x = bench.run_extract(args.video.resolve(), Path(tmp) / "one.csv", args.models.resolve(), 1, True,
                                  {**env, "AUD_THREADS_PER_WORKER": "1"})
            y = bench.run_extract(args.video.resolve(), Path(tmp) / "many.csv", args.models.resolve(),
                                  args.workers, True, env)
            one.append(x["fps"])
            many.append(y["fps"])
            print(f"pair {i + 1}: 1 worker on 1 thread {x['fps']} frames/s, {args.workers} workers {y['fps']} "
                  f"frames/s, ratio {y['fps'] / x['fps']:.3f}", flush=True)
    print(f"medians: 1 worker on 1 thread {statistics.median(one)}, {args.workers} workers "
          f"{statistics.median(many)} frames/s; ratio {statistics.median(many) / statistics.median(one):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
