"""The WFLW 98-point landmark layout (STAR's output): named points and the left/right pairing.

"Right" and "left" are the subject's: for an upright frontal face the subject's right is the image's
left. Points 0-32 are the jaw contour from the subject's right to left; 33-41 the right eyebrow and 42-50
the left; 51-54 the nose bridge and 55-59 the nose base; 60-67 the right eye (60 outer corner, 61-63
upper lid, 64 inner corner, 65-67 lower lid) and 68-75 the left eye (68 inner corner, 69-71 upper lid,
72 outer corner, 73-75 lower lid); 76-87 the outer lip contour and 88-95 the inner one; 96 and 97 the
right and left pupils.
"""

from __future__ import annotations

import numpy as np

N_POINTS = 98

RIGHT_EYE_INNER = 64
LEFT_EYE_INNER = 68
RIGHT_PUPIL = 96
LEFT_PUPIL = 97
RIGHT_EYE = tuple(range(60, 68))
LEFT_EYE = tuple(range(68, 76))


def _pairs() -> tuple[tuple[int, int], ...]:
    """Each point on the subject's right with its mirror image on the left (points on the midline have
    none)."""
    jaw = [(i, 32 - i) for i in range(16)]
    brows = [(33 + k, 46 - k) for k in range(5)] + [(38 + k, 50 - k) for k in range(4)]
    nose = [(55, 59), (56, 58)]
    # right eye goes outer corner -> upper lid -> inner corner, the left eye inner -> upper -> outer:
    # the corners swap (60-72, 64-68), the upper lids run opposite ways, and so do the lower lids
    eyes = [(60 + k, 72 - k) for k in range(5)] + [(65 + k, 75 - k) for k in range(3)]
    outer_lip = [(76 + k, 82 - k) for k in range(3)] + [(83, 87), (84, 86)]
    inner_lip = [(88, 92), (89, 91), (93, 95)]
    pupils = [(RIGHT_PUPIL, LEFT_PUPIL)]
    return tuple(jaw + brows + nose + eyes + outer_lip + inner_lip + pupils)


LEFT_RIGHT_PAIRS = _pairs()


def _flip_index() -> np.ndarray:
    index = np.arange(N_POINTS)
    for right, left in LEFT_RIGHT_PAIRS:
        index[right], index[left] = left, right
    index.setflags(write=False)
    return index


# FLIP_INDEX[i] is the point that plays point i's part in the mirror image of a face: the landmarks of a
# horizontally flipped frame are ``flipped[i] = (w - 1 - x, y)`` of ``original[FLIP_INDEX[i]]``
FLIP_INDEX = _flip_index()
MIDLINE_POINTS = tuple(int(i) for i in np.flatnonzero(FLIP_INDEX == np.arange(N_POINTS)))


def flip_landmarks(points: np.ndarray, width: int) -> np.ndarray:
    """Landmarks [..., 98, 2] of a frame ``width`` pixels wide as they are in that frame flipped
    horizontally (``frame[:, ::-1]``): x -> width - 1 - x, and each point takes its mirror partner's place."""
    points = np.asarray(points)
    if points.shape[-2:] != (N_POINTS, 2):
        raise ValueError(f"expected WFLW landmarks of shape [..., {N_POINTS}, 2], got {points.shape}")
    flipped = points[..., FLIP_INDEX, :].copy()
    flipped[..., 0] = (width - 1) - flipped[..., 0]
    return flipped
