"""Head pose: exact recovery of known poses, OpenFace 2.2's Euler convention and signs, mirror symmetry,
intrinsics, and NaN for input that has no pose."""

from __future__ import annotations

import math

import numpy as np
import pytest

from daemon.core import pose, wflw

WIDTH, HEIGHT = 640, 360


def known_poses(n: int, seed: int = 0) -> np.ndarray:
    """n poses: yaw ±40°, pitch ±25°, roll ±20°, 40-120 cm away, face centre within the middle 60 % of the
    frame."""
    rng = np.random.default_rng(seed)
    cam = pose.Camera.openface_default(WIDTH, HEIGHT)
    tz = rng.uniform(400, 1200, n)
    return np.stack([
        rng.uniform(-0.3, 0.3, n) * tz * (WIDTH / 2) / cam.fx,
        rng.uniform(-0.3, 0.3, n) * tz * (HEIGHT / 2) / cam.fy,
        tz,
        np.radians(rng.uniform(-25, 25, n)),
        np.radians(rng.uniform(-40, 40, n)),
        np.radians(rng.uniform(-20, 20, n)),
    ], axis=1)


def landmarks_for(poses: np.ndarray, cam: pose.Camera) -> np.ndarray:
    """[N, 98, 2] float32 landmarks: the model points projected, every other point NaN (unused)."""
    out = np.full((len(poses), 98, 2), np.nan, np.float32)
    for i, p in enumerate(poses):
        out[i, pose.MODEL_INDICES] = pose.project_model(p, cam)
    return out


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    r = pose.euler_to_matrix(*a[3:]).T @ pose.euler_to_matrix(*b[3:])
    return math.degrees(math.acos(min(1.0, (np.trace(r) - 1) / 2)))


def test_recovers_50_known_poses():
    """Done-when of issue 14: rotation within 0.5°, translation within 1 %. The landmarks are exact
    projections rounded to float32 (the pipeline's type), 1.5e-5 px at 300 px; measured worst errors
    4e-5° and 5e-7 relative, so the issue's bounds hold with four orders of magnitude to spare on any CPU."""
    truth = known_poses(50)
    cam = pose.Camera.openface_default(WIDTH, HEIGHT)
    est = pose.estimate_poses(landmarks_for(truth, cam), WIDTH, HEIGHT)
    assert est.shape == (50, 6) and est.dtype == np.float64
    assert np.isfinite(est).all()
    for e, t in zip(est, truth):
        assert rotation_error_deg(e, t) < 0.5
        assert np.degrees(np.abs(e[3:] - t[3:])).max() < 0.5  # each Euler angle too
        assert np.linalg.norm(e[:3] - t[:3]) < 0.01 * np.linalg.norm(t[:3])


def test_euler_convention_is_openface_xyz():
    """R = Rx·Ry·Rz, entries as OpenFace 2.2's Euler2RotationMatrix writes them, and the inverse."""
    p, y, r = 0.3, -0.5, 0.2
    s1, s2, s3, c1, c2, c3 = (math.sin(p), math.sin(y), math.sin(r), math.cos(p), math.cos(y), math.cos(r))
    expected = np.array([
        [c2 * c3, -c2 * s3, s2],
        [c1 * s3 + c3 * s1 * s2, c1 * c3 - s1 * s2 * s3, -c2 * s1],
        [s1 * s3 - c1 * c3 * s2, c3 * s1 + c1 * s2 * s3, c1 * c2],
    ])
    np.testing.assert_allclose(pose.euler_to_matrix(p, y, r), expected, atol=1e-15)
    assert pose.matrix_to_euler(expected) == pytest.approx((p, y, r), abs=1e-12)


def nose_minus_eyes(p: np.ndarray) -> np.ndarray:
    """Image offset of the nose tip (WFLW 54) from the midpoint of the four eye corners."""
    pts = dict(zip(pose.MODEL_INDICES, pose.project_model(p, pose.Camera.openface_default(WIDTH, HEIGHT))))
    eyes = np.mean([pts[i] for i in (60, 64, 68, 72)], axis=0)
    return pts[54] - eyes


def test_signs_as_seen_in_the_image():
    front = np.array([0, 0, 600, 0, 0, 0.0])
    d0 = nose_minus_eyes(front)
    assert abs(d0[0]) < 1e-9  # frontal: nose straight below the eyes
    turned = nose_minus_eyes(front + [0, 0, 0, 0, 0.3, 0])
    assert turned[0] < -5  # yaw > 0: nose moves to the image's left (subject turns to their right)
    down = nose_minus_eyes(front + [0, 0, 0, 0.3, 0, 0])
    assert down[1] > d0[1] + 2  # pitch > 0: nose tip moves down
    cam = pose.Camera.openface_default(WIDTH, HEIGHT)
    rolled = dict(zip(pose.MODEL_INDICES, pose.project_model(front + [0, 0, 0, 0, 0, 0.3], cam)))
    assert rolled[72][1] > rolled[60][1] + 5  # roll > 0: the image-right eye drops (clockwise)


def test_model_is_exactly_symmetric():
    pts = dict(zip(pose.MODEL_INDICES, map(tuple, pose.MODEL_POINTS)))
    for i, (x, y, z) in pts.items():
        assert pts[int(wflw.MIRROR[i])] == (-x, y, z)
    assert set(wflw.MIRROR[list(pose.MODEL_INDICES)].tolist()) == set(pose.MODEL_INDICES)


@pytest.mark.parametrize("noise_px", [0.0, 0.5])
def test_mirrored_landmarks_negate_yaw_roll_and_tx(noise_px):
    """Mirror x -> 2·cx - x with the WFLW pairing: pitch, Ty, Tz unchanged, yaw, roll, Tx negated. The
    mirrored problem is the exact mirror of the original (symmetric model), so any difference is the
    solver's stopping tolerance, not rounding: measured at most 8.4e-7 rad and 3.3e-4 mm without noise,
    1.8e-5 rad and 1.5e-4 mm with 0.5 px noise. Bounds: 1e-4 rad (0.006°) and 1e-3 mm."""
    truth = known_poses(50, seed=1)
    cam = pose.Camera.openface_default(WIDTH, HEIGHT)
    lm = landmarks_for(truth, cam)
    lm += np.random.default_rng(2).normal(0, noise_px, lm.shape).astype(np.float32)
    est = pose.estimate_poses(lm, WIDTH, HEIGHT)
    mirrored = pose.estimate_poses(wflw.mirror_landmarks(lm, cam.cx), WIDTH, HEIGHT)
    assert np.isfinite(est).all() and np.isfinite(mirrored).all()
    np.testing.assert_allclose(mirrored[:, 3], est[:, 3], atol=1e-4)
    np.testing.assert_allclose(mirrored[:, 4:6], -est[:, 4:6], atol=1e-4)
    np.testing.assert_allclose(mirrored[:, 0], -est[:, 0], atol=1e-3)
    np.testing.assert_allclose(mirrored[:, 1:3], est[:, 1:3], atol=1e-3)


def test_degenerate_and_missing_input_gives_nan_rows():
    cam = pose.Camera.openface_default(WIDTH, HEIGHT)
    good = landmarks_for(known_poses(1, seed=4), cam)[0]
    rows = np.full((6, 98, 2), np.nan, np.float32)
    rows[0] = good
    rows[1] = 100.0  # every point in one place
    rows[2] = good
    rows[2, 54] = np.nan  # a model point missing
    rows[3, :, 0] = np.linspace(0, 300, 98)
    rows[3, :, 1] = 120.0  # all on one line
    rows[4] = np.random.default_rng(5).uniform(0, 640, (98, 2))  # not face-shaped
    # row 5: no face at all (NaN)
    est = pose.estimate_poses(rows, WIDTH, HEIGHT)
    assert np.isfinite(est[0]).all()
    assert np.isnan(est[1:]).all()


def test_shuffled_points_are_not_face_shaped():
    """The residual rule rejects landmarks whose model points are permuted (a face-sized cloud that no pose
    of the model explains) for all 50 poses."""
    cam = pose.Camera.openface_default(WIDTH, HEIGHT)
    lm = landmarks_for(known_poses(50, seed=6), cam)
    perm = np.array(pose.MODEL_INDICES)[np.random.default_rng(7).permutation(len(pose.MODEL_INDICES))]
    lm[:, list(pose.MODEL_INDICES)] = lm[:, perm]
    assert np.isnan(pose.estimate_poses(lm, WIDTH, HEIGHT)).all()


def test_empty_input_and_bad_shape():
    assert pose.estimate_poses(np.zeros((0, 98, 2), np.float32), WIDTH, HEIGHT).shape == (0, 6)
    with pytest.raises(ValueError, match=r"\[N, 98, 2\]"):
        pose.estimate_poses(np.zeros((3, 68, 2), np.float32), WIDTH, HEIGHT)


def test_openface_default_intrinsics():
    cam = pose.Camera.openface_default(1920, 1080)
    f = (500 * 1920 / 640 + 500 * 1080 / 480) / 2
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (f, f, 960.0, 540.0)


def test_camera_overrides():
    assert pose.camera_for(640, 360) == pose.Camera.openface_default(640, 360)
    assert pose.camera_for(640, 360, fx=800.0) == pose.Camera(800.0, 800.0, 320.0, 180.0)
    assert pose.camera_for(640, 360, fx=800.0, fy=810.0, cx=300.0, cy=200.0) == pose.Camera(800, 810, 300, 200)
    with pytest.raises(ValueError, match="camera_fy"):
        pose.camera_for(640, 360, fy=800.0)
    with pytest.raises(ValueError, match="camera_fx"):
        pose.Camera(-1.0, 500.0, 320.0, 180.0)
    with pytest.raises(ValueError, match="camera_cy"):
        pose.Camera(500.0, 500.0, 320.0, float("nan"))
    with pytest.raises(ValueError, match="0x360"):
        pose.Camera.openface_default(0, 360)


def test_calibrated_camera_is_used():
    """Landmarks made with a calibrated camera are recovered with that camera, and mis-recovered (depth off
    by the focal-length ratio) with the default guess."""
    cam = pose.Camera(fx=900.0, fy=905.0, cx=300.0, cy=190.0)
    truth = known_poses(5, seed=8)
    lm = landmarks_for(truth, cam)
    est = pose.estimate_poses(lm, WIDTH, HEIGHT, cam)
    np.testing.assert_allclose(est[:, 2], truth[:, 2], rtol=1e-5)
    guessed = pose.estimate_poses(lm, WIDTH, HEIGHT)
    assert np.all(np.abs(guessed[:, 2] / truth[:, 2] - 437.5 / 902.5) < 0.05)
