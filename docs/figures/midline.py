"""Draw docs/midline.png: the midline rule on one face, and the two mirrored faces it gives.

    .venv/bin/python docs/figures/midline.py [--image ../shared/media/obama.jpg] [--models ../shared/models/openface3]

Runs the project's own pipeline (RetinaFace, STAR) on the image, then ``daemon.core.mirror``: left panel
the face with its 98 landmarks, the inner eye corners (red), the pupils (green), the midline (yellow) and
the detector's box (blue); then the left-mirrored and right-mirrored faces. All three panels show the
same region: the box moved onto the midline (the crop the per-side MTL sees), with a margin.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from daemon.core import mirror, mirror_video
from daemon.core.pipeline import Pipeline, PipelineOptions
from daemon.core.video import Frame

ROOT = Path(__file__).resolve().parents[2]
PANEL_HEIGHT = 360
MARGIN = 0.25  # of the box size, on every side
TITLES = ("midline, box, landmarks", "left-mirrored", "right-mirrored")


def measure(image: np.ndarray, models: Path) -> mirror.FaceGeometry:
    pipeline = Pipeline(PipelineOptions(models_dir=models, provider="cpu", workers=1, batch_size=1))
    results = pipeline.run([Frame(0, 0.0, image)])
    if not results.success[0]:
        raise SystemExit("no face found in the image")
    return mirror.FaceGeometry(landmarks=results.landmarks[0].astype(np.float64),
                               box=results.box[0].astype(np.float64))


def panel(picture: np.ndarray, region: tuple[int, int, int, int], title: str) -> np.ndarray:
    x1, y1, x2, y2 = region
    crop = picture[y1:y2, x1:x2]
    width = round(crop.shape[1] * PANEL_HEIGHT / crop.shape[0])
    out = cv2.resize(crop, (width, PANEL_HEIGHT), interpolation=cv2.INTER_AREA)
    cv2.rectangle(out, (0, 0), (width, 30), (0, 0, 0), -1)
    cv2.putText(out, title, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def figure(image: np.ndarray, face: mirror.FaceGeometry) -> np.ndarray:
    line = mirror.midline(face.landmarks)
    x1, y1, x2, y2 = mirror.mirrored_box(face.box, line)
    pad_x, pad_y = MARGIN * (x2 - x1), MARGIN * (y2 - y1)
    h, w = image.shape[:2]
    region = (max(0, int(x1 - pad_x)), max(0, int(y1 - pad_y)), min(w, int(x2 + pad_x)), min(h, int(y2 + pad_y)))
    left, right = mirror.mirrored_frames(image, line)
    pictures = (mirror_video.annotate(image, face, line), left, right)
    gap = np.full((PANEL_HEIGHT, 6, 3), 255, np.uint8)
    panels = [panel(p, region, t) for p, t in zip(pictures, TITLES, strict=True)]
    return np.hstack([panels[0], gap, panels[1], gap, panels[2]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=ROOT.parent / "shared" / "media" / "obama.jpg")
    parser.add_argument("--models", type=Path, default=ROOT.parent / "shared" / "models" / "openface3")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "midline.png")
    args = parser.parse_args()
    image = cv2.imread(str(args.image))
    if image is None:
        raise SystemExit(f"{args.image}: not an image OpenCV can read")
    cv2.imwrite(str(args.output), figure(image, measure(image, args.models)), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(args.output)


if __name__ == "__main__":
    main()
