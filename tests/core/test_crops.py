"""MTL and STAR crops against Pillow and literal ports of OpenFace 3.0 / STAR code."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import Image

from daemon.core import crops

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def pillow_resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Antialiased bilinear per channel in Pillow's float ("F") mode (what torchvision's antialiased
    Resize on a tensor implements)."""
    chans = []
    for c in range(image.shape[2]):
        im = Image.fromarray(np.ascontiguousarray(image[:, :, c].astype(np.float32)))
        assert im.mode == "F"
        chans.append(np.asarray(im.resize((out_w, out_h), Image.BILINEAR)))
    return np.stack(chans, axis=-1)


# --- upstream STAR, ported literally ------------------------------------------------------------------

class GetCropMatrix:
    """STAR/demo.py GetCropMatrix."""

    def __init__(self, image_size, target_face_scale, align_corners=False):
        self.image_size = image_size
        self.target_face_scale = target_face_scale
        self.align_corners = align_corners

    def _compose_rotate_and_scale(self, angle, scale, shift_xy, from_center, to_center):
        cosv = math.cos(angle)
        sinv = math.sin(angle)
        fx, fy = from_center
        tx, ty = to_center
        acos = scale * cosv
        asin = scale * sinv
        a0 = acos
        a1 = -asin
        a2 = tx - acos * fx + asin * fy + shift_xy[0]
        b0 = asin
        b1 = acos
        b2 = ty - asin * fx - acos * fy + shift_xy[1]
        return np.array([[a0, a1, a2], [b0, b1, b2], [0.0, 0.0, 1.0]], np.float32)

    def process(self, scale, center_w, center_h):
        if self.align_corners:
            to_w, to_h = self.image_size - 1, self.image_size - 1
        else:
            to_w, to_h = self.image_size, self.image_size
        rot_mu = 0
        scale_mu = self.image_size / (scale * self.target_face_scale * 200.0)
        shift_xy_mu = (0, 0)
        return self._compose_rotate_and_scale(rot_mu, scale_mu, shift_xy_mu, from_center=[center_w, center_h],
                                              to_center=[to_w / 2.0, to_h / 2.0])


def upstream_matrix(det: np.ndarray) -> np.ndarray:
    """landmark_detection.py LandmarkDetector.detect_landmarks + Alignment (align_corners=True)."""
    x1, y1, x2, y2 = det[:4].astype(int)
    center_w = (x2 + x1) / 2
    center_h = (y2 + y1) / 2
    scale = min(x2 - x1, y2 - y1) / 200 * 1.05
    return GetCropMatrix(256, 1.0, align_corners=True).process(float(scale), float(center_w), float(center_h))


def upstream_denorm_points(points):
    """Alignment.denorm_points, align_corners=False (as analyze calls it)."""
    return ((points + 1) * np.array([256, 256], np.float32).reshape(1, 1, 2) - 1) / 2


def upstream_postprocess(src_points, coeff):
    """Alignment.postprocess."""
    dst = np.zeros(src_points.shape, dtype=np.float32)
    for i in range(src_points.shape[0]):
        dst[i][0] = coeff[0][0] * src_points[i][0] + coeff[0][1] * src_points[i][1] + coeff[0][2]
        dst[i][1] = coeff[1][0] * src_points[i][0] + coeff[1][1] * src_points[i][1] + coeff[1][2]
    return dst


# --- boxes --------------------------------------------------------------------------------------------

def test_int_box_truncates_toward_zero_like_astype_int():
    box = np.array([-1.7, -0.3, 10.9, 20.5, 0.99], np.float32)  # score column ignored
    np.testing.assert_array_equal(crops.int_box(box), [-1, 0, 10, 20])
    np.testing.assert_array_equal(crops.int_box(box), box[:4].astype(int))


def test_clip_box():
    np.testing.assert_array_equal(crops.clip_box(np.array([-5, -2, 70, 50]), 64, 48), [0, 0, 64, 48])
    np.testing.assert_array_equal(crops.clip_box(np.array([3, 4, 10, 12]), 64, 48), [3, 4, 10, 12])


# --- antialiased resize ---------------------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(500, 400), (448, 448), (225, 223), (224, 224), (50, 37), (3, 1000),
                                (1000, 7), (1, 1), (113, 301)])
def test_resize_antialiased_matches_pillow(hw):
    rng = np.random.default_rng(hw[0] * 7919 + hw[1])
    img = rng.uniform(0, 1, (*hw, 3)).astype(np.float32)
    ours = crops.resize_antialiased(img, 224, 224)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, pillow_resize(img, 224, 224), rtol=0, atol=1e-5)


@pytest.mark.parametrize("out", [(17, 31), (300, 5)])
def test_resize_antialiased_non_square_output(out):
    rng = np.random.default_rng(3)
    img = rng.uniform(0, 255, (90, 60, 2)).astype(np.float32)
    np.testing.assert_allclose(crops.resize_antialiased(img, *out), pillow_resize(img, *out), rtol=1e-6,
                               atol=1e-3)


def dense_resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """The same resize as two products with the whole weight matrices (zeros included)."""
    h, w, c = image.shape
    rows = crops.resize_weights(h, out_h) @ image.astype(np.float64).reshape(h, w * c)
    cols = rows.reshape(out_h, w, c).transpose(0, 2, 1) @ crops.resize_weights(w, out_w).T
    return np.ascontiguousarray(cols.transpose(0, 2, 1), dtype=np.float32)


@pytest.mark.parametrize("hw", [(620, 540), (448, 448), (225, 223), (224, 224), (50, 37), (3, 1000),
                                (1000, 7), (1, 1), (33, 400)])
def test_banded_resize_equals_the_dense_products(hw):
    """The banded float32 products against the whole weight matrices in float64: only float32 rounding
    differs. Each output pixel is two sums of non-negative terms (weights summing to 1, pixels in [0, 1]),
    of k_rows and k_cols terms, so the rounding error is at most (k_rows + k_cols + 2) units of 2^-24
    (the standard bound for a float32 sum, plus the weights' and the result's own rounding)."""
    img = np.random.default_rng(hw[0] + 31 * hw[1]).uniform(0, 1, (*hw, 3)).astype(np.float32)
    banded, dense = crops.resize_antialiased(img, 224, 224), dense_resize(img, 224, 224)
    k_rows = int((crops.resize_weights(hw[0], 224) > 0).sum(axis=1).max())
    k_cols = int((crops.resize_weights(hw[1], 224) > 0).sum(axis=1).max())
    assert np.abs(banded - dense).max() <= (k_rows + k_cols + 2) * 2.0 ** -24


@pytest.mark.parametrize("in_size,out_size", [(620, 224), (224, 224), (50, 224), (1, 224), (1000, 7)])
def test_resize_bands_hold_every_nonzero_weight(in_size, out_size):
    weights = crops.resize_weights(in_size, out_size)
    rebuilt = np.zeros_like(weights)
    covered = []
    for lo, hi, first, last, block in crops.resize_bands(in_size, out_size):
        rebuilt[lo:hi, first:last] = block
        covered.extend(range(lo, hi))
    assert covered == list(range(out_size))
    np.testing.assert_array_equal(rebuilt, weights.astype(np.float32))  # the bands are float32
    widest = max(last - first for _, _, first, last, _ in crops.resize_bands(in_size, out_size))
    if out_size > crops.BAND_ROWS and in_size >= 4 * crops.BAND_ROWS:  # a band reads part of the input
        assert widest < in_size


def test_resize_preserves_constant_image():
    img = np.full((77, 301, 3), 0.37, np.float32)
    np.testing.assert_allclose(crops.resize_antialiased(img, 224, 224), 0.37, atol=1e-6)


# --- MTL input -------------------------------------------------------------------------------------------

def reference_mtl(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """face_detection.get_face + MultitaskPredictor.preprocess, with the crop clipped to the frame."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = box[:4].astype(int)
    x1, x2 = np.clip([x1, x2], 0, w)
    y1, y2 = np.clip([y1, y2], 0, h)
    face = frame[y1:y2, x1:x2]
    rgb = face[:, :, ::-1].astype(np.float32) / 255.0  # BGR -> RGB, ToTensor
    resized = pillow_resize(rgb, 224, 224)
    return ((resized - MEAN) / STD).transpose(2, 0, 1)


@pytest.fixture
def frame() -> np.ndarray:
    rng = np.random.default_rng(11)
    return rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)


@pytest.mark.parametrize("box", [
    [30.7, 20.2, 110.9, 100.99],  # inside
    [-15.5, 20.0, 60.2, 90.0],  # off the left edge
    [100.0, 30.0, 190.0, 100.0],  # off the right edge
    [40.0, -25.0, 100.0, 60.0],  # off the top
    [40.0, 70.0, 100.0, 150.0],  # off the bottom
    [-10.0, -10.0, 200.0, 200.0],  # bigger than the frame
])
def test_mtl_input_matches_reference_with_clipping(frame, box):
    box = np.array(box, np.float32)
    ours = crops.mtl_input(frame, box)
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference_mtl(frame, box), rtol=0, atol=1e-4)


def test_mtl_input_is_rgb():
    frame = np.zeros((40, 40, 3), np.uint8)
    frame[:, :, 0] = 255  # pure blue in BGR
    x = crops.mtl_input(frame, np.array([0, 0, 40, 40], np.float32))
    np.testing.assert_allclose(x[2], (1 - MEAN[2]) / STD[2], atol=1e-5)  # blue is channel 2 in RGB
    np.testing.assert_allclose(x[0], (0 - MEAN[0]) / STD[0], atol=1e-5)


def test_mtl_input_degenerate_box_still_gives_an_input(frame):
    x = crops.mtl_input(frame, np.array([200, 200, 250, 250], np.float32))  # entirely outside
    assert x.shape == (3, 224, 224) and np.isfinite(x).all()


# --- STAR ------------------------------------------------------------------------------------------------

BOXES = [
    [30.7, 20.2, 110.9, 100.99],
    [-15.5, 20.0, 60.2, 90.0],
    [100.3, 30.8, 190.1, 171.4],
    [0.0, 0.0, 13.0, 40.0],
]


@pytest.mark.parametrize("box", BOXES)
def test_star_matrix_matches_upstream(box):
    box = np.array(box, np.float32)
    np.testing.assert_allclose(crops.star_matrix(box), upstream_matrix(box), rtol=1e-6, atol=1e-4)


def test_star_matrix_values_by_hand():
    m = crops.star_matrix(np.array([10.9, 20.2, 110.5, 140.0], np.float32))  # int -> 10, 20, 110, 140
    factor = 256 / (100 / 200 * 1.05 * 200)
    np.testing.assert_allclose(m, [[factor, 0, 127.5 - factor * 60], [0, factor, 127.5 - factor * 80],
                                   [0, 0, 1]], rtol=1e-6)


@pytest.mark.parametrize("box", BOXES)
def test_star_input_is_warp_perspective_bgr(frame, box):
    m = crops.star_matrix(np.array(box, np.float32))
    x = crops.star_input(frame, m)
    assert x.shape == (3, 256, 256) and x.dtype == np.float32
    warped = cv2.warpPerspective(frame, m, dsize=(256, 256), flags=cv2.INTER_LINEAR, borderValue=0)
    np.testing.assert_allclose(x, warped.transpose(2, 0, 1).astype(np.float32) / 255.0 * 2.0 - 1.0, atol=1e-6)
    assert x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("box", BOXES)
def test_star_points_to_frame_matches_upstream(box):
    m = crops.star_matrix(np.array(box, np.float32))
    rng = np.random.default_rng(5)
    pts = rng.uniform(-1, 1, (98, 2)).astype(np.float32)
    ref = upstream_postprocess(upstream_denorm_points(pts[None])[0], np.linalg.inv(upstream_matrix(np.array(box))))
    np.testing.assert_allclose(crops.star_points_to_frame(pts, m), ref, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("box", BOXES)
def test_star_points_round_trip(box):
    m = crops.star_matrix(np.array(box, np.float32)).astype(np.float64)
    rng = np.random.default_rng(8)
    frame_pts = rng.uniform(-20, 200, (98, 2))
    crop = frame_pts @ m[:2, :2].T + m[:2, 2]  # frame -> crop pixels by the matrix
    normed = (crop * 2 + 1) / 256 - 1  # STAR's norm_points (align_corners=False)
    back = crops.star_points_to_frame(normed.astype(np.float32), m.astype(np.float32))
    np.testing.assert_allclose(back, frame_pts, atol=2e-3)


def test_star_crop_centre_is_box_centre():
    # a bright pixel at the box centre lands at the crop centre (127.5 -> between pixels 127 and 128)
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[99:101, 99:101] = 255
    m = crops.star_matrix(np.array([50, 50, 150, 150], np.float32))  # centre (100, 100)
    x = crops.star_input(frame, m)
    ys, xs = np.nonzero(x[0] > -1)
    assert abs(ys.mean() - 127.5 + 256 / 105 * 0.5) < 2 and abs(xs.mean() - 127.5 + 256 / 105 * 0.5) < 2
