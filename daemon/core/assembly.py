"""A video's rows from its shards' rows: all of them, in frame order, each (frame, face) once."""

from __future__ import annotations

import numpy as np

from .results import FaceRows


class AssemblyError(RuntimeError):
    """The stored rows do not cover the video's frames (an internal error, never the user's)."""


def assemble(parts: list[FaceRows], expected_frames: np.ndarray) -> FaceRows:
    """All shards' rows in frame order; every expected frame must be there."""
    rows = FaceRows.concat(parts)
    pairs = np.stack([rows.frame, rows.detection.astype(np.int64)], axis=1)
    if len(np.unique(pairs, axis=0)) != len(rows):
        raise AssemblyError(f"assembled {len(rows)} rows with some (frame, face) twice: a shard was stored twice")
    found = rows.frames()
    if not np.array_equal(found, expected_frames):
        missing = np.setdiff1d(expected_frames, found)
        raise AssemblyError(f"assembled {len(found)} frames, expected {len(expected_frames)}"
                            + (f" (missing from frame {int(missing[0]) + 1})" if missing.size else ""))
    return rows
