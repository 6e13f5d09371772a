"""Drift of a followed run (``--detect-every N``) against the exact run, from their two CSVs (``faces = primary``).

    .venv/bin/aud extract ../shared/media/hamilton_clip.mp4 -o /tmp/exact.csv
    .venv/bin/aud extract ../shared/media/hamilton_clip.mp4 -o /tmp/every5.csv --detect-every 5
    .venv/bin/python bench/follow_drift.py /tmp/exact.csv /tmp/every5.csv

Prints, over the frames where both runs measured the same face (box IoU >= 0.5): the box IoU, the AU (raw)
and AU45 differences, the landmark distance in pixels (mean over the 98 points; median / 95th percentile /
max over frames),
and how many frames the followed run detected: its CSV's ``face_detected`` column (written with
``--detect-every`` > 1); for a CSV written before that column, a row counts as followed when its box is the
landmark box (``follow.LANDMARK_BOX``) of the previous frame's landmarks, to 0.01 px (the detector's boxes never
fall on that by chance).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from daemon.core.follow import LANDMARK_BOX
from daemon.core.schema import AUS_R, BOX, FACE_DETECTED, N_LANDMARKS
from daemon.core.tracking import iou
from daemon.output import read_csv


def columns(path: Path) -> dict[str, np.ndarray]:
    rows = read_csv(path)
    names = ["frame", "success", "confidence", *BOX, *AUS_R, "AU45_r",
             *(f"x_{i}" for i in range(N_LANDMARKS)), *(f"y_{i}" for i in range(N_LANDMARKS))]
    names += [FACE_DETECTED] if rows and FACE_DETECTED in rows[0] else []
    return {n: np.array([float(r[n]) if r[n] != "" else np.nan for r in rows]) for n in names}


def stats(values: np.ndarray) -> str:
    return f"median {np.median(values):.3f}, 95th pct {np.percentile(values, 95):.3f}, max {values.max():.3f}"


def landmark_boxes(success: np.ndarray, box: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Rows whose box is the landmark box of the previous row's landmarks: followed (a CSV without
    ``face_detected``)."""
    followed = np.zeros(len(box), bool)
    for r in range(1, len(box)):
        if success[r] == 1 and success[r - 1] == 1:
            followed[r] = np.abs(LANDMARK_BOX.box(points[r - 1]) - box[r]).max() < 0.01
    return followed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exact", type=Path)
    parser.add_argument("followed", type=Path)
    args = parser.parse_args()
    a, b = columns(args.exact), columns(args.followed)
    if not np.array_equal(a["frame"], b["frame"]):
        raise SystemExit("the two CSVs do not have the same frames (faces = primary: one row a frame)")
    both = (a["success"] == 1) & (b["success"] == 1)
    box_a, box_b = (np.column_stack([c[n] for n in BOX]) for c in (a, b))
    points_b = np.stack([np.column_stack([b[f"x_{i}"], b[f"y_{i}"]]) for i in range(N_LANDMARKS)], axis=1)
    points_a = np.stack([np.column_stack([a[f"x_{i}"], a[f"y_{i}"]]) for i in range(N_LANDMARKS)], axis=1)
    followed = b[FACE_DETECTED] == 0 if FACE_DETECTED in b else landmark_boxes(b["success"], box_b, points_b)
    overlap = np.zeros(len(box_b))
    overlap[both] = [iou(box_a[r][None], box_b[r][None])[0, 0] for r in np.flatnonzero(both)]
    same = both & (overlap >= 0.5)  # IoU < 0.5: the runs measured different faces (the clip has several)
    au = np.abs(np.column_stack([a[n] - b[n] for n in AUS_R]))[same]
    au45 = np.abs(a["AU45_r"] - b["AU45_r"])[same]
    px = np.linalg.norm(points_a - points_b, axis=2).mean(axis=1)[same]
    frames = len(box_b)
    print(f"frames {frames}; with a face in both runs {both.sum()}; exact-only {((a['success'] == 1) & ~both).sum()}"
          f"; followed-only {((b['success'] == 1) & ~both).sum()}")
    print(f"followed run: detector on {frames - followed.sum()} of {frames} frames "
          f"({followed.sum()} followed, {followed.sum() / frames:.0%} of detector calls saved)")
    print(f"other face measured (box IoU < 0.5): {(both & ~same).sum()} frames "
          f"({(both & ~same & followed).sum()} of them followed); drift below over the {same.sum()} others")
    print(f"box IoU: {stats(overlap[same])}; min {overlap[same].min():.3f}")
    print(f"box IoU on followed frames: {stats(overlap[same & followed])}; min {overlap[same & followed].min():.3f}")
    print(f"|AU_r difference| (8 AUs): {stats(au.ravel())}")
    print(f"|AU45_r difference|: {stats(au45[np.isfinite(au45)])}")
    print(f"landmark distance px (mean of 98 points): {stats(px)}")
    print(f"identical boxes: {int((np.abs(box_a - box_b).max(axis=1)[both] == 0).sum())} frames")


if __name__ == "__main__":
    main()
