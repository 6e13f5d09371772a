"""Helpers of the "every face" end-to-end tests: running ``aud extract`` as a subprocess, reading a CSV by frame,
and measuring one face the way the pipeline does, but with sessions of this test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from daemon.core import crops
from daemon.output import read_csv
from tests.e2e.daemonproc import MODELS

SHARD_FRAMES = "16"  # the daemon fixture's AUD_SHARD_FRAMES: both sides cut a video into the same shards
WORKERS = "2"


def run_extract(video: Path, out: Path, *flags: str) -> Path:
    """``aud extract VIDEO -o OUT --workers 2 --provider cpu FLAGS…`` with the daemon fixture's shard size."""
    env = {**os.environ, "AUD_SHARD_FRAMES": SHARD_FRAMES}
    proc = subprocess.run([sys.executable, "-m", "daemon", "extract", str(video), "-o", str(out), "--models",
                           str(MODELS), "--workers", WORKERS, "--provider", "cpu", *flags],
                          check=False, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    return out


def rows_by_frame(csv_path: Path) -> dict[int, list[dict[str, str]]]:
    """CSV rows grouped by their 1-based ``frame``, in file order."""
    grouped: dict[int, list[dict[str, str]]] = {}
    for row in read_csv(csv_path):
        grouped.setdefault(int(row["frame"]), []).append(row)
    return grouped


def floats(row: dict[str, str], names) -> np.ndarray:
    return np.array([float(row[n]) for n in names])


def boxes_ids(csv_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(0-based frame, face id (NaN: no face), box) of every row, for ``tracking.id_switches``."""
    rows = read_csv(csv_path)
    frame = np.array([int(r["frame"]) - 1 for r in rows])
    ids = np.array([float(r["face_id"]) if r["face_id"] else np.nan for r in rows])
    box = np.array([[float(r[k]) if r[k] else np.nan for k in ("face_x1", "face_y1", "face_x2", "face_y2")]
                    for r in rows])
    return frame, ids, box


@dataclass(frozen=True)
class Measured:
    probs: np.ndarray  # emotion probabilities (softmax of the logits)
    gaze: np.ndarray
    au: np.ndarray
    landmarks: np.ndarray  # [98, 2] frame pixels



class Reference:
    """MTL and STAR in sessions of the test's own (CPU, batch 1), fed by ``daemon.core.crops``."""

    def __init__(self) -> None:
        cpu = ["CPUExecutionProvider"]
        self.mtl = ort.InferenceSession(str(MODELS / "mtl.onnx"), providers=cpu)
        self.star = ort.InferenceSession(str(MODELS / "star.onnx"), providers=cpu)
        self.mtl_outputs = [o.name for o in self.mtl.get_outputs()]

    def measure(self, image: np.ndarray, box: np.ndarray) -> Measured:
        out = dict(zip(self.mtl_outputs, self.mtl.run(None, {self.mtl.get_inputs()[0].name:
                                                             crops.mtl_input(image, box)[None]})))
        logits = out["emotion"][0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        matrix = crops.star_matrix(box)
        (points,) = self.star.run(None, {self.star.get_inputs()[0].name: crops.star_input(image, matrix)[None]})
        return Measured(probs / probs.sum(), out["gaze"][0], out["au"][0],
                        crops.star_points_to_frame(points[0], matrix))
