"""An independent reference for the hemi-face (mirror) outputs, written from issue 12's text.

Given a frame (BGR), one row of the main CSV (its landmarks ``x_0..x_97, y_0..y_97`` and face box
``face_x1..face_y2``) and the MTL model, compute what each mirrored face's AUs, emotion logits and gaze
must be. It shares no code with the daemon (it imports nothing from ``daemon``): its own midline and
reflection, ``cv2.warpAffine`` as the issue prescribes, its own MTL preprocessing with Pillow's resize,
ImageNet normalisation, and its own ONNX Runtime session.

The rule (issue 12):
- midline: through the midpoint of the inner eye corners (WFLW 64, 68), perpendicular to the line
  through the pupils (WFLW 96, 97); normal n = unit vector from pupil 96 to pupil 97 (the subject's left);
- R = reflection across the midline as a 2x3 affine; reflected = warpAffine(frame, R, (w, h), INTER_LINEAR,
  BORDER_REPLICATE);
- right-mirrored = the frame where (p - m)·n <= 0, the reflected frame elsewhere; left-mirrored the
  other way round (hard seam);
- box: the face box moved horizontally so its centre lies on the midline at the centre's height;
- MTL input: the box truncated to integers, clipped to the frame, RGB, /255, antialiased bilinear resize
  to 224x224, ImageNet mean/std.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image

SIDES = ("left_mirrored", "right_mirrored")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass(frozen=True, eq=False)
class SideResult:
    box: np.ndarray  # [4] float64, the moved box (before truncation)
    au: np.ndarray  # [8]
    emotion: np.ndarray  # [8] logits
    gaze: np.ndarray  # [2] yaw, pitch


def csv_point(row: Mapping[str, float], i: int) -> np.ndarray:
    """Landmark i of a CSV row. The CSV holds the daemon's float32 values to 9 significant digits, which
    read back as float32 give those values exactly."""
    return np.array([np.float32(row[f"x_{i}"]), np.float32(row[f"y_{i}"])], dtype=np.float64)


def csv_box(row: Mapping[str, float]) -> np.ndarray:
    return np.array([np.float32(row[k]) for k in ("face_x1", "face_y1", "face_x2", "face_y2")], np.float64)


def midline_from_row(row: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(m, n): the inner corners' midpoint and the unit normal pointing to the subject's left."""
    m = (csv_point(row, 64) + csv_point(row, 68)) / 2
    pupils = csv_point(row, 97) - csv_point(row, 96)
    return m, pupils / np.linalg.norm(pupils)


def reflection_matrix(m: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Householder reflection about the line through m with normal n: p -> p - 2 ((p - m)·n) n."""
    householder = np.eye(2) - 2 * np.outer(n, n)
    return np.column_stack([householder, 2 * np.dot(m, n) * n])


def mirrored(frame: np.ndarray, m: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    h, w = frame.shape[:2]
    reflected = cv2.warpAffine(frame, reflection_matrix(m, n), (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
    ys, xs = np.mgrid[0:h, 0:w]
    subject_right = ((xs - m[0]) * n[0] + (ys - m[1]) * n[1]) <= 0
    keep = subject_right[:, :, None]
    return {"right_mirrored": np.where(keep, frame, reflected), "left_mirrored": np.where(keep, reflected, frame)}


def moved_box(box: np.ndarray, m: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The box shifted along x so that its centre is on the midline (direction (-n_y, n_x))."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    along = np.array([-n[1], n[0]])
    x_on_line = m[0] + (cy - m[1]) / along[1] * along[0]
    return box + np.array([x_on_line - cx, 0.0, x_on_line - cx, 0.0])


def pillow_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Per channel in Pillow's float ("F") mode, bilinear, antialiased (the filter widens when shrinking)."""
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :, c])).resize(
        (size, size), Image.BILINEAR, reducing_gap=None)) for c in range(3)]
    return np.stack(channels, axis=-1)


def pillow_f_mode_is_antialiased() -> bool:
    """One-pixel black and white stripes shrunk 4x: an antialiased filter averages them to 0.5 (an
    unwidened bilinear filter would sample two neighbours and give 0 or 1)."""
    stripes = np.tile(np.array([0.0, 1.0], np.float32), 32)[None, :].repeat(8, axis=0)
    image = Image.fromarray(stripes)
    shrunk = np.asarray(image.resize((16, 8), Image.BILINEAR, reducing_gap=None))
    return image.mode == "F" and bool(np.allclose(shrunk[:, 1:-1], 0.5, atol=1e-6))


def mtl_tensor(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)  # int() truncates toward zero
    x1, x2 = min(max(x1, 0), w), min(max(x2, 0), w)
    y1, y2 = min(max(y1, 0), h), min(max(y2, 0), h)
    rgb = frame[y1:y2, x1:x2, ::-1].astype(np.float32) / 255.0
    normalised = (pillow_resize(rgb, 224) - MEAN) / STD
    return normalised.transpose(2, 0, 1)[None].astype(np.float32)


class MirrorReference:
    """``MirrorReference(mtl_path).sides(frame, row)`` -> {"left_mirrored": SideResult, "right_mirrored": ...}."""

    def __init__(self, mtl_path: Path):
        if not pillow_f_mode_is_antialiased():
            raise RuntimeError("this Pillow's float-mode bilinear resize is not antialiased")
        self.session = ort.InferenceSession(str(mtl_path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def sides(self, frame: np.ndarray, row: Mapping[str, float]) -> dict[str, SideResult]:
        m, n = midline_from_row(row)
        frames = mirrored(frame, m, n)
        box = moved_box(csv_box(row), m, n)
        out = {}
        for side in SIDES:
            emotion, gaze, au = self.session.run(["emotion", "gaze", "au"], {self.input: mtl_tensor(frames[side], box)})
            out[side] = SideResult(box=box, au=au[0], emotion=emotion[0], gaze=gaze[0])
        return out
