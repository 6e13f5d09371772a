"""The WFLW left/right pairing: a proper mirror permutation, consistent with the eye definitions, and the
symmetry of the shared STAR's face template."""

from __future__ import annotations

import numpy as np

from daemon.core import blink, wflw
from tests.conftest import SHARED, require_shared


def test_flip_index_is_an_involutive_permutation():
    index = wflw.FLIP_INDEX
    assert sorted(index.tolist()) == list(range(98))
    np.testing.assert_array_equal(index[index], np.arange(98))
    assert len(wflw.LEFT_RIGHT_PAIRS) == (98 - len(wflw.MIDLINE_POINTS)) // 2


def test_only_midline_points_map_to_themselves():
    # jaw tip, nose bridge, nose tip, and the middle of the upper and lower lips (outer and inner)
    assert wflw.MIDLINE_POINTS == (16, 51, 52, 53, 54, 57, 79, 85, 90, 94)


def test_pairing_swaps_the_eyes_as_blink_defines_them():
    """Corner with corner, each lid pair with its mirror lid pair: a flipped face's right eye is the
    original's left eye, point for point."""
    swap = {i: int(wflw.FLIP_INDEX[i]) for i in range(98)}
    right, left = blink.RIGHT_EYE, blink.LEFT_EYE
    assert {swap[i] for i in right["corners"]} == set(left["corners"])
    assert {frozenset((swap[a], swap[b])) for a, b in right["lids"]} == {frozenset(p) for p in left["lids"]}
    assert swap[wflw.RIGHT_EYE_INNER] == wflw.LEFT_EYE_INNER and swap[wflw.RIGHT_PUPIL] == wflw.LEFT_PUPIL
    assert sorted(swap[i] for i in wflw.RIGHT_EYE) == list(wflw.LEFT_EYE)


def test_flip_landmarks_twice_is_identity_and_flips_x():
    points = np.random.default_rng(3).uniform(0, 200, (2, 98, 2))
    flipped = wflw.flip_landmarks(points, 320)
    # x -> 319 - x twice rounds once each way: equal to within a few units in the last place
    np.testing.assert_allclose(wflw.flip_landmarks(flipped, 320), points, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(flipped[:, 97], [[319 - points[k, 96, 0], points[k, 96, 1]] for k in range(2)])


def test_flip_landmarks_rejects_other_layouts():
    try:
        wflw.flip_landmarks(np.zeros((68, 2)), 10)
    except ValueError as exc:
        assert "98" in str(exc) and "(68, 2)" in str(exc)
    else:
        raise AssertionError("68 points accepted")


def test_shared_star_face_template_is_symmetric_under_the_pairing():
    """The shared STAR adds its output to a hand-made WFLW face template (a constant of the graph, built
    independently of this table, centred on x = 0 in crop coordinates). Mirrored (x -> -x) and re-paired
    with FLIP_INDEX it must give itself back; a single wrong pair moves a point by 0.05 or more."""
    require_shared("models/openface3/star.onnx")
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(SHARED / "models/openface3/star.onnx")).graph
    (template,) = [numpy_helper.to_array(t) for t in graph.initializer if t.name == "face_template"]
    template = template.reshape(98, 2).astype(np.float64)
    mirrored = template[wflw.FLIP_INDEX] * [-1.0, 1.0]
    # measured 7.6e-17: the template is stored in float32 and symmetric to its last bit
    np.testing.assert_allclose(mirrored, template, atol=1e-6)
