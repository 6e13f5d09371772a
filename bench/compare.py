#!/usr/bin/env python
"""Two versions of aud side by side: `aud extract` of one video, runs alternating, in one sitting.

    .venv/bin/python bench/compare.py BASE [NEW] VIDEO [--workers 2] [--repeat 3] [--models DIR] [--no-au45]
                                      [--new-env AUD_NAME=VALUE …]

BASE and NEW are git revisions (NEW defaults to the work tree as it is). Each is checked out into a
temporary worktree (the work tree itself is used for NEW when not given) and run with this virtualenv's
Python and packages: ``python -m daemon extract VIDEO --workers N`` with the version's ``daemon`` first
on ``PYTHONPATH``. The runs alternate (BASE, NEW, BASE, NEW, ...) so the machine's slow and fast spells
fall on both, and the report gives every run's frames/s, time to first frame, wall time and peak
memory (``bench.run_extract``), the median of each, the ratio NEW/BASE of the medians, and whether
the two CSVs are identical.

This is how a speed change is judged here: a ratio measured side by side, never two numbers from runs
at different times on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (bench.run_extract: the same subprocess run, sampling and sidecar reading)

PROJECT = bench.PROJECT
# fps_external: frames over the whole `aud extract` process, start to exit, the same for any version (each
# version's sidecar measures its own wall time its own way)
REPORTED = ("fps_external", "fps", "first_frame_seconds", "wall_seconds", "peak_rss_total_mb", "peak_pss_total_mb")


def worktree(revision: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(PROJECT), "worktree", "add", "--detach", "-f", str(into), revision],
                   check=True, capture_output=True, text=True)
    return into


def run(source: Path, video: Path, csv_path: Path, models: Path, workers: int, env: dict, au45: bool = True) -> dict:
    """``aud extract`` of the ``daemon`` in ``source``: run from a directory without one, with
    ``source`` on PYTHONPATH (run from the project, ``-m`` would find the work tree's first)."""
    # AUD_PLOTS=false: versions that write a plot beside the CSV skip it (older ones ignore the variable), so
    # both measure the same work
    return bench.run_extract(video, csv_path, models, workers, au45,
                             {**env, "PYTHONPATH": str(source), "AUD_PLOTS": "false"}, cwd=csv_path.parent)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revisions", nargs="+", help="BASE [NEW] VIDEO")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", type=Path, default=PROJECT.parent / "shared" / "models" / "openface3")
    ap.add_argument("--no-au45", dest="au45", action="store_false", help="both versions with --no-au45")
    ap.add_argument("--new-env", action="append", default=[], metavar="AUD_NAME=VALUE",
                    help="a setting for NEW only, e.g. AUD_FACES=best: the same work as a BASE whose default was "
                         "then another (repeatable)")
    args = ap.parse_args(argv)
    if len(args.revisions) not in (2, 3):
        ap.error("give BASE [NEW] VIDEO")
    *revisions, video = args.revisions
    video, models = Path(video).resolve(), args.models.resolve()
    with tempfile.TemporaryDirectory(prefix="aud-compare-") as tmp:
        tmp = Path(tmp)
        env = bench.isolate_environment(tmp)  # no AUD_* variables, no user config file
        envs = {"base": env, "new": {**env, **dict(item.split("=", 1) for item in args.new_env)}}
        sources = {"base": worktree(revisions[0], tmp / "base")}
        sources["new"] = worktree(revisions[1], tmp / "new") if len(revisions) == 2 else PROJECT
        runs: dict[str, list[dict]] = {"base": [], "new": []}
        try:
            for i in range(args.repeat):
                for name, source in sources.items():
                    runs[name].append(run(source, video, tmp / f"{name}.csv", models, args.workers, envs[name],
                                          args.au45))
                    x = runs[name][-1]
                    print(f"run {i + 1} {name}: {x['fps_external']} frames/s (process start to exit; sidecar "
                          f"{x['fps']}), first frame {x['first_frame_seconds']} s, "
                          f"wall {x['wall_seconds']} s, peak RSS/PSS sum {x['peak_rss_total_mb']}/"
                          f"{x['peak_pss_total_mb']} MB", flush=True)
            identical = (tmp / "base.csv").read_bytes() == (tmp / "new.csv").read_bytes()
        finally:
            for name in ("base", "new"):
                if sources[name] != PROJECT:
                    subprocess.run(["git", "-C", str(PROJECT), "worktree", "remove", "--force", str(sources[name])],
                                   capture_output=True)
    median = {name: {k: statistics.median(x[k] for x in rs) for k in REPORTED} for name, rs in runs.items()}
    label = {"base": revisions[0], "new": revisions[1] if len(revisions) == 2 else "work tree"}
    for name in ("base", "new"):
        m = median[name]
        print(f"{name} ({label[name]}): median {m['fps_external']} frames/s (sidecar {m['fps']}), "
              f"first frame {m['first_frame_seconds']} s, "
              f"wall {m['wall_seconds']} s, peak RSS/PSS sum {m['peak_rss_total_mb']}/{m['peak_pss_total_mb']} MB "
              f"over {args.repeat} runs")
    print(f"new / base frames/s: {median['new']['fps_external'] / median['base']['fps_external']:.3f}; "
          f"CSVs {'identical' if identical else 'differ'} ({video.name}, {args.workers} workers"
          f"{'' if args.au45 else ', AU45 off'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
