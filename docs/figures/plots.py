"""Draw docs/plot_example.png and docs/plot_hemiface.png: the plot of the shared clip, without and with the
hemi-face panels.

    PYTHONPATH=. .venv/bin/python docs/figures/plots.py [--clip ../shared/media/hamilton_clip.mp4]
        [--models ../shared/models/openface3]

Runs ``aud extract --mirror`` on the clip (2 workers, CPU), then ``aud plot``'s own function on the result:
once on the main CSV alone (docs/plot_example.png, what a run without ``--mirror`` shows) and once with its
hemi-face CSVs beside it (docs/plot_hemiface.png). The shared MTL and STAR have random weights: the traces are
what those networks compute, not real AU estimates.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from daemon.output.plot import plot_csv

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=ROOT.parent / "shared/media/hamilton_clip.mp4")
    parser.add_argument("--models", type=Path, default=ROOT.parent / "shared/models/openface3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aud-figures-") as tmp:
        csv = Path(tmp) / "mirror" / f"{args.clip.stem}.csv"
        subprocess.run([sys.executable, "-m", "daemon", "extract", str(args.clip), "-o", str(csv), "--mirror",
                        "--models", str(args.models), "--workers", "2", "--provider", "cpu"], check=True)
        plot_csv(csv, ROOT / "docs" / "plot_hemiface.png")
        alone = Path(tmp) / "main" / csv.name
        alone.parent.mkdir()
        shutil.copyfile(csv, alone)
        plot_csv(alone, ROOT / "docs" / "plot_example.png")
    print("wrote docs/plot_example.png and docs/plot_hemiface.png")


if __name__ == "__main__":
    main()
