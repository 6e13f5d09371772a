"""The WFLW 98-point landmark layout that STAR predicts: named points, the left/right mirror pairing and the
standard WFLW-98 -> iBUG-68 subset.

Layout (indices into the 98 points; "right"/"left" are the subject's, so the subject's right is on the
image's left in an unmirrored video):

    0-32   face contour, from the subject's right ear (0) over the chin (16) to the left ear (32)
    33-41  right brow (33-37 upper edge, outer to inner; 38-41 lower edge, inner to outer)
    42-50  left brow  (42-46 upper edge, inner to outer; 47-50 lower edge, outer to inner)
    51-54  nose bridge, top (between the eyes) to tip
    55-59  lower nose edge, right ala (55), base of the columella (57), left ala (59)
    60-67  right eye: 60 outer corner, 61-63 upper lid, 64 inner corner, 65-67 lower lid
    68-75  left eye:  68 inner corner, 69-71 upper lid, 72 outer corner, 73-75 lower lid
    76-87  outer lip contour (76 right mouth corner, 82 left mouth corner)
    88-95  inner lip contour (88 right, 92 left inner corner)
    96, 97 right and left pupil

``MIRROR`` maps every point to its mirror image (a point on the midline to itself). It is the same pairing as
OpenMMLab MMPose's WFLW dataset description (Apache-2.0), ``swap`` fields of
https://github.com/open-mmlab/mmpose/blob/main/configs/_base_/datasets/wflw.py , checked pair by pair in
``tests/core/test_wflw.py``.

``TO_IBUG68`` picks the 68 iBUG/300-W points (the layout OpenFace 2.2 writes as ``x_0..x_67``) out of the 98:
every second contour point, the upper edge of each brow, the whole nose, the two corners and the two outer
lid points of each upper and lower lid, both lip contours. This is the mapping in common use, e.g.
``WFLW_2_iBUG68`` in pixel3dmm (https://github.com/SimonGiebenhain/pixel3dmm, ``tracker.py``) and MonoNPHM.
"""

from __future__ import annotations

import numpy as np

N_POINTS = 98

RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER = 60, 64, 68, 72
NOSE_BRIDGE = (51, 52, 53, 54)
NOSE_BASE = (55, 56, 57, 58, 59)
MOUTH_RIGHT, MOUTH_LEFT = 76, 82
RIGHT_PUPIL, LEFT_PUPIL = 96, 97


def _mirror_pairs() -> list[tuple[int, int]]:
    pairs = [(i, 32 - i) for i in range(16)]  # contour
    pairs += [(33 + k, 46 - k) for k in range(5)]  # upper brow edges
    pairs += [(38 + k, 50 - k) for k in range(4)]  # lower brow edges
    pairs += [(55, 59), (56, 58)]  # lower nose edge
    pairs += [(60 + k, 72 - k) for k in range(5)]  # eye corners and upper lids
    pairs += [(65, 75), (66, 74), (67, 73)]  # lower lids
    pairs += [(76 + k, 82 - k) for k in range(3)]  # upper outer lip
    pairs += [(83, 87), (84, 86)]  # lower outer lip
    pairs += [(88, 92), (89, 91), (93, 95)]  # inner lip
    pairs += [(RIGHT_PUPIL, LEFT_PUPIL)]
    return pairs


MIRROR_PAIRS: tuple[tuple[int, int], ...] = tuple(_mirror_pairs())
MIDLINE: tuple[int, ...] = (16, 51, 52, 53, 54, 57, 79, 85, 90, 94)


def _mirror_index() -> np.ndarray:
    index = np.arange(N_POINTS)
    for a, b in MIRROR_PAIRS:
        index[a], index[b] = b, a
    return index


MIRROR: np.ndarray = _mirror_index()
MIRROR.setflags(write=False)

TO_IBUG68: tuple[int, ...] = (
    tuple(range(0, 33, 2))  # contour: 17
    + (33, 34, 35, 36, 37, 42, 43, 44, 45, 46)  # brows, upper edges: 10
    + NOSE_BRIDGE + NOSE_BASE  # nose: 9
    + (60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75)  # eyes: 12
    + tuple(range(76, 96))  # lips: 20
)


def mirror_landmarks(points: np.ndarray, cx: float) -> np.ndarray:
    """Landmarks [..., 98, 2] of the horizontally mirrored image (x -> 2·cx - x), with every point moved to its
    mirror partner's index so the result is again in WFLW order."""
    out = np.array(points, dtype=np.float64, copy=True)[..., MIRROR, :]
    out[..., 0] = 2.0 * cx - out[..., 0]
    return out
