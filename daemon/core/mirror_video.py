"""Inspection videos of the hemi-face analysis, so a clinician can check any frame by eye.

``render_inspection_videos`` writes, beside the CSVs, ``<stem>.left_mirrored.mp4`` and
``<stem>.right_mirrored.mp4`` (the mirrored frames the per-side MTL saw) and ``<stem>.midline.mp4`` (the
original with the midline, the face box and the 98 landmarks drawn): one output frame per input frame, at
the input's rate. Frames without a measured face are passed through unchanged. No partial video ever
appears under its final name: each is written under a hidden temp name, and the three are renamed into
place one after another once all three are complete (flushed to disk).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import mirror, wflw
from .atomic import fsync_dir
from .video import read_range

FOURCC = "mp4v"  # MPEG-4 Part 2: what OpenCV's wheels can write everywhere; QuickTime plays it
KINDS = ("left_mirrored", "right_mirrored", "midline")

# BGR colours of the midline picture
MIDLINE_COLOUR = (0, 255, 255)
BOX_COLOUR = (255, 160, 0)
LANDMARK_COLOUR = (255, 255, 255)
CORNER_COLOUR = (0, 0, 255)  # inner eye corners, WFLW 64 and 68
PUPIL_COLOUR = (0, 255, 0)  # WFLW 96 and 97
SHIFT = 4  # sub-pixel bits for drawing
ONE = 1 << SHIFT


@dataclass(frozen=True)
class InspectionVideos:
    left_mirrored: Path
    right_mirrored: Path
    midline: Path


def output_paths(out_dir: Path, stem: str) -> InspectionVideos:
    return InspectionVideos(*(Path(out_dir) / f"{stem}.{kind}.mp4" for kind in KINDS))


def _fixed(point) -> tuple[int, int]:
    return round(float(point[0]) * ONE), round(float(point[1]) * ONE)


def midline_segment(line: mirror.Midline, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The midline's part inside the frame, as two points in ``SHIFT``-bit fixed point (None if it
    misses the frame)."""
    reach = float(width + height)
    a, b = line.point - reach * line.direction, line.point + reach * line.direction
    inside, p, q = cv2.clipLine((0, 0, width * ONE, height * ONE), _fixed(a), _fixed(b))
    return ((int(p[0]), int(p[1])), (int(q[0]), int(q[1]))) if inside else None


def annotate(frame: np.ndarray, face: mirror.FaceGeometry, line: mirror.Midline) -> np.ndarray:
    """A copy of ``frame`` with the midline, the face box, the 98 landmarks, the inner eye corners and the
    pupils drawn (sizes scale with the face)."""
    out = frame.copy()
    h, w = out.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in face.box[:4])
    scale = max(1.0, (x2 - x1) / 120)
    thickness = max(1, round(scale))
    cv2.rectangle(out, _fixed((x1, y1)), _fixed((x2, y2)), BOX_COLOUR, thickness, cv2.LINE_AA, SHIFT)
    segment = midline_segment(line, w, h)
    if segment is not None:
        cv2.line(out, segment[0], segment[1], MIDLINE_COLOUR, thickness, cv2.LINE_AA, SHIFT)
    points = np.asarray(face.landmarks, dtype=np.float64)
    for i, point in enumerate(points):
        if not np.isfinite(point).all():
            continue
        if i in (wflw.RIGHT_EYE_INNER, wflw.LEFT_EYE_INNER):
            cv2.circle(out, _fixed(point), int(2.5 * scale * ONE), CORNER_COLOUR, -1, cv2.LINE_AA, SHIFT)
        elif i in (wflw.RIGHT_PUPIL, wflw.LEFT_PUPIL):
            cv2.circle(out, _fixed(point), int(2.5 * scale * ONE), PUPIL_COLOUR, -1, cv2.LINE_AA, SHIFT)
        else:
            cv2.circle(out, _fixed(point), int(1.2 * scale * ONE), LANDMARK_COLOUR, -1, cv2.LINE_AA, SHIFT)
    return out


def inspection_frames(frame: np.ndarray, face: mirror.FaceGeometry | None) -> tuple[np.ndarray, ...]:
    """(left_mirrored, right_mirrored, midline) pictures of one frame; the frame itself three times when
    there is no face."""
    if face is None:
        return frame, frame, frame
    line = mirror.midline(face.landmarks)
    left, right = mirror.mirrored_frames(frame, line)
    return left, right, annotate(frame, face, line)


def _open_writer(path: Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write a {width}x{height} {FOURCC} video at {fps} fps here")
    return writer


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def render_inspection_videos(video_path: str | Path, faces: Sequence[mirror.FaceGeometry | None],
                             out_dir: str | Path, stem: str, fps: float) -> InspectionVideos:
    """Write the three inspection videos of ``video_path`` into ``out_dir``; ``faces`` holds one entry per
    frame of the video, in order (None for a frame without a measured face). Returns the paths."""
    if not faces:
        raise ValueError(f"{video_path}: no frames to render (faces is empty)")
    if not fps > 0:
        raise ValueError(f"{video_path}: the frame rate must be positive, got {fps}")
    final = output_paths(Path(out_dir), stem)
    targets = [final.left_mirrored, final.right_mirrored, final.midline]
    # OpenCV opens by name (and would follow a symlink planted there): the videos are written into a
    # private folder made just now (mkdtemp: exclusive, 0700) and renamed into place from it
    private = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".tmp", dir=out_dir))
    temps = [private / path.name for path in targets]
    writers: list[cv2.VideoWriter] = []
    try:
        for frame, face in zip(read_range(video_path, 0, len(faces)), faces, strict=True):
            if not writers:
                h, w = frame.image.shape[:2]
                writers = [_open_writer(tmp, fps, w, h) for tmp in temps]
            for writer, picture in zip(writers, inspection_frames(frame.image, face), strict=True):
                writer.write(picture)
        for writer in writers:
            writer.release()
        writers = []
        for tmp in temps:
            _fsync(tmp)
        for tmp, target in zip(temps, targets, strict=True):
            os.replace(tmp, target)
    except BaseException:
        for writer in writers:
            writer.release()
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(private, ignore_errors=True)
    fsync_dir(Path(out_dir))
    return final
