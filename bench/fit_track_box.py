"""Fit the map from STAR's landmark extent to RetinaFace's box (``daemon/core/follow.py``, ``detect_every``).

    .venv/bin/python bench/fit_track_box.py [--reference ../shared/reference/hamilton_clip.reference.json]

Reads the reference file of the shared clip: per frame, the reference detector's box of the primary face
and STAR's 98 landmarks computed on the crop of that box. On every frame with both, the landmark extent
(min and max of the 98 points) gives a centre (cx, cy) and a size (w, h); the detector's box is modelled as

    box centre = (cx + dx * w, cy + dy * h),   box size = (sw * w, sh * h)

four numbers that do not depend on the face's size in pixels. Each is a one-parameter least-squares fit
(offsets relative to the extent's size; sizes through the origin). Prints the four numbers (paste them
into ``follow.LANDMARK_BOX``) and the residual: per box side, the error in pixels and relative to the
box's size, and the IoU of the mapped box with the detector's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
REFERENCE = PROJECT.parent / "shared" / "reference" / "hamilton_clip.reference.json"


def pairs(reference: Path) -> tuple[np.ndarray, np.ndarray]:
    """(boxes [n, 4], landmarks [n, 98, 2]) of the frames where the reference has a face."""
    rows = json.loads(reference.read_text())["rows"]
    boxes, points = [], []
    for row in rows:
        if row["faces"]:
            face = row["faces"][0]
            boxes.append(face["bbox"][:4])
            points.append(face["landmarks"])
    if not boxes:
        raise SystemExit(f"{reference}: no frame with a face")
    return np.asarray(boxes, np.float64), np.asarray(points, np.float64)


def fit(boxes: np.ndarray, points: np.ndarray) -> dict[str, float]:
    lo, hi = points.min(axis=1), points.max(axis=1)
    centre, size = (lo + hi) / 2, hi - lo
    box_centre, box_size = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    # centre offset relative to the extent's size: mean of (box - extent) / size, least squares
    offset = ((box_centre - centre) * size).sum(axis=0) / (size * size).sum(axis=0)
    scale = (box_size * size).sum(axis=0) / (size * size).sum(axis=0)
    return {"dx": float(offset[0]), "dy": float(offset[1]), "sw": float(scale[0]), "sh": float(scale[1])}


def mapped(points: np.ndarray, m: dict[str, float]) -> np.ndarray:
    lo, hi = points.min(axis=1), points.max(axis=1)
    centre, size = (lo + hi) / 2, hi - lo
    c = centre + np.array([m["dx"], m["dy"]]) * size
    s = size * np.array([m["sw"], m["sh"]])
    return np.concatenate([c - s / 2, c + s / 2], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    args = parser.parse_args()
    boxes, points = pairs(args.reference)
    m = fit(boxes, points)
    predicted = mapped(points, m)
    error = np.abs(predicted - boxes)
    side = np.concatenate([boxes[:, 2:3] - boxes[:, 0:1], boxes[:, 3:4] - boxes[:, 1:2]] * 2, axis=1)
    relative = error / side
    overlap = iou(predicted, boxes)
    print(f"{len(boxes)} frames with a detector box and STAR landmarks ({args.reference.name})")
    print("fit: " + ", ".join(f"{k} = {v:.4f}" for k, v in m.items()))
    print(f"corner error px: median {np.median(error):.2f}, 95th percentile {np.percentile(error, 95):.2f}, "
          f"max {error.max():.2f}")
    print(f"corner error / box side: median {np.median(relative):.3f}, 95th percentile "
          f"{np.percentile(relative, 95):.3f}, max {relative.max():.3f}")
    print(f"IoU with the detector's box: median {np.median(overlap):.3f}, 5th percentile "
          f"{np.percentile(overlap, 5):.3f}, min {overlap.min():.3f}")


if __name__ == "__main__":
    main()
