"""Export one frame of each hemi-face inspection video as a PNG: docs/mirror_left.png, docs/mirror_right.png
and docs/mirror_midline.png.

    .venv/bin/python docs/figures/inspection_frames.py [--video ../shared/media/hamilton_clip.mp4]
        [--start 160] [--frames 8] [--pick 0] [--models ../shared/models/openface3]

Cuts ``--frames`` frames from ``--start`` out of the video (mp4v, in a temporary folder), runs
``aud extract --mirror --mirror-videos`` on the cut exactly as a user would, and saves frame ``--pick``
of the cut's three inspection videos (``<stem>.left_mirrored.mp4``, ``<stem>.right_mirrored.mp4``,
``<stem>.midline.mp4``) as decoded. The defaults pick frame 160 of the shared clip: a near-frontal
face, 84 pixels wide. The shared STAR has random weights, so its landmarks are a face template moved by
the network: near, not on, the real eye corners and pupils (see ../shared/README.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.media import cut_clip, read_frames  # noqa: E402  (the project's test media helpers)

OUTPUTS = {"left_mirrored": "mirror_left.png", "right_mirrored": "mirror_right.png", "midline": "mirror_midline.png"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=ROOT.parent / "shared" / "media" / "hamilton_clip.mp4")
    parser.add_argument("--models", type=Path, default=ROOT.parent / "shared" / "models" / "openface3")
    parser.add_argument("--start", type=int, default=160)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--pick", type=int, default=0, help="which frame of the cut to export")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if not 0 <= args.pick < args.frames:
        parser.error(f"--pick must be a frame of the cut: 0 to {args.frames - 1}")
    with tempfile.TemporaryDirectory(prefix="aud-figure-") as tmp:
        try:
            clip = cut_clip(args.video, Path(tmp) / "clip.mp4", args.start, args.frames)
        except ValueError as exc:  # the video is shorter than the cut
            raise SystemExit(str(exc)) from None
        csv_path = Path(tmp) / "clip.csv"
        subprocess.run([sys.executable, "-m", "daemon", "extract", str(clip), "-o", str(csv_path), "--models",
                        str(args.models), "--provider", "cpu", "--mirror", "--mirror-videos", "--no-plots"],
                       check=True, cwd=ROOT)
        for kind, name in OUTPUTS.items():
            (image,) = read_frames(csv_path.with_name(f"clip.{kind}.mp4"), args.pick, 1)
            cv2.imwrite(str(args.out / name), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            print(args.out / name)


if __name__ == "__main__":
    main()
