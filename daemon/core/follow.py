"""Following faces with their landmarks between detections (``detect_every = N``).

With ``detect_every = 1`` (the default) RetinaFace runs on every frame and nothing here is used. With N > 1
a ``Follower`` decides, frame by frame, whether the frame is detected or each face of the previous frame
is followed into it:

**Detected** are: the first frame of each ``Pipeline.run`` call (so every shard starts with a detection),
every N-th frame after it (positions 0, N, 2N … of the run), a frame after one without a face (there is
nothing to follow), and any frame where following is lost (below).

**Followed box.** A face's box in the next frame is its landmark box in this one: the extent (min and max)
of STAR's 98 landmarks, centre (cx, cy) and size (w, h), mapped to the detector's box convention by

    box centre = (cx + dx·w, cy + dy·h),   box size = (sw·w, sh·h)

with ``LANDMARK_BOX`` = dx 0.0086, dy -0.1134, sw 1.5050, sh 2.3273, fitted by least squares on the 275
frames of the shared clip where the reference detector's box and STAR's landmarks both exist
(``bench/fit_track_box.py``). Residual: corner error median 1.04 px (0.015 of the box side), 95th
percentile 8.19 px (0.089), max 26.84 px (0.123); IoU of the mapped box with the detector's: median
0.910, 5th percentile 0.828, min 0.776. The fit belongs to the shared STAR, whose landmarks are a face
template moved a little by the network: a trained STAR's landmark extent has other proportions, so refit
the four numbers for it (the script reads any reference file of the same form).

**Following is lost** (and the frame is detected instead; with ``faces = "all"`` one lost face is enough:
the frame is detected and its faces are matched to ids again at assembly, as on any detected frame) when:

- *scene change*: the mean absolute difference of the 64x36 grey thumbnails of this frame and the
  previous one exceeds ``Bounds.scene_change`` (20 grey levels). Measured on the shared clip: at most 13.6
  between consecutive frames of one shot, 27.7 to 30.5 across its three cuts. Needed because the
  shared STAR's landmarks follow the crop whatever it shows, so no landmark rule can see a cut;
- *left the frame*: a followed box sticks out of the frame by more than ``Bounds.outside`` (10 %) of its
  width or height on any side — a face is never followed out of the frame;
- *merged*: two followed boxes overlap more than the detector's NMS would allow (IoU > 0.4);
- *moved* / *resized*: the landmark box STAR finds in the followed crop differs from that crop's box by
  IoU < ``Bounds.min_iou`` (0.5) or by a size ratio (square root of the areas' ratio) outside
  [``Bounds.min_size``, ``Bounds.max_size``] = [0.8, 1.25]. Between consecutive frames of one shot the
  reference detector's boxes overlap by IoU ≥ 0.62 and change size by 0.925 to 1.129, and the landmark
  box of one frame overlaps the next frame's detector box by IoU ≥ 0.62: a face that moves or scales
  faster than that is detected again.

**Confidence** of a followed row: the score of the detection the face was last found by.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from .detection import NMS_IOU
from .tracking import iou

THUMBNAIL = (64, 36)  # width, height of the scene-change thumbnail


@dataclass(frozen=True)
class BoxMap:
    """Landmark extent -> detector box: centre offset (dx, dy) and size scale (sw, sh), relative to the
    extent's size."""

    dx: float
    dy: float
    sw: float
    sh: float

    def box(self, points: np.ndarray) -> np.ndarray:
        """[x1, y1, x2, y2] float32 for landmarks [K, 2] in frame pixels."""
        points = np.asarray(points, np.float64)
        lo, hi = points.min(axis=0), points.max(axis=0)
        size = hi - lo
        centre = (lo + hi) / 2 + np.array([self.dx, self.dy]) * size
        half = size * np.array([self.sw, self.sh]) / 2
        return np.concatenate([centre - half, centre + half]).astype(np.float32)


LANDMARK_BOX = BoxMap(dx=0.0086, dy=-0.1134, sw=1.5050, sh=2.3273)  # bench/fit_track_box.py, shared clip


@dataclass(frozen=True)
class Bounds:
    """When following is lost (see the module docstring for where each number comes from)."""

    min_iou: float = 0.5
    min_size: float = 0.8
    max_size: float = 1.25
    outside: float = 0.1  # fraction of the box's width/height it may stick out of the frame
    scene_change: float = 20.0  # mean absolute grey difference of consecutive thumbnails
    merged_iou: float = NMS_IOU


class Lost(StrEnum):
    """Why a frame that could have been followed was detected."""

    SCENE_CHANGE = "scene change"
    LEFT_FRAME = "left the frame"
    MERGED = "two followed faces merged"
    MOVED = "moved"
    RESIZED = "resized"


@dataclass(frozen=True)
class Followed:
    """A face to measure in a frame without detecting it: where to crop it, and the score of the
    detection it was last found by."""

    box: np.ndarray
    score: float


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The frame in 64x36 grey levels (float32), for the scene-change test."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return cv2.resize(grey, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.float32)


def scene_changed(previous: np.ndarray, current: np.ndarray, bounds: Bounds) -> bool:
    return float(np.abs(current - previous).mean()) > bounds.scene_change


def left_frame(box: np.ndarray, width: int, height: int, bounds: Bounds) -> bool:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    mx, my = bounds.outside * (x2 - x1), bounds.outside * (y2 - y1)
    return x1 < -mx or y1 < -my or x2 > width + mx or y2 > height + my


def merged(boxes: list[np.ndarray], bounds: Bounds) -> bool:
    if len(boxes) < 2:
        return False
    overlap = iou(np.stack(boxes), np.stack(boxes))
    np.fill_diagonal(overlap, 0.0)
    return bool((overlap > bounds.merged_iou).any())


def drift(crop_box: np.ndarray, landmark_box: np.ndarray, bounds: Bounds) -> Lost | None:
    """MOVED or RESIZED when the landmark box STAR found in a followed crop is too far from the crop's
    box; None when following holds."""
    if float(iou(crop_box[None, :4], landmark_box[None, :4])[0, 0]) < bounds.min_iou:
        return Lost.MOVED
    area = lambda b: max(float(b[2] - b[0]), 0.0) * max(float(b[3] - b[1]), 0.0)  # noqa: E731
    ratio = (area(landmark_box) / area(crop_box)) ** 0.5 if area(crop_box) > 0 else 0.0
    if not bounds.min_size <= ratio <= bounds.max_size:
        return Lost.RESIZED
    return None


class Follower:
    """One run's following state: call ``plan`` for each frame in order, then ``drifted`` on a followed
    frame's landmarks, then ``found`` with the faces finally measured in it."""

    def __init__(self, every: int, bounds: Bounds = Bounds(), box_map: BoxMap = LANDMARK_BOX):
        if every < 1:
            raise ValueError(f"detect_every must be 1 or more, not {every}")
        self.every, self.bounds, self.box_map = every, bounds, box_map
        self.position = 0  # frames planned so far in this run
        self.next: list[Followed] = []  # the faces of the last frame, moved to their landmark boxes
        self.previous_thumbnail: np.ndarray | None = None
        self.lost: Lost | None = None  # why the last frame planned for detection was not followed

    def plan(self, image: np.ndarray) -> list[Followed] | None:
        """The faces to measure in this frame at followed boxes, or None: detect the frame."""
        position, self.position = self.position, self.position + 1
        current = thumbnail(image) if self.every > 1 else None
        previous, self.previous_thumbnail = self.previous_thumbnail, current
        self.lost = None
        if position % self.every == 0 or not self.next or previous is None or current is None:
            return None
        h, w = image.shape[:2]
        if scene_changed(previous, current, self.bounds):
            self.lost = Lost.SCENE_CHANGE
        elif any(left_frame(f.box, w, h, self.bounds) for f in self.next):
            self.lost = Lost.LEFT_FRAME
        elif merged([f.box for f in self.next], self.bounds):
            self.lost = Lost.MERGED
        return None if self.lost else list(self.next)

    def drifted(self, followed: list[Followed], landmarks: list[np.ndarray]) -> Lost | None:
        """Whether the landmarks STAR found in the followed crops say following is lost."""
        for face, points in zip(followed, landmarks):
            self.lost = drift(face.box, self.box_map.box(points), self.bounds)
            if self.lost:
                return self.lost
        return None

    def found(self, faces: list[Followed], landmarks: list[np.ndarray]) -> None:
        """The faces measured in the frame just planned (followed or detected) and their landmarks:
        what the next frame follows."""
        self.next = [Followed(self.box_map.box(points), face.score) for face, points in zip(faces, landmarks)
                     if np.isfinite(points).all()]
