"""AU45 (blink) from STAR's 98 WFLW landmarks.

Eye openness = mean of the three lid distances / the corner distance, per eye. WFLW points 60-67 are the
eye on the image's left, i.e. the subject's right eye; 68-75 the subject's left eye.
AU45_r = clip(5 * (1 - openness / baseline), 0, 5), where openness is the mean of both eyes and the
baseline is the 95th percentile (numpy's default, linear) of that mean over the video's successful frames.

A blink is a run of consecutive frames with AU45_r >= BLINK_AU45 (2.5: both eyes at most half as open as the
video's usual open eye); a frame without a value ends a run. The run's frame with the largest AU45_r is the
blink's peak. The same threshold gives OpenFace 2.2-style AU45_c.
"""

from __future__ import annotations

import numpy as np

from .schema import BLINK_AU45  # the blink threshold, declared with the columns it applies to

RIGHT_EYE = {"lids": ((61, 67), (62, 66), (63, 65)), "corners": (60, 64)}  # subject's right
LEFT_EYE = {"lids": ((69, 75), (70, 74), (71, 73)), "corners": (68, 72)}  # subject's left
BASELINE_PERCENTILE = 95.0
AU45_MAX = 5.0


def _distance(points: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1)


def eye_openness(points: np.ndarray, eye: dict) -> np.ndarray:
    """Openness of one eye for landmarks [..., 98, 2], computed in float64 (in float32 its rounding,
    which AU45 multiplies by 5 / baseline, reached 1e-6 in AU45)."""
    points = np.asarray(points, dtype=np.float64)
    lids = np.mean([_distance(points, a, b) for a, b in eye["lids"]], axis=0)
    corners = _distance(points, *eye["corners"])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(corners > 0, lids / corners, np.nan)


def openness(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) eye openness for landmarks [..., 98, 2]."""
    return eye_openness(points, RIGHT_EYE), eye_openness(points, LEFT_EYE)


def au45(right: np.ndarray, left: np.ndarray, success: np.ndarray) -> np.ndarray:
    """AU45_r per frame; NaN where the frame has no face (or no usable eyes)."""
    both = (np.asarray(right, dtype=np.float64) + np.asarray(left, dtype=np.float64)) / 2
    return au45_one_eye(both, success)


def au45_one_eye(openness: np.ndarray, success: np.ndarray) -> np.ndarray:
    """AU45_r per frame from one openness series (one eye's, or ``au45``'s mean of both) against its own
    baseline, the 95th percentile over the successful frames; NaN where the frame has no face."""
    openness = np.asarray(openness, dtype=np.float64)
    usable = np.asarray(success, dtype=bool) & np.isfinite(openness)
    out = np.full(openness.shape, np.nan)
    if not usable.any():
        return out
    baseline = np.percentile(openness[usable], BASELINE_PERCENTILE)
    if not baseline > 0:
        return out
    out[usable] = np.clip(AU45_MAX * (1 - openness[usable] / baseline), 0, AU45_MAX)
    return out


def blinks(au45_r: np.ndarray) -> list[tuple[int, int, int]]:
    """Blinks in a series of AU45_r values as (first, last, peak) indices, in order."""
    values = np.asarray(au45_r, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        closed = np.concatenate([[False], values >= BLINK_AU45, [False]])
    edges = np.flatnonzero(np.diff(closed.astype(np.int8)))
    out = []
    for first, end in zip(edges[::2], edges[1::2]):
        peak = first + int(np.argmax(values[first:end]))
        out.append((int(first), int(end - 1), peak))
    return out
