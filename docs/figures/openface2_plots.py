"""Draw docs/plot_openface2.png and docs/plot_openface2_hemiface.png: the plot with OpenFace 2.2's 17 AU
intensity panels, without and with the hemi-face panels, on a cut of the shared clip.

    PYTHONPATH=. .venv/bin/python docs/figures/openface2_plots.py [--clip ../shared/media/hamilton_clip.mp4]
        [--models ../shared/models/openface3] [--start 60] [--frames 80]

aud never ships OpenFace 2.2's AU files, so this script writes the test suite's stand-ins
(tests/core/openface2au/standins.py: random SVR/SVM weights in the official formats, a PDM built for the tests)
into a temporary model set beside links to the shared networks, cuts ``--frames`` frames of the clip
(tests/media.py ``cut_clip``), and runs ``aud extract --au-models both`` once plain and once with ``--mirror``
(2 workers, CPU), then ``aud plot``'s own drawing on each result. The shared MTL and STAR have random weights
and the OpenFace 2.2 models are random stand-ins: the traces are what those models compute, not AU estimates,
and the title and footnote of both pictures say so.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from daemon.core.atomic import atomic_write
from daemon.output.plot import mirror_paths, read_table, render_png
from tests.core.openface2au.standins import make_model_set
from tests.media import cut_clip

ROOT = Path(__file__).resolve().parents[2]
FOOTNOTE = ("NOT AU estimates: OpenFace 2.2 AUs from random stand-in SVR/SVM weights and a test PDM "
            "(tests/core/openface2au/standins.py); OpenFace 3.0 AUs, gaze, emotion and landmarks from the "
            "shared random-weight MTL and STAR test networks")


def model_set(shared: Path, into: Path) -> Path:
    """``into`` with links to the shared ONNX networks and the stand-in OpenFace 2.2 files."""
    into.mkdir(parents=True)
    for onnx in sorted(shared.glob("*.onnx")):
        (into / onnx.name).symlink_to(onnx.resolve())
    make_model_set(into)
    return into


def draw(clip: Path, models: Path, out_csv: Path, png: Path, mirror: bool, name: str) -> None:
    cmd = [sys.executable, "-m", "daemon", "extract", str(clip), "-o", str(out_csv), "--au-models", "both",
           "--models", str(models), "--workers", "2", "--provider", "cpu"]
    subprocess.run(cmd + (["--mirror"] if mirror else []), check=True)
    tables = {"main": read_table(out_csv)}
    tables.update({side: read_table(p) for side, p in mirror_paths(out_csv).items()})
    title = f"{name}: stand-in weights, not AU estimates"  # one line: the plot adds frames and seconds below
    data = render_png(tables, title, FOOTNOTE)
    atomic_write(png, lambda f: f.write(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=ROOT.parent / "shared/media/hamilton_clip.mp4")
    parser.add_argument("--models", type=Path, default=ROOT.parent / "shared/models/openface3")
    parser.add_argument("--start", type=int, default=60)
    parser.add_argument("--frames", type=int, default=80)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aud-figures-") as tmp:
        models = model_set(args.models, Path(tmp) / "models")
        clip = cut_clip(args.clip, Path(tmp) / f"{args.clip.stem}_cut.mp4", args.start, args.frames)
        draw(clip, models, Path(tmp) / "plain" / f"{clip.stem}.csv", ROOT / "docs" / "plot_openface2.png",
             False, args.clip.stem)
        draw(clip, models, Path(tmp) / "mirror" / f"{clip.stem}.csv",
             ROOT / "docs" / "plot_openface2_hemiface.png", True, args.clip.stem)
    print("wrote docs/plot_openface2.png and docs/plot_openface2_hemiface.png")


if __name__ == "__main__":
    main()
