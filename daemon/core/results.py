"""Per-frame measurements as columns of numpy arrays: what a worker computes for a range of frames.

A ``FrameResults`` is saved atomically as ``.npz`` (a shard's durable output) and concatenated in frame
order when a video is assembled. Frames without a face have ``success`` False and NaN measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .atomic import atomic_write

N_LANDMARKS = 98


@dataclass
class FrameResults:
    frame: np.ndarray  # [N] int64, 0-based
    timestamp: np.ndarray  # [N] float64 seconds
    success: np.ndarray  # [N] bool
    confidence: np.ndarray  # [N] float32 detector score of the primary face (0 when none)
    box: np.ndarray  # [N, 4] float32 x1, y1, x2, y2
    gaze: np.ndarray  # [N, 2] float32 yaw, pitch
    emotion: np.ndarray  # [N, 8] float32 logits
    au: np.ndarray  # [N, 8] float32 raw head outputs
    landmarks: np.ndarray  # [N, 98, 2] float32 frame pixels (NaN when AU45 is off)
    eye_open: np.ndarray  # [N, 2] float32 right, left (subject's)

    @classmethod
    def empty(cls, n: int) -> "FrameResults":
        nan = np.float32("nan")
        return cls(
            frame=np.zeros(n, np.int64),
            timestamp=np.zeros(n, np.float64),
            success=np.zeros(n, bool),
            confidence=np.zeros(n, np.float32),
            box=np.full((n, 4), nan, np.float32),
            gaze=np.full((n, 2), nan, np.float32),
            emotion=np.full((n, 8), nan, np.float32),
            au=np.full((n, 8), nan, np.float32),
            landmarks=np.full((n, N_LANDMARKS, 2), nan, np.float32),
            eye_open=np.full((n, 2), nan, np.float32),
        )

    def __len__(self) -> int:
        return len(self.frame)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def concat(cls, parts: list["FrameResults"]) -> "FrameResults":
        if not parts:
            return cls.empty(0)
        merged = cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})
        order = np.argsort(merged.frame, kind="stable")
        return cls(**{k: v[order] for k, v in merged.arrays().items()})

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename)."""
        atomic_write(Path(path), lambda f: np.savez(f, **self.arrays()))

    @classmethod
    def load(cls, path: Path) -> "FrameResults":
        with np.load(path) as data:
            return cls(**{f.name: data[f.name] for f in fields(cls)})
