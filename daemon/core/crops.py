"""Face crops for the two networks, matching OpenFace 3.0's preprocessing.

MTL: the integer box cut from the frame (clipped to it), BGR->RGB, [0, 1], resized to 224x224 like
torchvision's antialiased bilinear ``Resize`` on a float tensor, ImageNet mean/std.
STAR: an affine crop of 256x256 around the box centre with ``cv2.warpPerspective``, BGR/255*2-1.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

MTL_SIZE = 224
STAR_SIZE = 256
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def int_box(box: np.ndarray) -> np.ndarray:
    """Truncate toward zero, as ``numpy.astype(int)`` does."""
    return np.asarray(box[:4]).astype(int)


def clip_box(box: np.ndarray, width: int, height: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([min(max(x1, 0), width), min(max(y1, 0), height),
                     min(max(x2, 0), width), min(max(y2, 0), height)])


# --- antialiased bilinear resize (the algorithm of Pillow and torchvision's antialias=True) ---------

@lru_cache(maxsize=1024)
def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """Weight matrix [out, in] of a triangle filter widened by the downscale factor (Pillow's and
    torchvision's antialiased bilinear): output pixel i centred at (i + 0.5) * scale in the input."""
    scale = in_size / out_size
    support = max(scale, 1.0)  # triangle filter support 1.0, stretched when shrinking
    center = (np.arange(out_size) + 0.5) * scale
    lo = np.maximum((center - support + 0.5).astype(int), 0)
    hi = np.minimum((center + support + 0.5).astype(int), in_size)
    taps = np.arange(in_size)
    weights = np.maximum(0.0, 1.0 - np.abs((taps[None, :] - center[:, None] + 0.5) / support))
    weights[(taps[None, :] < lo[:, None]) | (taps[None, :] >= hi[:, None])] = 0.0
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    weights.setflags(write=False)
    return weights


BAND_ROWS = 32  # output pixels per block of the banded resize


@lru_cache(maxsize=1024)
def resize_bands(in_size: int, out_size: int) -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """``resize_weights`` cut into blocks of ``BAND_ROWS`` output pixels, each with the range of input
    pixels its weights cover: (out_lo, out_hi, in_lo, in_hi, float32 weights[out_lo:out_hi, in_lo:in_hi]).

    Each output pixel reads only about twice the scale factor of input pixels, so multiplying by the
    whole [out, in] matrix is mostly multiplying by zeros; dropping those zeros makes the resize of a
    large face several times faster (docs/benchmark.md, "Design measurements")."""
    weights = resize_weights(in_size, out_size)
    bands = []
    for lo in range(0, out_size, BAND_ROWS):
        hi = min(out_size, lo + BAND_ROWS)
        taps = np.flatnonzero(weights[lo:hi].any(axis=0))
        first, last = (int(taps[0]), int(taps[-1]) + 1) if taps.size else (0, 1)
        block = np.ascontiguousarray(weights[lo:hi, first:last], dtype=np.float32)
        block.setflags(write=False)
        bands.append((lo, hi, first, last, block))
    return tuple(bands)


def resize_planar(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize an HxWxC float image to a [C, out_h, out_w] float32 one, bilinear with antialiasing: rows
    then columns, each a few banded float32 matrix products (``resize_bands``; against the same
    products in float64, a few float32 units in the last place). The columns are resized as one 2-D
    product per band over all rows of all channels: one large BLAS call, not a stack of small ones."""
    h, w, c = image.shape
    source = np.asarray(image, dtype=np.float32).reshape(h, w * c)
    rows = np.empty((out_h, w * c), np.float32)
    for lo, hi, first, last, weights in resize_bands(h, out_h):
        rows[lo:hi] = weights @ source[first:last]
    planes = np.ascontiguousarray(rows.reshape(out_h, w, c).transpose(2, 0, 1)).reshape(c * out_h, w)
    cols = np.empty((c * out_h, out_w), np.float32)
    for lo, hi, first, last, weights in resize_bands(w, out_w):
        cols[:, lo:hi] = planes[:, first:last] @ weights.T
    return cols.reshape(c, out_h, out_w)


def resize_antialiased(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``resize_planar`` as an HxWxC float32 image."""
    return np.ascontiguousarray(resize_planar(image, out_h, out_w).transpose(1, 2, 0))


def mtl_input(frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
    """[3, 224, 224] float32 MTL input for one face; ``box`` in frame pixels."""
    h, w = frame_bgr.shape[:2]
    x1, y1, x2, y2 = clip_box(int_box(box), w, h)
    face = frame_bgr[y1:y2, x1:x2]
    if face.size == 0:  # a degenerate box: one pixel, so the networks still get an input
        face = frame_bgr[min(y1, h - 1):min(y1, h - 1) + 1, min(x1, w - 1):min(x1, w - 1) + 1]
    rgb = cv2.cvtColor(face, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    if face.shape[0] <= MTL_SIZE and face.shape[1] <= MTL_SIZE:
        # enlarging, the antialiased filter is plain bilinear (support 1, edges clamped), which OpenCV
        # computes to within one float32 unit in the last place of ours, several times faster
        planar = np.empty((3, MTL_SIZE, MTL_SIZE), np.float32)
        cv2.split(cv2.resize(rgb, (MTL_SIZE, MTL_SIZE), interpolation=cv2.INTER_LINEAR), list(planar))
    else:
        planar = resize_planar(rgb, MTL_SIZE, MTL_SIZE)
    planar -= IMAGENET_MEAN[:, None, None]
    planar /= IMAGENET_STD[:, None, None]
    return planar


def star_matrix(box: np.ndarray) -> np.ndarray:
    """3x3 affine taking frame pixels to STAR crop pixels for an (un-truncated) detector box."""
    x1, y1, x2, y2 = int_box(box)
    center_w, center_h = (x1 + x2) / 2, (y1 + y2) / 2
    scale = min(x2 - x1, y2 - y1) / 200 * 1.05
    factor = STAR_SIZE / (scale * 200.0)
    to_c = (STAR_SIZE - 1) / 2.0
    return np.array([[factor, 0.0, to_c - factor * center_w],
                     [0.0, factor, to_c - factor * center_h],
                     [0.0, 0.0, 1.0]], dtype=np.float32)


def star_input(frame_bgr: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """[3, 256, 256] float32 STAR input."""
    crop = cv2.warpPerspective(frame_bgr, matrix, dsize=(STAR_SIZE, STAR_SIZE),
                               flags=cv2.INTER_LINEAR, borderValue=0)
    return (crop.astype(np.float32) / 255.0 * 2.0 - 1.0).transpose(2, 0, 1)


def star_points_to_frame(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """STAR output [98, 2] in [-1, 1] to frame pixels through the inverse crop matrix."""
    crop = ((points.astype(np.float32) + 1) * STAR_SIZE - 1) / 2
    inv = np.linalg.inv(matrix)
    return (crop @ inv[:2, :2].T + inv[:2, 2]).astype(np.float32)
