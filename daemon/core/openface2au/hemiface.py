"""The 68 landmarks of a mirrored (hemi-face) face, for its own OpenFace 2.2 AUs.

A mirrored frame (``mirror.mirrored_frames``) shows one half of the face and its reflection across the midline.
Its landmarks follow from the face's own (STAR's 98 on the real frame) without a second STAR run: for each WFLW
mirror pair (``wflw.MIRROR_PAIRS``), the point on the kept side (by signed distance to the midline, not by index,
so a turned head cannot swap them) stays, and its partner becomes that point's reflection (``mirror.reflection``);
a point on the midline (``wflw.MIDLINE``, its own partner) is projected onto the midline, where a symmetric face
has it. Re-running STAR on the mirrored frame would cost one more landmark pass per side (the slowest network
of the pipeline, ~3x the rest of a frame), and STAR was trained on real faces, not on symmetrised ones whose seam
it has never seen; the reflection is exact for the kept half, which is what a hemi-face analysis measures.
"""

from __future__ import annotations

import numpy as np

from .. import wflw
from ..mirror import Midline, Side, reflection


def mirrored_landmarks(points: np.ndarray, line: Midline, side: Side) -> np.ndarray:
    """[98, 2] landmarks of the ``side``-mirrored face, from the face's [98, 2] landmarks."""
    pts = np.asarray(points, np.float64)
    out = pts.copy()
    r = reflection(line)
    reflected = pts @ r[:, :2].T + r[:, 2]
    distance = line.signed_distance(pts)
    keep_left = side is Side.LEFT
    for a, b in wflw.MIRROR_PAIRS:
        a_kept = (distance[a] > distance[b]) == keep_left
        kept, other = (a, b) if a_kept else (b, a)
        out[kept] = pts[kept]
        out[other] = reflected[kept]
    for i in wflw.MIDLINE:
        out[i] = pts[i] - distance[i] * line.normal
    return out
