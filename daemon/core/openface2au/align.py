"""The similarity-aligned, masked face OpenFace 2.2.0's AU models read: ``FaceAnalysis::AlignFaceMask``
(lib/local/FaceAnalyser/src/Face_utils.cpp), as ``FaceAnalyser::AddNextFrame`` calls it.

- Destination: the PDM's mean shape (x, y) times ``SIM_SCALE`` (``FaceAnalyserParameters``: ``sim_scale_au`` 0.7,
  ``sim_size_au`` 112).
- Only the rigid points (``extract_rigid_points``: contour 1-4 and 12-15, nose 27-29 and 31-35, eye corners and
  lower lids 36, 39-42, 45-47) fix the transform: ``AlignShapesWithScale``, Kabsch on mean-centred, RMS-scaled
  points, reflection excluded, scale = RMS(dst) / RMS(src).
- Translation: the scaled rotation applied to the PDM fit's (tx, ty), the face centre put at (w/2, h/2)
  (integer halves).
- ``cv::warpAffine`` bilinear, constant 0 border, with the ``Matx23f`` (float32) matrix. OpenFace 2.2.0 is built
  against OpenCV 4, whose 8-bit bilinear warp works in fixed point: source positions snapped to 1/32 pixel and
  integer weights of 15 bits (``WarpAffineInvoker`` and ``remapBilinear``, modules/imgproc/src/imgwarp.cpp).
  OpenCV 5 samples differently (no 1/32 snapping), so ``warp_affine_cv4`` does OpenCV 4's arithmetic in numpy:
  the aligned face is then the same whichever OpenCV is installed (the parity test checks it against OpenCV 4's
  own ``cv2.warpAffine``).
- Mask: the landmarks moved by the same warp, the contour ends (0, 16) and both brows (17-26) raised by
  ``(30 / 0.7) * sim_scale`` pixels; a pixel is kept when it lies in one of the triangulation's triangles by
  ``PAW::pointInTriangle`` (three same-side tests, edges included), checked at integer pixel positions of the
  output (``PAW`` with bounds 0..w-1, 0..h-1).
"""

from __future__ import annotations

import numpy as np

SIM_SCALE = 0.7  # FaceAnalyserParameters::sim_scale_au
SIZE = 112  # FaceAnalyserParameters::sim_size_au
BROW_RAISE = 30 / 0.7  # AlignFaceMask: "Move the eyebrows up to include more of upper face", times sim_scale
RAISED = (0, 16, *range(17, 27))  # AlignFaceMask: the points moved up
RIGID = (1, 2, 3, 4, 12, 13, 14, 15, 27, 28, 29, 31, 32, 33, 34, 35, 36, 39, 40, 41, 42, 45, 46, 47)


def align_shapes_with_scale(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``AlignShapesWithScale`` -> the 2x2 scaled rotation taking ``src`` onto ``dst`` (both (k, 2))."""
    n = len(src)
    src_c = src - src.mean(axis=0)
    dst_c = dst - dst.mean(axis=0)
    s_src = np.sqrt((src_c ** 2).sum() / n)
    s_dst = np.sqrt((dst_c ** 2).sum() / n)
    src_n, dst_n = src_c / s_src, dst_c / s_dst
    u, _, vt = np.linalg.svd(src_n.T @ dst_n)  # AlignShapesKabsch2D
    corr = np.eye(2)
    corr[1, 1] = 1.0 if np.linalg.det(vt.T @ u.T) > 0 else -1.0
    rotation = vt.T @ corr @ u.T
    return (s_dst / s_src) * rotation


def warp_matrix(landmarks: np.ndarray, mean_shape: np.ndarray, tx: float, ty: float,
                sim_scale: float = SIM_SCALE, size: int = SIZE) -> np.ndarray:
    """The 2x3 affine of ``AlignFaceMask``."""
    n = len(landmarks)
    dst = np.stack([mean_shape[:n], mean_shape[n:2 * n]], axis=1) * sim_scale
    rigid = list(RIGID) if n == 68 else list(range(n))
    a = align_shapes_with_scale(landmarks[rigid], dst[rigid])
    t = a @ np.array([tx, ty])
    return np.array([[a[0, 0], a[0, 1], -t[0] + size // 2], [a[1, 0], a[1, 1], -t[1] + size // 2]])


AB_BITS = 10  # imgwarp.cpp WarpAffineInvoker: MAX(10, INTER_BITS)
INTER_BITS = 5  # imgproc.hpp: 1/32-pixel positions
COEF_BITS = 15  # imgproc.hpp INTER_REMAP_COEF_BITS


def warp_affine_cv4(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """OpenCV 4's ``cv::warpAffine(image, dst, matrix, (size, size), INTER_LINEAR)`` on a uint8 image, constant
    0 border: the matrix inverted in double (``invertAffineTransform``); per output pixel the source position in
    1/1024 (``saturate_cast<int>``: round half to even) plus 16, shifted to 1/32; bilinear weights
    ``(32 - fx)(32 - fy) * 32`` … (exact in 15 bits); the sum rounded with ``+ (1 << 14) >> 15``; a neighbour
    outside the image reads 0."""
    m = np.asarray(matrix, np.float64)
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    d = 1.0 / det if det != 0 else 0.0
    a11, a22 = m[1, 1] * d, m[0, 0] * d
    a12, a21 = -m[0, 1] * d, -m[1, 0] * d
    b1 = -a11 * m[0, 2] - a12 * m[1, 2]
    b2 = -a21 * m[0, 2] - a22 * m[1, 2]
    scale = 1 << AB_BITS
    round_delta = scale // (1 << INTER_BITS) // 2
    xs = np.arange(size, dtype=np.float64)
    adelta = np.rint(a11 * xs * scale).astype(np.int64)
    bdelta = np.rint(a21 * xs * scale).astype(np.int64)
    x0 = np.rint((a12 * xs + b1) * scale).astype(np.int64) + round_delta  # per output row
    y0 = np.rint((a22 * xs + b2) * scale).astype(np.int64) + round_delta
    fx_all = (x0[:, None] + adelta[None, :]) >> (AB_BITS - INTER_BITS)  # (rows, cols), 1/32 pixel
    fy_all = (y0[:, None] + bdelta[None, :]) >> (AB_BITS - INTER_BITS)
    sx, sy = fx_all >> INTER_BITS, fy_all >> INTER_BITS
    fx, fy = fx_all & 31, fy_all & 31
    src = image if image.ndim == 3 else image[..., None]
    h, w = src.shape[:2]

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        values = src[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)].astype(np.int64)
        return np.where(inside[..., None], values, 0)

    unit = 1 << INTER_BITS
    w00 = ((unit - fx) * (unit - fy) * 32)[..., None]
    w01 = (fx * (unit - fy) * 32)[..., None]
    w10 = ((unit - fx) * fy * 32)[..., None]
    w11 = (fx * fy * 32)[..., None]
    total = at(sy, sx) * w00 + at(sy, sx + 1) * w01 + at(sy + 1, sx) * w10 + at(sy + 1, sx + 1) * w11
    out = np.clip((total + (1 << (COEF_BITS - 1))) >> COEF_BITS, 0, 255).astype(np.uint8)
    return out if image.ndim == 3 else out[..., 0]


def mask(points: np.ndarray, triangles: np.ndarray, size: int = SIZE) -> np.ndarray:
    """``PAW``'s pixel mask (size x size, uint8 0/1) of the triangles over ``points`` (n, 2). Each triangle is
    tested only on the pixels of its bounding box (``PAW::findTriangle`` skips the others the same way), all
    triangles' candidate pixels at once."""
    tri = np.asarray(points, np.float64)[np.asarray(triangles)]  # (t, 3, 2)
    lo = np.maximum(np.ceil(tri.min(axis=1)), 0).astype(np.int64)  # (t, 2) x, y
    hi = np.minimum(np.floor(tri.max(axis=1)), size - 1).astype(np.int64)
    width = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0)
    height = np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    counts = width * height
    owner = np.repeat(np.arange(len(tri)), counts)  # the triangle of each candidate pixel
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    xs = (lo[owner, 0] + local % width[owner]).astype(np.float64)
    ys = (lo[owner, 1] + local // width[owner]).astype(np.float64)
    p1, p2, p3 = tri[owner, 0], tri[owner, 1], tri[owner, 2]
    inside = _same_side(xs, ys, p1, p2, p3) & _same_side(xs, ys, p2, p1, p3) & _same_side(xs, ys, p3, p1, p2)
    out = np.zeros((size, size), np.uint8)
    out[ys[inside].astype(np.int64), xs[inside].astype(np.int64)] = 1
    return out


def _same_side(x0: np.ndarray, y0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> np.ndarray:
    """``PAW::sameSide``: (x0, y0) on the same side of the line p2-p3 as p1 (or on it); points (..., 2)."""
    x2, y2 = p2[..., 0], p2[..., 1]
    x3, y3 = p3[..., 0], p3[..., 1]
    a = (x3 - x2) * (y0 - y2) - (x0 - x2) * (y3 - y2)
    b = (x3 - x2) * (p1[..., 1] - y2) - (p1[..., 0] - x2) * (y3 - y2)
    return a * b >= 0


def align_face_mask(image: np.ndarray, landmarks: np.ndarray, mean_shape: np.ndarray, tx: float, ty: float,
                    triangles: np.ndarray, sim_scale: float = SIM_SCALE, size: int = SIZE) -> np.ndarray:
    """The masked aligned face (size x size, the image's channels, uint8)."""
    matrix = warp_matrix(landmarks, mean_shape, tx, ty, sim_scale, size)
    face = warp_affine_cv4(image, matrix.astype(np.float32), size)
    moved = landmarks @ matrix[:, :2].T + matrix[:, 2]
    moved[list(RAISED), 1] -= BROW_RAISE * sim_scale
    keep = mask(moved, triangles, size)
    return face * (keep[..., None] if face.ndim == 3 else keep)
