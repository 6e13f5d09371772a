"""The WFLW layout tables: mirror pairing (checked against an independent source) and the 98 -> 68 subset."""

from __future__ import annotations

import numpy as np

from daemon.core import wflw

# OpenMMLab MMPose, configs/_base_/datasets/wflw.py (Apache-2.0): keypoint i's ``swap`` partner, as
# written there for i = 0..97 ('' = on the midline, written here as i itself).
MMPOSE_SWAP = (
    [32 - i for i in range(33)]
    + [46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38]
    + [51, 52, 53, 54, 59, 58, 57, 56, 55]
    + [72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65]
    + [82, 81, 80, 79, 78, 77, 76, 87, 86, 85, 84, 83]
    + [92, 91, 90, 89, 88, 95, 94, 93]
    + [97, 96]
)


def test_mirror_pairing_matches_mmpose_point_by_point():
    assert len(MMPOSE_SWAP) == 98
    assert wflw.MIRROR.tolist() == MMPOSE_SWAP


def test_mirror_is_an_involution_whose_fixed_points_are_the_midline():
    index = wflw.MIRROR
    assert sorted(index.tolist()) == list(range(98))
    assert (index[index] == np.arange(98)).all()
    assert tuple(np.flatnonzero(index == np.arange(98))) == wflw.MIDLINE


def test_mirror_pairs_named_points():
    assert wflw.MIRROR[wflw.RIGHT_EYE_OUTER] == wflw.LEFT_EYE_OUTER
    assert wflw.MIRROR[wflw.RIGHT_EYE_INNER] == wflw.LEFT_EYE_INNER
    assert wflw.MIRROR[wflw.MOUTH_RIGHT] == wflw.MOUTH_LEFT
    assert wflw.MIRROR[wflw.RIGHT_PUPIL] == wflw.LEFT_PUPIL


def test_mirror_landmarks_reflects_about_cx_and_reorders():
    pts = np.random.default_rng(3).integers(0, 2560, (2, 98, 2)) / 4.0  # quarter pixels: exact arithmetic
    m = wflw.mirror_landmarks(pts, cx=320.0)
    assert m[0, 72, 0] == 640.0 - pts[0, 60, 0] and m[0, 72, 1] == pts[0, 60, 1]
    assert m[1, 16, 0] == 640.0 - pts[1, 16, 0]
    np.testing.assert_array_equal(wflw.mirror_landmarks(m, cx=320.0), pts)  # mirroring twice is identity


def test_to_ibug68_is_the_standard_subset():
    # pixel3dmm / MonoNPHM ``WFLW_2_iBUG68``
    expected = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 33, 34, 35, 36, 37, 42, 43, 44,
                45, 46, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75,
                76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95]
    assert list(wflw.TO_IBUG68) == expected


def test_ibug68_subset_is_closed_under_mirroring():
    """iBUG-68 is itself left/right symmetric, so the mirror of a chosen WFLW point is chosen too."""
    chosen = set(wflw.TO_IBUG68)
    assert {int(wflw.MIRROR[i]) for i in chosen} == chosen


def test_mirror_swaps_the_eyes_as_blink_defines_them():
    """Corner with corner, each lid pair with its mirror lid pair: a mirrored face's right eye is the
    original's left eye, point for point (what the per-side AU45 of the mirrored faces relies on)."""
    from daemon.core import blink

    swap = {i: int(wflw.MIRROR[i]) for i in range(98)}
    right, left = blink.RIGHT_EYE, blink.LEFT_EYE
    assert {swap[i] for i in right["corners"]} == set(left["corners"])
    assert {frozenset((swap[a], swap[b])) for a, b in right["lids"]} == {frozenset(p) for p in left["lids"]}
    assert sorted(swap[i] for i in range(60, 68)) == list(range(68, 76))


def test_shared_star_face_template_is_symmetric_under_the_mirror():
    """The shared STAR adds its output to a hand-made WFLW face template (a constant of the graph, made
    independently of this table, centred on x = 0 in crop coordinates). Mirrored (x -> -x) and re-paired
    with MIRROR it gives itself back (measured: to 7.6e-17); one wrong pair would move a point by 0.05
    or more."""
    from tests.conftest import SHARED, require_shared

    require_shared("models/openface3/star.onnx")
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(SHARED / "models/openface3/star.onnx")).graph
    (template,) = [numpy_helper.to_array(t) for t in graph.initializer if t.name == "face_template"]
    template = template.reshape(98, 2).astype(np.float64)
    np.testing.assert_allclose(template[wflw.MIRROR] * [-1.0, 1.0], template, atol=1e-6)
