"""Hemi-face geometry on synthetic frames and landmarks: midline, reflection, mirrored frames and boxes."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from daemon.core import blink, mirror, wflw


def face_landmarks(centre, roll: float = 0.0, eye_gap: float = 14.0, pupil_gap: float = 40.0,
                   corner_offset=(0.0, 0.0), seed: int = 0) -> np.ndarray:
    """98 points: random ones, with the inner eye corners and pupils of a face whose pupils' midpoint is
    ``centre`` and whose eye line is rolled by ``roll`` radians (clockwise on screen, y down).
    ``corner_offset`` moves the corners' midpoint (across, down) in the face's own axes."""
    across = np.array([math.cos(roll), math.sin(roll)])  # towards the subject's left
    down = np.array([-across[1], across[0]])
    centre = np.asarray(centre, dtype=np.float64)
    points = np.random.default_rng(seed).uniform(0, 100, (98, 2))
    corners_mid = centre + corner_offset[0] * across + corner_offset[1] * down
    points[wflw.RIGHT_PUPIL] = centre - pupil_gap / 2 * across
    points[wflw.LEFT_PUPIL] = centre + pupil_gap / 2 * across
    points[wflw.RIGHT_EYE_INNER] = corners_mid - eye_gap / 2 * across
    points[wflw.LEFT_EYE_INNER] = corners_mid + eye_gap / 2 * across
    return points


def pixel_grid(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs, ys], axis=-1).astype(np.float64)


def smooth_frame(h: int, w: int, seed: int) -> np.ndarray:
    """A random colour image with gentle gradients: a 16x coarser random grid (values 0-240) upsampled
    bilinearly, so neighbouring pixels differ by at most 16 levels."""
    coarse = np.random.default_rng(seed).integers(0, 241, (h // 16 + 3, w // 16 + 3, 3)).astype(np.uint8)
    big = cv2.resize(coarse, (coarse.shape[1] * 16, coarse.shape[0] * 16), interpolation=cv2.INTER_LINEAR)
    return big[16:16 + h, 16:16 + w].copy()


# --- midline -----------------------------------------------------------------------------------------

def test_midline_of_an_upright_face():
    line = mirror.midline(face_landmarks((50.0, 40.0)))
    np.testing.assert_array_equal(line.point, [50.0, 40.0])
    np.testing.assert_array_equal(line.normal, [1.0, 0.0])  # subject's left = image right
    np.testing.assert_array_equal(np.abs(line.direction), [0.0, 1.0])  # down (y grows)
    assert line.direction[1] == 1.0
    assert line.point.dtype == np.float64


@pytest.mark.parametrize("roll_degrees", [-35.0, -7.5, 12.0, 30.0])
def test_midline_of_a_rolled_face(roll_degrees):
    """The line goes through the inner corners' midpoint (not the pupils'), across the pupil line."""
    roll = math.radians(roll_degrees)
    points = face_landmarks((120.3, 77.9), roll=roll, corner_offset=(3.0, 5.0))
    line = mirror.midline(points)
    across = np.array([math.cos(roll), math.sin(roll)])
    down = np.array([-math.sin(roll), math.cos(roll)])
    np.testing.assert_allclose(line.normal, across, atol=1e-12)
    np.testing.assert_allclose(line.direction, down, atol=1e-12)
    np.testing.assert_allclose(line.point, np.array([120.3, 77.9]) + 3.0 * across + 5.0 * down, atol=1e-12)
    # the direction points from the pupils towards the mouth: a point below the eyes lies ahead
    pupils_mid = (points[96] + points[97]) / 2
    assert (line.point + 30 * line.direction - pupils_mid) @ down > 0


def test_signed_distance_is_negative_on_the_subjects_right():
    points = face_landmarks((60.0, 50.0), roll=math.radians(20))
    line = mirror.midline(points)
    right, left = line.signed_distance(points[[wflw.RIGHT_PUPIL, wflw.LEFT_PUPIL]])
    assert right == pytest.approx(-20.0, abs=1e-12) and left == pytest.approx(20.0, abs=1e-12)
    assert line.signed_distance(line.point + 9 * line.direction) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.__setitem__(97, p[96]), "coincide"),
    (lambda p: p.__setitem__((64, 0), np.nan), "not finite"),
])
def test_midline_rejects_unusable_landmarks(damage, message):
    points = face_landmarks((50.0, 40.0))
    damage(points)
    with pytest.raises(ValueError, match=message):
        mirror.midline(points)
    with pytest.raises(ValueError, match=r"landmarks: expected shape \(98, 2\)"):
        mirror.midline(np.zeros((68, 2)))


# --- reflection ---------------------------------------------------------------------------------------

def test_reflection_is_an_involution_fixing_the_midline():
    """R applied twice is the identity: the 2x2 part within 1e-12 (measured worst 1.3e-15), the
    translation within 8 float64 ulps of its own size (measured worst 3.4): it is 2 (point·n) n, up to
    twice the line's distance from the frame origin (thousands of pixels), and float64 holds such a
    number to 1e-13-1e-12 px, so no float64 matrix can do better than a few ulps of it. Lines from faces
    anywhere in frames up to 8000x8000."""
    rng = np.random.default_rng(7)
    for size in ([640, 360], [1920, 1080], [8000, 8000]):
        for _ in range(300):
            line = mirror.midline(face_landmarks(rng.uniform([0, 0], size), roll=rng.uniform(-math.pi, math.pi),
                                                 corner_offset=rng.uniform(-5, 5, 2)))
            r = mirror.reflection(line)
            assert r.dtype == np.float64 and r.shape == (2, 3)
            square = np.vstack([r, [0, 0, 1]])
            twice = square @ square
            np.testing.assert_allclose(twice[:2, :2], np.eye(2), rtol=0, atol=1e-12)
            ulps = np.abs(twice[:2, 2]).max() / (np.finfo(np.float64).eps * max(1.0, np.linalg.norm(r[:, 2])))
            assert ulps <= 8
            assert np.linalg.det(r[:, :2]) == pytest.approx(-1.0, abs=1e-12)
            on_line = line.point + rng.uniform(-100, 100) * line.direction
            np.testing.assert_allclose(r[:, :2] @ on_line + r[:, 2], on_line, rtol=0, atol=1e-9)
            off = line.point + 13.0 * line.normal
            np.testing.assert_allclose(r[:, :2] @ off + r[:, 2], line.point - 13.0 * line.normal,
                                       rtol=0, atol=1e-9)


# --- mirrored frames ----------------------------------------------------------------------------------

@pytest.mark.parametrize("axis_x", [40.0, 40.5])
def test_a_frame_symmetric_about_the_midline_gives_identical_mirrored_frames(axis_x):
    """Symmetric about x = 40 (a pixel column) or x = 40.5 (between two): the reflection lands on pixel
    centres exactly, so both mirrored frames equal the frame to the pixel, the seam included."""
    h, w = 60, 97
    half = np.random.default_rng(1).integers(0, 256, (h, w, 3)).astype(np.uint8)
    x = np.arange(w)
    source = np.where(x <= axis_x, x, 2 * axis_x - x).astype(int)  # columns right of the axis mirror the left
    frame = half[:, np.clip(source, 0, w - 1)]
    inside = (2 * axis_x - x >= 0)  # columns whose mirror image lies inside the frame
    line = mirror.midline(face_landmarks((axis_x, 30.0)))
    left, right = mirror.mirrored_frames(frame, line)
    np.testing.assert_array_equal(left[:, inside], right[:, inside])
    np.testing.assert_array_equal(left[:, inside], frame[:, inside])


def test_mirrored_frames_keep_one_side_and_reflect_it():
    """Vertical midline at x = 50: right-mirrored keeps columns <= 50 and shows column 50 - k at 50 + k;
    left-mirrored keeps columns > 50 and shows 50 + k at 50 - k. Exact (integer reflection)."""
    h, w = 40, 101
    frame = np.random.default_rng(2).integers(0, 256, (h, w, 3)).astype(np.uint8)
    left, right = mirror.mirrored_frames(frame, mirror.midline(face_landmarks((50.0, 20.0))))
    assert left.shape == right.shape == frame.shape and left.dtype == np.uint8
    np.testing.assert_array_equal(right[:, :51], frame[:, :51])
    np.testing.assert_array_equal(right[:, 51:], frame[:, 49::-1])
    np.testing.assert_array_equal(left[:, 51:], frame[:, 51:])
    np.testing.assert_array_equal(left[:, :50], frame[:, 100:50:-1])
    np.testing.assert_array_equal(left[:, 50], frame[:, 50])  # the seam column reflects onto itself


def test_mirrored_frames_seam_follows_the_signed_distance():
    """Rolled midline: every pixel with signed distance <= 0 keeps the original in the right-mirrored
    frame and shows the reflected frame in the left-mirrored one, and the other way round."""
    h, w = 90, 120
    frame = smooth_frame(h, w, seed=4)
    line = mirror.midline(face_landmarks((61.3, 40.7), roll=math.radians(17)))
    reflected = mirror.reflected_frame(frame, line)
    left, right = mirror.mirrored_frames(frame, line)
    right_side = line.signed_distance(pixel_grid(h, w)) <= 0
    assert 0.3 < right_side.mean() < 0.7
    np.testing.assert_array_equal(right[right_side], frame[right_side])
    np.testing.assert_array_equal(right[~right_side], reflected[~right_side])
    np.testing.assert_array_equal(left[~right_side], frame[~right_side])
    np.testing.assert_array_equal(left[right_side], reflected[right_side])
    np.testing.assert_array_equal(mirror.right_side_mask(h, w, line).astype(bool), right_side)


def test_flipped_frame_swaps_the_mirrored_sides():
    """Flip the frame (and its landmarks, with the WFLW pairing): the left-mirrored frame of the flip is
    the flipped right-mirrored frame, and vice versa, away from the 1-pixel seam.

    Equal within one grey level: the flip mirrors each bilinear weight (f -> 1 - f), and OpenCV's
    interpolation rounds the mirrored sum independently, so a value that falls near .5 can round the
    other way (measured here, OpenCV 5.0: 1 level at 55 of 4.5 million compared pixels). On an
    implementation that quantises coordinates to 1/32 pixel (older OpenCV), a weight can move by 1/32;
    the frame's neighbouring pixels differ by at most 16 levels (checked below), so the difference
    still stays below 1 level before rounding: 1 level holds on any CPU and OpenCV version."""
    h, w = 120, 160
    rng = np.random.default_rng(5)
    worst, moved, compared = 0, 0, 0
    for seed in range(40):
        frame = smooth_frame(h, w, seed)
        steps = max(np.abs(np.diff(frame.astype(int), axis=a)).max() for a in (0, 1))
        assert steps <= 16
        points = face_landmarks(rng.uniform([60, 40], [100, 80]), roll=rng.uniform(-0.5, 0.5),
                                corner_offset=rng.uniform(-3, 3, 2), seed=seed)
        flipped = np.ascontiguousarray(frame[:, ::-1])
        left, right = mirror.mirrored_frames(frame, mirror.midline(points))
        flipped_points = wflw.mirror_landmarks(points, cx=(w - 1) / 2)  # x -> w - 1 - x, pairs swapped
        flip_left, flip_right = mirror.mirrored_frames(flipped, mirror.midline(flipped_points))
        away = np.abs(mirror.midline(points).signed_distance(pixel_grid(h, w)))[:, ::-1] > 1.0
        for a, b in ((flip_left, right[:, ::-1]), (flip_right, left[:, ::-1])):
            diff = np.abs(a.astype(int) - b.astype(int))[away]
            worst, moved, compared = max(worst, int(diff.max())), moved + int((diff > 0).sum()), compared + diff.size
    assert worst <= 1
    assert moved / compared < 0.01


def test_mirrored_frames_accept_a_non_contiguous_frame():
    frame = np.random.default_rng(6).integers(0, 256, (30, 40, 3)).astype(np.uint8)
    line = mirror.midline(face_landmarks((20.0, 15.0), roll=0.2))
    for got, want in zip(mirror.mirrored_frames(frame[:, ::-1], line),
                         mirror.mirrored_frames(frame[:, ::-1].copy(), line)):
        np.testing.assert_array_equal(got, want)


# --- boxes and eyes -----------------------------------------------------------------------------------

def test_mirrored_box_of_an_upright_face_is_centred_on_the_midline():
    line = mirror.midline(face_landmarks((50.0, 40.0)))
    np.testing.assert_array_equal(mirror.mirrored_box(np.array([20, 10, 70, 90], np.float32), line),
                                  [25.0, 10.0, 75.0, 90.0])


def test_mirrored_box_of_a_rolled_face_moves_horizontally_onto_the_midline():
    roll = math.radians(25)
    line = mirror.midline(face_landmarks((200.0, 150.0), roll=roll))
    box = np.array([150.0, 120.0, 260.0, 260.0])
    moved = mirror.mirrored_box(box, line)
    centre = np.array([(moved[0] + moved[2]) / 2, (moved[1] + moved[3]) / 2])
    assert line.signed_distance(centre) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(moved[[1, 3]], box[[1, 3]])
    assert moved[2] - moved[0] == pytest.approx(110.0, abs=1e-12)
    # centre height 190 is 40 px below the midline's point: x moves by -40 tan(roll) from 200
    assert centre[0] == pytest.approx(200.0 - 40.0 * math.tan(roll), abs=1e-9)


def test_mirrored_box_needs_a_midline_that_crosses_the_box_height():
    line = mirror.midline(face_landmarks((50.0, 40.0), roll=math.pi / 2))
    with pytest.raises(ValueError, match="horizontal"):
        mirror.mirrored_box(np.array([0.0, 0.0, 10.0, 10.0]), line)


def test_each_side_keeps_its_own_eye():
    points = face_landmarks((50.0, 40.0))
    right, left = blink.openness(points)
    assert mirror.kept_eye_openness(points, mirror.Side.LEFT) == left
    assert mirror.kept_eye_openness(points, mirror.Side.RIGHT) == right
    assert mirror.Side.LEFT.value == "left_mirrored" and mirror.Side.RIGHT.value == "right_mirrored"
