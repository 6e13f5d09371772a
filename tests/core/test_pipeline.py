"""The in-process pipeline on tiny models: detection gating, crops into the right networks, batching."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from daemon.core import blink
from daemon.core.models import ModelError
from daemon.core.pipeline import Pipeline, PipelineOptions
from daemon.core.video import Frame, read_range
from tests import tinymodels
from tests.conftest import frame_pattern

H, W = 48, 64
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def frames(n: int, bright=lambda i: True, start: int = 0) -> list[Frame]:
    """Frames whose content changes with the index; ``bright(i)`` decides whether the gated tiny
    detector sees a face (bright background) or not (dark)."""
    out = []
    for i in range(start, start + n):
        img = frame_pattern(i, W, H).astype(np.int32)
        img = np.clip(img + (90 if bright(i) else -200), 0, 255).astype(np.uint8)
        out.append(Frame(i, i / 25.0, img))
    return out


def options(models_dir: Path, tmp_path: Path, **kw) -> PipelineOptions:
    return PipelineOptions(models_dir=models_dir, provider="cpu", workers=1,
                           cache_dir=tmp_path / "coreml-cache", **kw)


@pytest.fixture
def gated_models(tmp_path) -> Path:
    return tinymodels.write_set(tmp_path / "gated", det=tinymodels.detector(gate=0.0))


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def reference_mtl_input(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box.astype(int)
    x1, x2 = np.clip([x1, x2], 0, w)
    y1, y2 = np.clip([y1, y2], 0, h)
    rgb = image[y1:y2, x1:x2, ::-1].astype(np.float32) / 255.0
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :, c])).resize((224, 224), Image.BILINEAR))
             for c in range(3)]
    return ((np.stack(chans, -1) - MEAN) / STD).transpose(2, 0, 1)


def reference_landmarks(image: np.ndarray, box: np.ndarray, star: ort.InferenceSession) -> np.ndarray:
    x1, y1, x2, y2 = box.astype(int)
    cw, ch = (x1 + x2) / 2, (y1 + y2) / 2
    scale = min(x2 - x1, y2 - y1) / 200 * 1.05
    f = 256 / (scale * 200.0)
    m = np.array([[f, 0, 127.5 - f * cw], [0, f, 127.5 - f * ch], [0, 0, 1]], np.float32)
    crop = cv2.warpPerspective(image, m, dsize=(256, 256), flags=cv2.INTER_LINEAR, borderValue=0)
    x = (crop.astype(np.float32) / 255.0 * 2.0 - 1.0).transpose(2, 0, 1)[None]
    (pts,) = star.run(None, {"input": x})
    crop_pts = ((pts[0] + 1) * 256 - 1) / 2
    inv = np.linalg.inv(m)
    return crop_pts @ inv[:2, :2].T + inv[:2, 2]


# --- results --------------------------------------------------------------------------------------------------

def test_every_frame_has_a_face(tiny_models, tmp_path):
    pipe = Pipeline(options(tiny_models, tmp_path))
    fr = frames(7)
    out = pipe.run(fr)
    assert len(out) == 7
    assert out.frame.tolist() == list(range(7))
    np.testing.assert_allclose(out.timestamp, np.arange(7) / 25.0)
    assert out.success.all()
    np.testing.assert_allclose(out.confidence, 0.9, atol=1e-6)
    # the tiny detector's face: (0.25, 0.2, 0.75, 0.85) of the frame
    np.testing.assert_allclose(out.box, np.tile([0.25 * W, 0.2 * H, 0.75 * W, 0.85 * H], (7, 1)), atol=1e-3)
    for name in ("gaze", "emotion", "au", "landmarks", "eye_open"):
        assert np.isfinite(getattr(out, name)).all(), name
    assert len({tuple(e) for e in out.emotion.round(5)}) > 1  # the content reaches the networks
    assert pipe.providers == {"detector": "CPUExecutionProvider", "multitask": "CPUExecutionProvider",
                              "landmarks": "CPUExecutionProvider"}


def test_measurements_match_a_reference_preprocessing(tiny_models, tmp_path):
    pipe = Pipeline(options(tiny_models, tmp_path))
    fr = frames(4)
    out = pipe.run(fr)
    mtl, star = session(tiny_models / "mtl.onnx"), session(tiny_models / "star.onnx")
    for i, f in enumerate(fr):
        x = reference_mtl_input(f.image, out.box[i])[None]
        emotion, gaze, au = mtl.run(["emotion", "gaze", "au"], {"input": x})
        np.testing.assert_allclose(out.emotion[i], emotion[0], atol=1e-4)
        np.testing.assert_allclose(out.gaze[i], gaze[0], atol=1e-4)
        np.testing.assert_allclose(out.au[i], au[0], atol=1e-4)
        lm = reference_landmarks(f.image, out.box[i], star)
        np.testing.assert_allclose(out.landmarks[i], lm, atol=1e-3)
        right, left = blink.openness(lm)
        np.testing.assert_allclose(out.eye_open[i], [right, left], rtol=1e-4)


def test_names_and_output_order_come_from_the_models(tiny_models, tmp_path):
    renamed = tinymodels.write_set(
        tmp_path / "renamed",
        det=tinymodels.detector(input_name="img", output_names=("out0", "out1", "out2"), output_order=(1, 2, 0)),
        mtl=tinymodels.multitask(input_name="x", output_names=("a", "b", "c")),
        star=tinymodels.landmarks(input_name="y", output_name="pts"),
    )
    fr = frames(5)
    a = Pipeline(options(tiny_models, tmp_path)).run(fr)
    b = Pipeline(options(renamed, tmp_path)).run(fr)
    for name, arr in a.items():
        np.testing.assert_array_equal(getattr(b, name), arr, err_msg=name)


def test_no_face_anywhere(tmp_path):
    d = tinymodels.write_set(tmp_path / "noface", det=tinymodels.detector(faces=(), background=0.1))
    out = Pipeline(options(d, tmp_path)).run(frames(6))
    assert len(out) == 6 and not out.success.any()
    np.testing.assert_allclose(out.confidence, 0.1, atol=1e-6)
    for name in ("box", "gaze", "emotion", "au", "landmarks", "eye_open"):
        assert np.isnan(getattr(out, name)).all(), name


def test_face_below_threshold_is_not_a_face(tmp_path):
    d = tinymodels.write_set(tmp_path / "weak", det=tinymodels.detector([tinymodels.Face((0.1, 0.1, 0.9, 0.9), 0.45)]))
    out = Pipeline(options(d, tmp_path)).run(frames(3))
    assert not out.success.any()
    np.testing.assert_allclose(out.confidence, 0.45, atol=1e-6)


def test_best_of_two_faces_is_the_primary(tmp_path):
    faces = [tinymodels.Face((0.05, 0.05, 0.3, 0.4), 0.7), tinymodels.Face((0.5, 0.4, 0.95, 0.95), 0.95)]
    d = tinymodels.write_set(tmp_path / "two", det=tinymodels.detector(faces))
    out = Pipeline(options(d, tmp_path)).run(frames(2))
    assert out.success.all()
    np.testing.assert_allclose(out.confidence, 0.95, atol=1e-6)
    np.testing.assert_allclose(out.box[0], [0.5 * W, 0.4 * H, 0.95 * W, 0.95 * H], atol=1e-3)


def test_mixed_frames_in_one_batch(gated_models, tmp_path):
    pattern = [True, False, False, True, True, False, True, False, True, True, False]
    out = Pipeline(options(gated_models, tmp_path, batch_size=4)).run(frames(len(pattern), lambda i: pattern[i]))
    assert out.success.tolist() == pattern
    ok = out.success
    assert np.isfinite(out.au[ok]).all() and np.isnan(out.au[~ok]).all()
    assert np.isfinite(out.landmarks[ok]).all() and np.isnan(out.landmarks[~ok]).all()
    np.testing.assert_allclose(out.confidence[~ok], 0.1, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 5, 32])
def test_batch_size_does_not_change_results(gated_models, tmp_path, batch):
    fr = frames(11, lambda i: i % 3 != 1)
    reference = Pipeline(options(gated_models, tmp_path, batch_size=8)).run(fr)
    out = Pipeline(options(gated_models, tmp_path, batch_size=batch)).run(fr)
    for name, arr in reference.items():
        np.testing.assert_array_equal(getattr(out, name), arr, err_msg=name)


def test_au45_off_skips_star(tiny_models, tmp_path):
    (tiny_models / "star.onnx").unlink()  # not needed without AU45
    pipe = Pipeline(options(tiny_models, tmp_path, au45=False))
    assert set(pipe.sessions) == {"detector", "multitask"}
    out = pipe.run(frames(4))
    assert out.success.all() and np.isfinite(out.au).all() and np.isfinite(out.emotion).all()
    assert np.isnan(out.landmarks).all() and np.isnan(out.eye_open).all()


def test_au45_off_gives_the_same_other_measurements(tiny_models, tmp_path):
    fr = frames(3)
    on = Pipeline(options(tiny_models, tmp_path)).run(fr)
    off = Pipeline(options(tiny_models, tmp_path, au45=False)).run(fr)
    for name in ("success", "confidence", "box", "gaze", "emotion", "au"):
        np.testing.assert_array_equal(getattr(off, name), getattr(on, name), err_msg=name)


def test_detect_max_side_reports_boxes_in_frame_pixels(tiny_models, tmp_path):
    out = Pipeline(options(tiny_models, tmp_path, detect_max_side=32)).run(frames(2))
    assert out.success.all()
    np.testing.assert_allclose(out.box[0], [0.25 * W, 0.2 * H, 0.75 * W, 0.85 * H], atol=0.5)


def test_no_frames(tiny_models, tmp_path):
    out = Pipeline(options(tiny_models, tmp_path)).run(iter([]))
    assert len(out) == 0


def test_missing_models_raise_model_error(tmp_path):
    with pytest.raises(ModelError):
        Pipeline(options(tmp_path / "none", tmp_path))


def test_frames_from_a_video(tiny_models, tmp_path, synthetic_video):
    video = synthetic_video(frames=9, width=W, height=H)
    out = Pipeline(options(tiny_models, tmp_path, batch_size=4)).run(read_range(video, 2, 9, None))
    assert out.frame.tolist() == list(range(2, 9)) and out.success.all()
    np.testing.assert_allclose(out.timestamp, np.arange(2, 9) / 25.0, atol=1e-9)


# --- every face -------------------------------------------------------------------------------------------------

def two_face_models(tmp_path: Path, second_score: float = 0.8) -> Path:
    det = tinymodels.detector([tinymodels.Face((0.05, 0.1, 0.45, 0.9), 0.95),
                               tinymodels.Face((0.55, 0.1, 0.95, 0.9), second_score)])
    return tinymodels.write_set(tmp_path / f"two-{second_score}", det=det)


def test_all_faces_gives_a_row_per_face_each_measured_on_its_own_box(tmp_path):
    from daemon.core.pipeline import FacesMode

    fr = frames(5)
    out = Pipeline(options(two_face_models(tmp_path), tmp_path, faces=FacesMode.ALL, batch_size=2)).run(fr)
    assert out.frame.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert out.detection.tolist() == [0, 1] * 5 and out.success.all()
    np.testing.assert_allclose(out.confidence, [0.95, 0.8] * 5, atol=1e-6)
    mtl = session(two_face_models(tmp_path) / "mtl.onnx")
    star = session(two_face_models(tmp_path) / "star.onnx")
    for row in range(len(out)):
        image = fr[out.frame[row]].image
        x = reference_mtl_input(image, out.box[row])[None]
        emotion, gaze, au = mtl.run(["emotion", "gaze", "au"], {"input": x})
        np.testing.assert_allclose(out.au[row], au[0], atol=1e-5)
        np.testing.assert_allclose(out.emotion[row], emotion[0], atol=1e-5)
        np.testing.assert_allclose(out.landmarks[row], reference_landmarks(image, out.box[row], star), atol=1e-3)
    assert out.box[0, 0] < out.box[1, 0]  # the two faces are the two boxes, best first


def test_all_faces_skips_detections_below_the_face_threshold(tmp_path):
    from daemon.core.pipeline import FacesMode

    out = Pipeline(options(two_face_models(tmp_path, 0.4), tmp_path, faces=FacesMode.ALL)).run(frames(3))
    assert out.frame.tolist() == [0, 1, 2] and out.detection.tolist() == [0, 0, 0]


def test_a_frame_without_faces_is_one_row_with_the_best_score(gated_models, tmp_path):
    from daemon.core.pipeline import FacesMode

    out = Pipeline(options(gated_models, tmp_path, faces=FacesMode.ALL)).run(frames(4, lambda i: i != 2))
    assert out.frame.tolist() == [0, 1, 2, 3]
    assert out.success.tolist() == [True, True, False, True]
    assert out.detection[2] == -1 and np.isnan(out.au[2]).all()
    assert out.confidence[2] == pytest.approx(0.1, abs=1e-6)  # the gated score: seen, below 0.5


def test_best_mode_equals_the_best_row_of_all_faces_and_primary_measures_them_all(tmp_path):
    """``best`` (a pipeline's default) measures the best detection only; ``primary`` measures every face, as
    ``all`` does (its person is chosen over the whole video by the output, ``tracking.follow_person``)."""
    from daemon.core.pipeline import FacesMode

    models = two_face_models(tmp_path)
    fr = frames(4)
    measured = Pipeline(options(models, tmp_path)).run(fr)
    every = Pipeline(options(models, tmp_path, faces=FacesMode.ALL)).run(fr)
    primary = Pipeline(options(models, tmp_path, faces=FacesMode.PRIMARY)).run(fr)
    best = every.take(every.detection == 0)
    assert len(every) > len(best)
    for name, arr in measured.items():
        np.testing.assert_array_equal(arr, best[name], err_msg=name)
        np.testing.assert_array_equal(primary[name], every[name], err_msg=name)


def test_warming_up_runs_the_detector_and_changes_no_result(tiny_models, tmp_path):
    """``warm_up`` (a worker's last step of preparing) runs the detector once on a blank 640x360 frame;
    the rows after it are the rows of a cold pipeline, bit for bit."""
    warm, cold = Pipeline(options(tiny_models, tmp_path)), Pipeline(options(tiny_models, tmp_path))
    shapes = []
    for role in ("detector", "multitask", "landmarks"):
        real = warm.sessions[role].run

        def spy(names, feed, real=real, role=role):
            shapes.append((role, next(iter(feed.values())).shape))
            return real(names, feed)

        warm.sessions[role] = type("Spy", (), {"run": staticmethod(spy)})()
    warm.warm_up()
    assert shapes == [("detector", (1, 3, 360, 640))]
    after, reference = warm.run(frames(6)), cold.run(frames(6))
    for name, arr in reference.items():
        np.testing.assert_array_equal(getattr(after, name), arr, err_msg=name)
