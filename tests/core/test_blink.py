"""Eye openness from WFLW landmarks and AU45 from openness, against a hand-written oracle."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.core import blink


def eye(points: np.ndarray, first: int, cx: float, cy: float, width: float, lids: tuple[float, float, float]):
    """WFLW eye contour: first = corner, first+1..3 upper lid, first+4 other corner, first+5..7 lower lid
    (first+1 pairs with first+7, +2 with +6, +3 with +5)."""
    points[first] = (cx - width / 2, cy)
    points[first + 4] = (cx + width / 2, cy)
    for k, gap in enumerate(lids, start=1):
        x = cx - width / 2 + width * k / 4
        points[first + k] = (x, cy - gap / 2)  # upper
        points[first + 8 - k] = (x, cy + gap / 2)  # lower, paired
    return points


def face(right_lids=(3.0, 4.0, 5.0), left_lids=(2.0, 2.0, 2.0), width=10.0) -> np.ndarray:
    pts = np.random.default_rng(0).uniform(0, 100, (98, 2))
    eye(pts, 60, 30, 40, width, right_lids)  # image left = subject's right
    eye(pts, 68, 70, 40, width, left_lids)
    return pts


def test_eye_openness_is_mean_lid_distance_over_corner_distance():
    right, left = blink.openness(face())
    assert right == pytest.approx((3 + 4 + 5) / 3 / 10)
    assert left == pytest.approx(2 / 10)


def test_openness_uses_wflw_60_67_for_the_subjects_right_eye():
    pts = face(right_lids=(1, 1, 1), left_lids=(6, 6, 6))
    right, left = blink.openness(pts)
    assert right == pytest.approx(0.1) and left == pytest.approx(0.6)


def test_openness_ignores_points_outside_the_eyes():
    a = face()
    b = a.copy()
    b[:60] += 17.0
    b[76:] -= 9.0
    np.testing.assert_allclose(blink.openness(a), blink.openness(b))


def test_openness_batched_and_zero_width_eye():
    batch = np.stack([face(), face(width=0.0)])
    right, left = blink.openness(batch)
    assert right.shape == (2,)
    assert right[0] == pytest.approx(0.4)
    assert np.isnan(right[1]) and np.isnan(left[1])


def oracle_au45(right, left, success):
    both = (np.asarray(right, float) + np.asarray(left, float)) / 2
    ok = np.asarray(success, bool) & np.isfinite(both)
    p95 = np.percentile(both[ok], 95)
    out = np.full(len(both), np.nan)
    out[ok] = np.clip(5 * (1 - both[ok] / p95), 0, 5)
    return out


def test_au45_formula():
    rng = np.random.default_rng(1)
    right = rng.uniform(0.05, 0.4, 200)
    left = rng.uniform(0.05, 0.4, 200)
    success = rng.uniform(size=200) > 0.2
    out = blink.au45(right, left, success)
    np.testing.assert_allclose(out, oracle_au45(right, left, success), rtol=1e-12, equal_nan=True)
    assert np.isnan(out[~success]).all()
    assert np.nanmin(out) >= 0 and np.nanmax(out) <= 5


def test_au45_baseline_over_successful_frames_only():
    # failed frames carry huge (stale) openness: they must not move the baseline
    right = np.array([0.3, 0.3, 0.15, 0.0, 9.0, 9.0])
    success = np.array([True, True, True, True, False, False])
    out = blink.au45(right, right, success)
    p95 = np.percentile([0.3, 0.3, 0.15, 0.0], 95)
    np.testing.assert_allclose(out[:4], np.clip(5 * (1 - np.array([0.3, 0.3, 0.15, 0.0]) / p95), 0, 5))
    assert out[3] == 5.0 and out[0] == 0.0
    assert np.isnan(out[4:]).all()


def test_au45_closed_eye_is_5_open_eye_is_0():
    right = np.array([0.3] * 19 + [0.0])
    out = blink.au45(right, right, np.ones(20, bool))
    assert out[-1] == 5.0
    assert (out[:-1] == 0).all()


def test_au45_all_failed_or_zero_baseline_is_nan():
    assert np.isnan(blink.au45(np.ones(3), np.ones(3), np.zeros(3, bool))).all()
    assert np.isnan(blink.au45(np.zeros(3), np.zeros(3), np.ones(3, bool))).all()
    assert blink.au45(np.array([]), np.array([]), np.array([], bool)).shape == (0,)


def test_au45_nan_openness_on_a_successful_frame():
    right = np.array([0.3, np.nan, 0.2])
    out = blink.au45(right, right, np.ones(3, bool))
    assert np.isnan(out[1]) and np.isfinite(out[[0, 2]]).all()


def test_au45_one_eye_uses_that_eyes_own_baseline():
    """Per-side AU45 of the mirrored faces: one eye's openness against its own 95th percentile."""
    rng = np.random.default_rng(2)
    right = rng.uniform(0.05, 0.4, 100)
    left = rng.uniform(0.2, 0.6, 100)  # a different baseline than the right eye's
    success = rng.uniform(size=100) > 0.1
    out = blink.au45_one_eye(left, success)
    np.testing.assert_allclose(out, oracle_au45(left, left, success), rtol=1e-12, equal_nan=True)
    assert not np.allclose(out[success], oracle_au45(right, left, success)[success])
    np.testing.assert_array_equal(blink.au45(right, left, success), blink.au45_one_eye((right + left) / 2, success))


def test_blinks_are_runs_at_or_above_threshold_marked_at_their_peak():
    t = blink.BLINK_AU45
    series = [0.0, t, 4.0, 3.0, 0.1, np.nan, t - 1e-9, 5.0, np.nan, 4.9, 3.0]
    assert blink.blinks(series) == [(1, 3, 2), (7, 7, 7), (9, 10, 9)]
    assert blink.blinks([]) == [] and blink.blinks([np.nan, 0.0]) == []
