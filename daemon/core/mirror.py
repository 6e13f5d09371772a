"""Hemi-face (mirror) geometry: the facial midline, the reflection across it, and the two mirrored frames.

Conventions (frame pixels, x to the right, y down, float64 throughout):

- The **midline** passes through ``point``, the midpoint of the inner eye corners (WFLW 64 and 68), and is
  perpendicular to the line through the pupils (WFLW 96, the subject's right, and 97, the left).
- ``normal`` is the unit vector from the right pupil towards the left pupil: it points to the **subject's
  left** (the image's right for an upright frontal face).
- ``direction`` is ``(-normal_y, normal_x)``: the normal turned a quarter turn clockwise on screen, so it
  points from the pupils' midpoint downwards, towards the mouth ((0, 1) for an upright face).
- The **signed distance** of a pixel p is ``(p_x - point_x) * normal_x + (p_y - point_y) * normal_y``:
  ≤ 0 is the **subject's right** side (the midline itself included), > 0 the subject's left.

The **right-mirrored** frame keeps the original pixels where the signed distance is ≤ 0 and takes the
frame reflected across the midline elsewhere: a whole face made of the subject's right half. The
**left-mirrored** frame keeps the original pixels where it is > 0 and takes the reflected frame on the
right side. The seam is hard (no blending). Both take their reflected pixels from one warp:
``cv2.warpAffine(frame, R, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from . import blink, wflw


class Side(Enum):
    """Which half of the face a mirrored face is made of."""

    LEFT = "left_mirrored"  # the subject's left half and its reflection
    RIGHT = "right_mirrored"

    @property
    def eye(self) -> dict:
        """The eye the mirrored face keeps (``blink``'s lid and corner points)."""
        return blink.LEFT_EYE if self is Side.LEFT else blink.RIGHT_EYE


@dataclass(frozen=True, eq=False)
class Midline:
    """The facial midline in frame pixels (see the module docstring for the conventions)."""

    point: np.ndarray  # [2] float64, the midpoint of the inner eye corners
    direction: np.ndarray  # [2] float64 unit vector along the line, towards the mouth
    normal: np.ndarray  # [2] float64 unit vector to the subject's left

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance of points [..., 2] from the line: ≤ 0 on the subject's right."""
        p = np.asarray(points, dtype=np.float64)
        return (p[..., 0] - self.point[0]) * self.normal[0] + (p[..., 1] - self.point[1]) * self.normal[1]

    def x_at(self, y: float) -> float:
        """The x where the midline crosses the horizontal line at height ``y``."""
        if abs(self.direction[1]) < 1e-9:
            raise ValueError("the midline is horizontal (the face is rolled by 90 degrees): it does not "
                             "cross a horizontal line at one point")
        return float(self.point[0] + (y - self.point[1]) * self.direction[0] / self.direction[1])


@dataclass(frozen=True, eq=False)
class FaceGeometry:
    """What the mirror needs of one measured face: STAR's landmarks and the detector's box."""

    landmarks: np.ndarray  # [98, 2] frame pixels
    box: np.ndarray  # [4] x1, y1, x2, y2 frame pixels


def _readonly(values) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    array.setflags(write=False)
    return array


def midline(landmarks: np.ndarray) -> Midline:
    """The midline of a face from its 98 WFLW landmarks [98, 2] (frame pixels)."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (wflw.N_POINTS, 2):
        raise ValueError(f"landmarks: expected shape ({wflw.N_POINTS}, 2), got {points.shape}")
    used = points[[wflw.RIGHT_EYE_INNER, wflw.LEFT_EYE_INNER, wflw.RIGHT_PUPIL, wflw.LEFT_PUPIL]]
    if not np.isfinite(used).all():
        raise ValueError("landmarks: the inner eye corners (WFLW 64, 68) or pupils (96, 97) are not finite")
    across = points[wflw.LEFT_PUPIL] - points[wflw.RIGHT_PUPIL]
    length = float(np.hypot(across[0], across[1]))
    if not length > 0:
        raise ValueError("landmarks: the pupils (WFLW 96 and 97) coincide, so they define no direction")
    normal = across / length
    point = (points[wflw.RIGHT_EYE_INNER] + points[wflw.LEFT_EYE_INNER]) / 2
    return Midline(point=_readonly(point), direction=_readonly([-normal[1], normal[0]]),
                   normal=_readonly(normal))


def reflection(line: Midline) -> np.ndarray:
    """The 2x3 affine (float64) that reflects frame pixels across the midline:
    p -> p - 2 * signed_distance(p) * normal, i.e. ``[I - 2 n nᵀ | 2 (point·n) n]``."""
    n = line.normal
    linear = np.eye(2) - 2.0 * np.outer(n, n)
    offset = 2.0 * float(line.point @ n) * n
    return np.hstack([linear, offset[:, None]])


def right_side_mask(height: int, width: int, line: Midline) -> np.ndarray:
    """uint8 [height, width] mask, 1 where the pixel centre's signed distance is ≤ 0 (subject's right)."""
    along_x = (np.arange(width, dtype=np.float64) - line.point[0]) * line.normal[0]
    along_y = (np.arange(height, dtype=np.float64) - line.point[1]) * line.normal[1]
    return np.less_equal(along_x[None, :] + along_y[:, None], 0.0).view(np.uint8)


def reflected_frame(frame: np.ndarray, line: Midline) -> np.ndarray:
    """The whole frame reflected across the midline (bilinear, edges replicated)."""
    h, w = frame.shape[:2]
    return cv2.warpAffine(frame, reflection(line), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def mirrored_frames(frame: np.ndarray, line: Midline) -> tuple[np.ndarray, np.ndarray]:
    """(left_mirrored, right_mirrored) frames, each the size and type of ``frame``.

    One warp serves both: the right-mirrored frame is the reflected frame with the original pasted back
    on the subject's right (signed distance ≤ 0), the left-mirrored frame the original with the reflected
    frame pasted on the subject's right."""
    if frame.ndim not in (2, 3) or frame.size == 0:
        raise ValueError(f"frame: expected a non-empty HxW or HxWxC image, got shape {frame.shape}")
    frame = np.ascontiguousarray(frame)
    h, w = frame.shape[:2]
    reflected = reflected_frame(frame, line)
    right_side = right_side_mask(h, w, line)
    left_mirrored = frame.copy()
    cv2.copyTo(reflected, right_side, left_mirrored)
    right_mirrored = reflected
    cv2.copyTo(frame, right_side, right_mirrored)
    return left_mirrored, right_mirrored


def mirrored_box(box: np.ndarray, line: Midline) -> np.ndarray:
    """The box [x1, y1, x2, y2] moved horizontally so that its centre lies on the midline at the box
    centre's height; same width and height. float64 [4]."""
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)[:4]
    shift = line.x_at((y1 + y2) / 2) - (x1 + x2) / 2
    return np.array([x1 + shift, y1, x2 + shift, y2])


def kept_eye_openness(landmarks: np.ndarray, side: Side) -> np.ndarray:
    """Openness of the eye a mirrored face keeps (its own, unreflected eye), landmarks [..., 98, 2]."""
    return blink.eye_openness(np.asarray(landmarks, dtype=np.float64), side.eye)
