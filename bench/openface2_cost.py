#!/usr/bin/env python
"""What the OpenFace 2.2 AUs cost: `aud extract --au-models openface3` against `--au-models both`, runs
alternating, in one sitting, at 640x360 and 1920x1080 (issue 23: at most 5 % more time per frame).

    .venv/bin/python bench/openface2_cost.py [VIDEO] [--frames N] [--workers 2] [--repeat 3] [--limit 1.05]

VIDEO defaults to the shared 640x360 clip; the 1920x1080 video is its upscale (``bench.write_video``, mp4v);
``--frames N`` measures the first N frames of each. The model set is the shared OpenFace 3.0 one plus OpenFace
2.2 files: ``--models`` when it holds them, else stand-ins generated in the temporary folder
(tests/core/openface2au/standins.py: random weights in the official formats, the same arithmetic and sizes as the
real files, so the same cost). Timing as bench/mirror_cost.py: **steady** (between the first and last progress
line) and **wall** (the sidecar's ``wall_seconds``) per frame, medians over the runs, the ratio both/openface3;
exit 1 when a steady ratio exceeds ``--limit`` or when the OpenFace 3.0 columns of the two CSVs differ.
"""

from __future__ import annotations

import csv
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mirror_cost import Run, cost_parser, run  # noqa: E402  (one timed `aud extract` subprocess)

import bench  # (isolate_environment, write_video)
from daemon.core.openface2au.options import have_files  # noqa: E402
from daemon.core.schema import COLUMNS  # noqa: E402
from tests.core.openface2au import standins  # noqa: E402

PROJECT = bench.PROJECT
SETTINGS = {"openface3": ["--au-models", "openface3"], "both": ["--au-models", "both"]}
SIZES = {"640x360": None, "1920x1080": (1920, 1080)}


def model_set(models: Path, work: Path) -> Path:
    """``models`` if it holds the OpenFace 2.2 files, else a folder with its ONNX files linked and stand-ins."""
    if have_files(models):
        return models
    out = work / "models"
    out.mkdir()
    for f in models.iterdir():
        (out / f.name).symlink_to(f.resolve())
    standins.make_model_set(out)
    return out


def of3_columns(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [[row[c] for c in COLUMNS] for row in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> int:
    args = cost_parser(__doc__, "measure the first N frames (0: all)", 1.05,
                       "largest acceptable steady ratio both/openface3").parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory(prefix="aud-of2-cost-") as tmp:
        work = Path(tmp)
        env = bench.isolate_environment(work)
        models = model_set(args.models.resolve(), work)
        for label, size in SIZES.items():
            video = bench.write_video(args.video, work / f"{label}.mp4", size, args.frames or None)
            runs: dict[str, list[Run]] = {name: [] for name in SETTINGS}
            for i in range(args.repeat):
                for name, flags in SETTINGS.items():
                    r = run(video, work / label / name / "clip.csv", models, args.workers, flags, env)
                    runs[name].append(r)
                    print(f"{label} run {i + 1} {name}: {r.steady_ms:.1f} ms/frame steady, {r.wall_ms:.1f} ms/frame "
                          f"wall ({r.frames} frames)", flush=True)
            same = (of3_columns(work / label / "openface3" / "clip.csv")
                    == of3_columns(work / label / "both" / "clip.csv"))
            median = {name: {k: statistics.median(getattr(r, k) for r in rs) for k in ("steady_ms", "wall_ms")}
                      for name, rs in runs.items()}
            steady = median["both"]["steady_ms"] / median["openface3"]["steady_ms"]
            wall = median["both"]["wall_ms"] / median["openface3"]["wall_ms"]
            verdict = "within" if steady <= args.limit else "ABOVE"
            print(f"{label}: both / openface3 time per frame: steady {steady:.3f}, wall {wall:.3f} ({verdict} the "
                  f"limit {args.limit}); OpenFace 3.0 columns {'identical' if same else 'DIFFER'} "
                  f"({args.workers} workers, median of {args.repeat})", flush=True)
            ok = ok and steady <= args.limit and same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
