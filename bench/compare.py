#!/usr/bin/env python
"""Two versions of aud side by side: `aud extract` of one video, runs alternating, in one sitting.

    .venv/bin/python bench/compare.py BASE [NEW] VIDEO [--workers 2] [--repeat 3] [--models DIR]

BASE and NEW are git revisions (NEW defaults to the work tree as it is). Each is checked out into a
temporary worktree (the work tree itself is used for NEW when not given) and run with this virtualenv's
Python and packages: ``python -m daemon extract VIDEO --workers N`` with the version's ``daemon`` first
on ``PYTHONPATH``. The runs alternate (BASE, NEW, BASE, NEW, ...) so the machine's slow and fast spells
fall on both, and the report gives every run's frames/s, time to first frame and wall time, the median
of each, the ratio NEW/BASE of the medians, and whether the two CSVs are identical.

This is how a speed change is judged here: a ratio measured side by side, never two numbers from runs
at different times on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def worktree(revision: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(PROJECT), "worktree", "add", "--detach", "-f", str(into), revision],
                   check=True, capture_output=True, text=True)
    return into


def run(source: Path, video: Path, csv_path: Path, models: Path, workers: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUD_")}
    env["PYTHONPATH"] = str(source)
    env["XDG_CONFIG_HOME"] = str(csv_path.parent / "xdg-config")  # no user config file
    cmd = [sys.executable, "-m", "daemon", "extract", str(video), "-o", str(csv_path), "--models", str(models),
           "--workers", str(workers), "--provider", "cpu"]
    done = subprocess.run(cmd, env=env, cwd=csv_path.parent, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"compare: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    sidecar = json.loads(csv_path.with_suffix(".json").read_text())
    return {"fps": sidecar["frames_per_second"], "first_frame_seconds": sidecar.get("first_frame_seconds"),
            "wall_seconds": sidecar["wall_seconds"], "frames": sidecar["frames"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revisions", nargs="+", help="BASE [NEW] VIDEO")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", type=Path, default=PROJECT.parent / "shared" / "models" / "openface3")
    args = ap.parse_args(argv)
    if len(args.revisions) not in (2, 3):
        ap.error("give BASE [NEW] VIDEO")
    *revisions, video = args.revisions
    video, models = Path(video).resolve(), args.models.resolve()
    with tempfile.TemporaryDirectory(prefix="aud-compare-") as tmp:
        tmp = Path(tmp)
        sources = {"base": worktree(revisions[0], tmp / "base")}
        sources["new"] = worktree(revisions[1], tmp / "new") if len(revisions) == 2 else PROJECT
        runs: dict[str, list[dict]] = {"base": [], "new": []}
        try:
            for i in range(args.repeat):
                for name, source in sources.items():
                    runs[name].append(run(source, video, tmp / f"{name}.csv", models, args.workers))
                    x = runs[name][-1]
                    print(f"run {i + 1} {name}: {x['fps']} frames/s, first frame {x['first_frame_seconds']} s, "
                          f"wall {x['wall_seconds']} s", flush=True)
            identical = (tmp / "base.csv").read_bytes() == (tmp / "new.csv").read_bytes()
        finally:
            for name in ("base", "new"):
                if sources[name] != PROJECT:
                    subprocess.run(["git", "-C", str(PROJECT), "worktree", "remove", "--force", str(sources[name])],
                                   capture_output=True)
    median = {name: {k: statistics.median(x[k] for x in rs) for k in ("fps", "first_frame_seconds", "wall_seconds")}
              for name, rs in runs.items()}
    label = {"base": revisions[0], "new": revisions[1] if len(revisions) == 2 else "work tree"}
    for name in ("base", "new"):
        m = median[name]
        print(f"{name} ({label[name]}): median {m['fps']} frames/s, first frame {m['first_frame_seconds']} s, "
              f"wall {m['wall_seconds']} s over {args.repeat} runs")
    print(f"new / base frames/s: {median['new']['fps'] / median['base']['fps']:.3f}; "
          f"CSVs {'identical' if identical else 'differ'} ({video.name}, {args.workers} workers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
