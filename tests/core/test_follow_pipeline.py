"""``detect_every`` in the pipeline, on tiny models: which frames are detected, and that a followed frame is
measured at the box its previous frame's landmarks give."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from daemon.core.follow import LANDMARK_BOX
from daemon.core.pipeline import FacesMode, Pipeline
from daemon.core.video import Frame
from tests import tinymodels
from tests.core.test_pipeline import options, reference_landmarks, reference_mtl_input, session

W, H = 160, 120


def template_star(seed: int = 5) -> onnx.ModelProto:
    """A STAR stand-in whose landmarks are a template that ``LANDMARK_BOX`` maps back onto the crop's box
    (for a square box), moved a little by the crop's mean colour: so following holds, and each frame's
    landmarks differ. The template's extent in [-1, 1] crop units: x ±1/(1.05·sw), y ±1/(1.05·sh) around
    dy-shifted centre (the crop spans 1.05 times the box's side)."""
    m = LANDMARK_BOX
    half_x, half_y = 1 / (1.05 * m.sw), 1 / (1.05 * m.sh)
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(-half_x, half_x, 98), rng.uniform(-half_y, half_y, 98)])
    pts[0], pts[1] = (-half_x, -half_y), (half_x, half_y)
    pts[:, 1] -= m.dy * 2 * half_y
    nodes = tinymodels._gap_features("input")
    nodes += [
        tinymodels._const("t_w", rng.normal(0, 0.01, (3, 196))),
        tinymodels._const("t_b", np.arctanh(pts.ravel())),
        helper.make_node("MatMul", ["feat", "t_w"], ["t_mm"]),
        helper.make_node("Add", ["t_mm", "t_b"], ["t_flat"]),
        tinymodels._const("t_shape", [-1, 98, 2], np.int64),
        helper.make_node("Reshape", ["t_flat", "t_shape"], ["t_pts"]),
        helper.make_node("Tanh", ["t_pts"], ["landmarks"]),
    ]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 256, 256])
    out = helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["N", 98, 2])
    return tinymodels._model(nodes, [inp], [out], "template_star")


SQUARE_FACE = tinymodels.Face((0.3, 0.2, 0.7, 0.75), 0.9)  # 64 x 66 pixels in a 160 x 120 frame
TWO_FACES = [tinymodels.Face((0.02, 0.1, 0.4, 0.62), 0.95), tinymodels.Face((0.55, 0.2, 0.95, 0.73), 0.8)]


def frames(n: int, start: int = 0, cut: int | None = None) -> list[Frame]:
    """A still scene with a small moving block (the content changes a little every frame); from frame
    ``cut`` on, another, much brighter scene."""
    out = []
    for i in range(start, start + n):
        img = np.full((H, W, 3), (60, 90, 120), np.uint8)
        img[10:20, 5 + 3 * i:15 + 3 * i] = (250, 250, 250)
        if cut is not None and i >= cut:
            img = np.clip(img.astype(int) + 110, 0, 255).astype(np.uint8)
        out.append(Frame(i, i / 25.0, img))
    return out


@pytest.fixture
def models(tmp_path):
    return tinymodels.write_set(tmp_path / "template", det=tinymodels.detector([SQUARE_FACE]), star=template_star())


def test_detect_every_1_is_the_exact_pipeline(models, tmp_path):
    exact = Pipeline(options(models, tmp_path)).run(frames(9))
    every_1 = Pipeline(options(models, tmp_path, detect_every=1)).run(frames(9))
    for name in exact:
        np.testing.assert_array_equal(exact[name], every_1[name], err_msg=name)
    assert exact.detected.all()


def test_followed_frames_are_measured_at_the_previous_frames_landmark_box(models, tmp_path):
    fr = frames(8)
    done = []
    out = Pipeline(options(models, tmp_path, detect_every=3, batch_size=2)).run(fr, done.append)
    assert out.detected.tolist() == [True, False, False, True, False, False, True, False]  # across batches
    assert out.success.all() and done[-1] == 8 and done == sorted(done)
    np.testing.assert_allclose(out.confidence, 0.9, atol=1e-6)  # followed rows: the last detection's score
    detector_box = out.box[0].copy()
    np.testing.assert_array_equal(out.box[out.detected], np.tile(detector_box, (3, 1)))
    mtl, star = session(models / "mtl.onnx"), session(models / "star.onnx")
    for row in np.flatnonzero(~out.detected):
        np.testing.assert_allclose(out.box[row], LANDMARK_BOX.box(out.landmarks[row - 1]), atol=1e-4)
        image = fr[row].image
        np.testing.assert_allclose(out.landmarks[row], reference_landmarks(image, out.box[row], star), atol=1e-3)
        au = mtl.run(["au"], {"input": reference_mtl_input(image, out.box[row])[None]})[0]
        np.testing.assert_allclose(out.au[row], au[0], atol=1e-5)
        assert 0.8 < float(out.box[row, 2] - out.box[row, 0]) / float(detector_box[2] - detector_box[0]) < 1.25
    assert np.isfinite(out.eye_open).all()


def test_every_run_starts_with_a_detection(models, tmp_path):
    pipe = Pipeline(options(models, tmp_path, detect_every=4))
    first, second = pipe.run(frames(6)), pipe.run(frames(6, start=6))
    assert first.detected.tolist() == second.detected.tolist() == [True, False, False, False, True, False]


def test_a_scene_cut_is_detected(models, tmp_path):
    out = Pipeline(options(models, tmp_path, detect_every=10)).run(frames(8, cut=5))
    assert out.detected.tolist() == [True, False, False, False, False, True, False, False]


def test_landmarks_that_do_not_fit_the_crop_detect_every_frame(tiny_models, tmp_path):
    """The standard tiny STAR scatters its points over the whole crop: its landmark box is far larger than
    the face's, so following is lost on every frame and the run is the exact one."""
    exact = Pipeline(options(tiny_models, tmp_path)).run(frames(6))
    followed = Pipeline(options(tiny_models, tmp_path, detect_every=3)).run(frames(6))
    assert followed.detected.all()
    for name in exact:
        np.testing.assert_array_equal(exact[name], followed[name], err_msg=name)


def test_frames_without_a_face_are_detected_each(tmp_path):
    gated = tinymodels.write_set(tmp_path / "gated", det=tinymodels.detector([SQUARE_FACE], gate=0.0),
                                 star=template_star())
    out = Pipeline(options(gated, tmp_path, detect_every=5)).run(frames(4))  # dark: no face anywhere
    assert out.detected.all() and not out.success.any()


def test_all_faces_are_followed_each_at_its_own_box(tmp_path):
    models = tinymodels.write_set(tmp_path / "two", det=tinymodels.detector(TWO_FACES), star=template_star())
    out = Pipeline(options(models, tmp_path, detect_every=3, faces=FacesMode.ALL)).run(frames(4))
    assert out.frame.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out.detection.tolist() == [0, 1] * 4
    assert out.detected.tolist() == [True, True, False, False, False, False, True, True]
    np.testing.assert_allclose(out.confidence, [0.95, 0.8] * 4, atol=1e-6)
    for row in (2, 3, 4, 5):
        np.testing.assert_allclose(out.box[row], LANDMARK_BOX.box(out.landmarks[row - 2]), atol=1e-4)
    assert out.box[2, 2] < out.box[3, 0]  # two faces, not one followed twice


def test_following_needs_star(tiny_models, tmp_path):
    with pytest.raises(ValueError, match="detect_every > 1 follows faces with STAR's landmarks: turn AU45 on"):
        Pipeline(options(tiny_models, tmp_path, detect_every=2, au45=False))
