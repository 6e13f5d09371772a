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
    for name, arr in a.arrays().items():
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
    for name, arr in reference.arrays().items():
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
