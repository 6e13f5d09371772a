#!/usr/bin/env python
"""What hemi-face analysis costs: `aud extract` with and without `--mirror`, runs alternating, in one sitting.

    .venv/bin/python bench/mirror_cost.py [VIDEO] [--frames N] [--workers 2] [--repeat 3] [--limit 1.15]

VIDEO defaults to the shared 640x360 clip; ``--frames N`` measures a cut of its first N frames (mp4v,
in a temporary folder) for a quick run. Both settings run AU45 on (mirror needs STAR's landmarks),
without plots, the defaults otherwise (no ``AUD_*`` variables, no user config file). The runs alternate
(default, mirror, default, mirror, ...) so the shared machine's slow and fast spells fall on both.

Per run, time per frame two ways: **steady**, between the first and the last progress line of
``aud extract`` (model loading and the first batch left out: what each further frame costs), and
**wall**, the sidecar's ``wall_seconds`` over the frames (the job from start to assembled rows). The
report gives each run, the medians, the ratios mirror/default of the medians, whether the main CSVs
are identical (the mirror must not change them), and exits 1 when the steady ratio exceeds ``--limit``
(issue 12: at most 15 % more time per frame at 640x360).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # (isolate_environment: every run on the defaults plus its flags)
from tests.media import cut_clip  # noqa: E402  (bench puts the project on the path)

PROJECT = bench.PROJECT
PROGRESS = re.compile(r": (\d+)/(\d+) frames$")
SETTINGS = {"default": [], "mirror": ["--mirror"]}


@dataclass(frozen=True)
class Run:
    frames: int
    steady_ms: float  # per frame, between the first and the last progress line
    wall_ms: float  # per frame, the sidecar's wall_seconds
    csv: Path


def run(video: Path, out: Path, models: Path, workers: int, flags: list[str], env: dict) -> Run:
    """One ``aud extract`` subprocess; its progress lines timestamped as they arrive."""
    cmd = [sys.executable, "-m", "daemon", "extract", str(video), "-o", str(out), "--models", str(models),
           "--workers", str(workers), "--provider", "cpu", "--no-plots", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=PROJECT)
    progress: list[tuple[float, int]] = []
    lines = []
    for line in proc.stderr:
        lines.append(line)
        match = PROGRESS.search(line.rstrip())
        if match:
            progress.append((time.perf_counter(), int(match.group(1))))
    if proc.wait() != 0:
        raise SystemExit(f"aud extract failed: {' '.join(cmd)}\n{''.join(lines)}")
    sidecar = json.loads(out.with_suffix(".json").read_text())
    frames = int(sidecar["frames"])
    (t0, n0), (t1, n1) = progress[0], progress[-1]
    if n1 <= n0:
        raise SystemExit(f"{video}: too few progress lines to time steady frames (use more frames)")
    return Run(frames, 1000 * (t1 - t0) / (n1 - n0), 1000 * float(sidecar["wall_seconds"]) / frames, out)


def cost_parser(doc: str | None, frames_help: str, limit: float, limit_help: str) -> argparse.ArgumentParser:
    """The command line of a cost benchmark: a video, a frame cut, workers, repeats, the acceptable ratio
    and the model folder (``doc``'s first paragraph as the description)."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("video", nargs="?", type=Path, default=PROJECT.parent / "shared" / "media" / "hamilton_clip.mp4")
    ap.add_argument("--frames", type=int, default=0, help=frames_help)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit", type=float, default=limit, help=limit_help)
    ap.add_argument("--models", type=Path, default=PROJECT.parent / "shared" / "models" / "openface3")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = cost_parser(__doc__, "measure a cut of the first N frames (0: all)", 1.15,
                       "largest acceptable steady ratio mirror/default").parse_args(argv)
    models = args.models.resolve()
    with tempfile.TemporaryDirectory(prefix="aud-mirror-cost-") as tmp:
        tmp = Path(tmp)
        env = bench.isolate_environment(tmp)
        try:
            video = cut_clip(args.video, tmp / "cut.mp4", 0, args.frames) if args.frames else args.video.resolve()
        except ValueError as exc:  # the video is shorter than the cut
            raise SystemExit(str(exc)) from None
        runs: dict[str, list[Run]] = {name: [] for name in SETTINGS}
        for i in range(args.repeat):
            for name, flags in SETTINGS.items():
                r = run(video, tmp / name / "clip.csv", models, args.workers, flags, env)
                runs[name].append(r)
                print(f"run {i + 1} {name}: {r.steady_ms:.1f} ms/frame steady, {r.wall_ms:.1f} ms/frame wall "
                      f"({r.frames} frames)", flush=True)
        identical = (tmp / "default" / "clip.csv").read_bytes() == (tmp / "mirror" / "clip.csv").read_bytes()
    median = {name: {k: statistics.median(getattr(r, k) for r in rs) for k in ("steady_ms", "wall_ms")}
              for name, rs in runs.items()}
    for name, m in median.items():
        print(f"{name}: median {m['steady_ms']:.1f} ms/frame steady, {m['wall_ms']:.1f} ms/frame wall "
              f"over {args.repeat} runs")
    steady = median["mirror"]["steady_ms"] / median["default"]["steady_ms"]
    wall = median["mirror"]["wall_ms"] / median["default"]["wall_ms"]
    verdict = "within" if steady <= args.limit else "ABOVE"
    print(f"mirror / default time per frame: steady {steady:.3f}, wall {wall:.3f} ({verdict} the limit "
          f"{args.limit}); main CSVs {'identical' if identical else 'DIFFER'} ({video.name}, "
          f"{args.workers} workers)")
    return 0 if steady <= args.limit and identical else 1


if __name__ == "__main__":
    sys.exit(main())
