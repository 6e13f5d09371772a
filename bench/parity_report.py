"""How far an `aud extract` CSV of the shared clip is from the reference, per column group.

    .venv/bin/python -m daemon extract ../shared/media/hamilton_clip.mp4 -o /tmp/h.csv \
        --models ../shared/models/openface3 --workers 2 --provider cpu
    .venv/bin/python bench/parity_report.py /tmp/h.csv

Prints the largest and the median difference over the frames with a face: boxes (px), confidence, AUs,
gaze and emotion probabilities (per frame, the largest of the three groups), landmarks (each
point's distance, px), and eye openness and AU45 recomputed from the CSV's own landmarks (the README's
formula, float64) against the CSV's columns — what tests/e2e/test_parity.py holds to its bounds — and AU45
as daemon.core.blink would give it from openness computed in float64 and stored in float32.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
REFERENCE = PROJECT.parent / "shared" / "reference" / "hamilton_clip.reference.json"
EMOTIONS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
AUS = ("AU01_r", "AU02_r", "AU04_r", "AU06_r", "AU09_r", "AU12_r", "AU25_r", "AU26_r")


def col(rows: list[dict], names) -> np.ndarray:
    return np.array([[float(r[n]) if r[n] != "" else np.nan for n in names] for r in rows])


def eye_openness(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    def dist(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(points[:, a] - points[:, b], axis=-1)

    right = (dist(61, 67) + dist(62, 66) + dist(63, 65)) / 3 / dist(60, 64)
    left = (dist(69, 75) + dist(70, 74) + dist(71, 73)) / 3 / dist(68, 72)
    return right, left


def stats(a: np.ndarray) -> dict[str, float]:
    a = np.abs(np.asarray(a, np.float64)).ravel()
    return {"max": float(a.max()), "median": float(np.median(a))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", type=Path)
    ap.add_argument("--reference", type=Path, default=REFERENCE)
    args = ap.parse_args()

    from daemon.core import blink
    from daemon.output import read_csv

    rows = read_csv(args.csv)
    reference = json.loads(args.reference.read_text())["rows"]
    faced = [i for i, ref in enumerate(reference) if ref["faces"]]
    ours = [rows[i] for i in faced]
    ref = [reference[i]["faces"][0] for i in faced]
    logits = np.array([f["emotion"] for f in ref])
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    mtl = np.maximum.reduce([
        np.abs(col(ours, AUS) - [f["au"] for f in ref]).max(1),
        np.abs(col(ours, ["gaze_yaw", "gaze_pitch"]) - [f["gaze"] for f in ref]).max(1),
        np.abs(col(ours, [f"emotion_{e}" for e in EMOTIONS]) - probs).max(1)])
    points = np.stack([col(ours, [f"x_{i}" for i in range(98)]), col(ours, [f"y_{i}" for i in range(98)])], -1)
    all_points = np.stack([col(rows, [f"x_{i}" for i in range(98)]), col(rows, [f"y_{i}" for i in range(98)])], -1)
    right, left = eye_openness(all_points)
    both = (right + left) / 2
    ok = np.array([r["success"] == "1" for r in rows]) & np.isfinite(both)
    au45 = np.clip(5 * (1 - both / np.percentile(both[ok], 95)), 0, 5)
    report = {
        "frames with a face": len(faced),
        "box px": stats(col(ours, ["face_x1", "face_y1", "face_x2", "face_y2"]) - [f["bbox"][:4] for f in ref]),
        "confidence": stats(col(ours, ["confidence"])[:, 0] - [f["bbox"][4] for f in ref]),
        "AU/gaze/emotion (per frame max)": stats(mtl),
        "landmark px (point distance)": stats(np.linalg.norm(points - np.array([f["landmarks"] for f in ref]),
                                                             axis=-1)),
        "eye openness from own landmarks": stats(col(rows, ["eye_open_right", "eye_open_left"])[ok]
                                                 - np.stack([right, left], 1)[ok]),
        "AU45 from own landmarks": stats(col(rows, ["AU45_r"])[ok, 0] - au45[ok]),
        "AU45 were openness computed in float64 (stored float32), from own landmarks": stats(
            blink.au45(right.astype(np.float32), left.astype(np.float32), ok)[ok] - au45[ok]),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
