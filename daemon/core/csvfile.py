"""The output CSV (one row per frame, OpenFace-style columns) and its JSON sidecar, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .blink import au45
from .results import FrameResults

EMOTIONS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
AUS = ("AU01_r", "AU02_r", "AU04_r", "AU06_r", "AU09_r", "AU12_r", "AU25_r", "AU26_r")
COLUMNS = (
    ["frame", "face_id", "timestamp", "confidence", "success",
     "face_x1", "face_y1", "face_x2", "face_y2", "gaze_yaw", "gaze_pitch", "emotion"]
    + [f"emotion_{e}" for e in EMOTIONS]
    + list(AUS)
    + ["AU45_r", "eye_open_right", "eye_open_left"]
    + [f"x_{i}" for i in range(98)]
    + [f"y_{i}" for i in range(98)]
)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _num(value: float) -> str:
    """At least 7 significant digits; empty for a missing value."""
    return "" if not np.isfinite(value) else format(float(value), ".9g")


def rows(results: FrameResults) -> list[list[str]]:
    """The CSV rows (as strings) for every frame, AU45 computed over the whole video."""
    blink = au45(results.eye_open[:, 0], results.eye_open[:, 1], results.success)
    probs = softmax(results.emotion.astype(np.float64))
    out = []
    for i in range(len(results)):
        ok = bool(results.success[i])
        head = [str(int(results.frame[i]) + 1), "0", format(float(results.timestamp[i]), ".6f"),
                _num(results.confidence[i]), "1" if ok else "0"]
        if not ok:
            out.append(head + [""] * (len(COLUMNS) - len(head)))
            continue
        body = [_num(v) for v in results.box[i]] + [_num(v) for v in results.gaze[i]]
        body.append(EMOTIONS[int(np.argmax(probs[i]))])
        body += [_num(v) for v in probs[i]] + [_num(v) for v in results.au[i]]
        body += [_num(blink[i]), _num(results.eye_open[i, 0]), _num(results.eye_open[i, 1])]
        body += [_num(v) for v in results.landmarks[i, :, 0]] + [_num(v) for v in results.landmarks[i, :, 1]]
        out.append(head + body)
    return out


def csv_text(results: FrameResults) -> str:
    lines = [",".join(COLUMNS)]
    lines += [",".join(r) for r in rows(results)]
    return "\n".join(lines) + "\n"


def sidecar_path(csv_path: Path) -> Path:
    return Path(csv_path).with_suffix(".json")


def write_outputs(csv_path: Path, results: FrameResults, sidecar: dict) -> None:
    """The sidecar JSON, then the CSV; each atomic. The CSV appears complete or not at all, and last:
    once it is there its sidecar is too (a resumed job recognises its own result by the sidecar)."""
    atomic_write_text(sidecar_path(csv_path), json.dumps(sidecar, indent=2, default=str) + "\n")
    atomic_write_text(csv_path, csv_text(results))


def read_csv(path: Path) -> list[dict[str, str]]:
    """Read a CSV written here back as dicts (tests and tools)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
