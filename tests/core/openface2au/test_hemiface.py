"""The landmarks of a mirrored face (``openface2au.hemiface``)."""

from __future__ import annotations

import numpy as np

from daemon.core import mirror, wflw
from daemon.core.openface2au.hemiface import mirrored_landmarks


def symmetric_face(cx: float = 300.0, seed: int = 0) -> np.ndarray:
    """98 WFLW points symmetric about x = cx: each pair's right point at x < cx, its partner reflected."""
    rng = np.random.default_rng(seed)
    pts = np.zeros((98, 2))
    for a, b in wflw.MIRROR_PAIRS:
        x, y = cx - rng.uniform(5, 80), rng.uniform(100, 250)
        pts[a], pts[b] = (x, y), (2 * cx - x, y)
    for i in wflw.MIDLINE:
        pts[i] = (cx, rng.uniform(100, 250))
    # the midline's own points: inner eye corners and pupils symmetric
    pts[wflw.RIGHT_EYE_INNER], pts[wflw.LEFT_EYE_INNER] = (cx - 15, 150), (cx + 15, 150)
    pts[wflw.RIGHT_PUPIL], pts[wflw.LEFT_PUPIL] = (cx - 35, 150), (cx + 35, 150)
    return pts


def test_a_symmetric_face_is_its_own_mirror():
    pts = symmetric_face()
    line = mirror.midline(pts)
    for side in mirror.Side:
        np.testing.assert_allclose(mirrored_landmarks(pts, line, side), pts, atol=1e-9)


def test_the_kept_half_stays_and_the_other_is_its_reflection():
    pts = symmetric_face()
    moved = pts.copy()
    left = [b for a, b in wflw.MIRROR_PAIRS if b not in (wflw.LEFT_PUPIL, wflw.LEFT_EYE_INNER)]
    moved[left] += (4.0, -3.0)  # the subject's left half (image right) moved: an asymmetric face
    moved[16] += (2.0, 0.0)  # a midline point off the line
    line = mirror.midline(moved)
    right = mirrored_landmarks(moved, line, mirror.Side.RIGHT)
    np.testing.assert_allclose(right, pts, atol=1e-9)  # made of the untouched right half: the original face
    kept_left = mirrored_landmarks(moved, line, mirror.Side.LEFT)
    np.testing.assert_allclose(kept_left[left], moved[left], atol=1e-9)
    for a, b in wflw.MIRROR_PAIRS:
        if b in left:
            np.testing.assert_allclose(kept_left[a], (2 * 300.0 - moved[b][0], moved[b][1]), atol=1e-9)
    assert abs(kept_left[16][0] - 300.0) < 1e-9  # a midline point lies on the midline
