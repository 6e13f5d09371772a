"""RetinaFace (MobileNet-0.25) pre- and post-processing, as OpenFace 3.0 does it.

Pre: float32 BGR minus (104, 117, 123), NCHW, full resolution (or scaled, an opt-in speed switch).
Post: priors, box decoding with variances (0.1, 0.2), scores > 0.02, NMS at IoU 0.4 with the
"+1 pixel" area convention, best detection first.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from math import ceil

import cv2
import numpy as np

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
MEAN_SCALARS = tuple(np.array([m, 0.0, 0.0, 0.0]) for m in BGR_MEAN)  # as OpenCV scalars, one per channel
SCORE_THRESHOLD = 0.02
NMS_IOU = 0.4
FACE_THRESHOLD = 0.5
# Frames larger than 4K UHD are detected on a scaled copy: RetinaFace's activations at full
# resolution would need gigabytes per worker. Crops for MTL and STAR still use the full frame.
MAX_DETECT_PIXELS = 3840 * 2160


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # [x1, y1, x2, y2] float32, frame pixels
    score: float


class InputBuffer:
    """The detector's input tensor, kept from one frame to the next while the frame size stays the same.

    Allocated afresh for every frame, a large frame's tensor has its pages faulted in and zeroed by the
    kernel each time, work that two workers side by side also pay for in memory bandwidth (measured:
    docs/benchmark.md, "Design measurements"). One tensor per thread: a pipeline shared by threads (ONNX
    Runtime sessions allow that) must not have one thread overwrite the frame another is detecting on."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, height: int, width: int) -> np.ndarray:
        tensor = getattr(self._local, "tensor", None)
        if tensor is None or tensor.shape[2:] != (height, width):
            tensor = self._local.tensor = np.empty((1, 3, height, width), dtype=np.float32)
        return tensor


def detector_input(image_bgr: np.ndarray, max_side: int = 0,
                   buffer: InputBuffer | None = None) -> tuple[np.ndarray, float]:
    """NCHW float32 tensor for RetinaFace and the scale it was resized by (1.0 = full resolution).

    The frame is split into its three channel planes (OpenCV's vectorised de-interleave), and each is
    converted with its mean subtracted in one pass, straight into its plane of a contiguous tensor (ONNX
    Runtime would copy a transposed view; docs/benchmark.md, "Design measurements"). Integer pixels minus
    integer means are exact in float32, so the tensor is the same however it is computed.
    With a ``buffer`` the tensor is the buffer's (overwritten by the next call), else a new array."""
    h, w = image_bgr.shape[:2]
    scale = detect_scale(h, w, max_side)
    if scale != 1.0:
        image_bgr = cv2.resize(image_bgr.astype(np.float32), None, fx=scale, fy=scale,
                               interpolation=cv2.INTER_LINEAR)
    tensor = (buffer or InputBuffer()).get(*image_bgr.shape[:2])
    for c, plane in enumerate(cv2.split(image_bgr)):
        cv2.subtract(plane, MEAN_SCALARS[c], dst=tensor[0, c], dtype=cv2.CV_32F)
    return tensor, scale


def detect_scale(height: int, width: int, max_side: int = 0) -> float:
    """1.0 (full resolution) unless ``max_side`` or the pixel cap asks for a smaller frame."""
    scale = 1.0
    if max_side and max(height, width) > max_side:
        scale = max_side / max(height, width)
    if height * width * scale * scale > MAX_DETECT_PIXELS:
        scale = (MAX_DETECT_PIXELS / (height * width)) ** 0.5
    return scale


@lru_cache(maxsize=8)
def priors(height: int, width: int) -> np.ndarray:
    """Prior boxes [P, 4] as (cx, cy, w, h), normalised, in RetinaFace's order."""
    rows = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = ceil(height / step), ceil(width / step)
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * step / height,
                             (np.arange(fw) + 0.5) * step / width, indexing="ij")
        for_map = np.empty((fh, fw, len(sizes), 4), dtype=np.float64)
        for k, size in enumerate(sizes):
            for_map[:, :, k, 0] = cx
            for_map[:, :, k, 1] = cy
            for_map[:, :, k, 2] = size / width
            for_map[:, :, k, 3] = size / height
        rows.append(for_map.reshape(-1, 4))
    out = np.concatenate(rows).astype(np.float32)
    out.setflags(write=False)
    return out


def decode_boxes(loc: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Box regression [P, 4] to corner boxes, normalised."""
    centers = prior[:, :2] + loc[:, :2] * VARIANCES[0] * prior[:, 2:]
    sizes = prior[:, 2:] * np.exp(loc[:, 2:] * VARIANCES[1])
    corners = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    return corners


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU, stop_below: float | None = None) -> list[int]:
    """Greedy NMS by descending score, areas with the "+1 pixel" convention. Returns kept indices.

    With ``stop_below``, the kept indices up to and including the first one scoring below it: a
    prefix of the full result (the order is the same, and a box only suppresses lower-scored ones),
    for callers that use no detection below that score but the best."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        if stop_below is not None and scores[i] < stop_below:
            break
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap <= iou]
    return keep


def detections(loc: np.ndarray, conf: np.ndarray, input_hw: tuple[int, int], scale: float,
               stop_below: float | None = None) -> list[Detection]:
    """All faces of one image after thresholding and NMS, best first, in frame pixels. Only the priors
    above the score threshold are decoded (a few hundred of the 85,200 at 1920x1080). With
    ``stop_below``, only those down to the first one below that score (``nms``): the pipeline measures
    no face below ``FACE_THRESHOLD``, and NMS over the low-scoring rest is most of the post-processing
    of a large frame (docs/benchmark.md, "Design measurements")."""
    h, w = input_hw
    keep = conf[:, 1] > SCORE_THRESHOLD
    boxes = decode_boxes(loc[keep], priors(h, w)[keep]) * np.array([w, h, w, h], dtype=np.float32) / scale
    boxes, scores = boxes.astype(np.float32), conf[keep, 1].astype(np.float32)
    return [Detection(boxes[i], float(scores[i])) for i in nms(boxes, scores, stop_below=stop_below)]


def primary_face(found: list[Detection]) -> Detection | None:
    """The best detection, if it reaches the face threshold."""
    if not found or found[0].score < FACE_THRESHOLD:
        return None
    return found[0]
