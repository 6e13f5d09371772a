"""INT8 quantisation of the STAR model (``daemon.core.quantize``, ``aud models quantize``) on tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from daemon import cli
from daemon.core import quantize
from daemon.core.models import load_model_set, read_signature
from daemon.core.quantize import QuantizeError
from tests import tinymodels


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No AUD_* variables and no user config file leak into the runs."""
    for key in [k for k in os.environ if k.startswith("AUD_")]:
        monkeypatch.delenv(key)
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "xdg" / var.lower()))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def conv_star(seed: int = 3, size: int = 256) -> onnx.ModelProto:
    """A small convolutional STAR stand-in: three 3x3 convs (stride 4, 2, 2) with ReLU, global average
    pool, MatMul to 196 values, Reshape [N,98,2], Tanh. The middle conv is the one static INT8 quantises
    (the first and last stay float)."""
    rng = np.random.default_rng(seed)

    def init(name, shape, scale):
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    inits = [init("w1", (8, 3, 3, 3), 0.3), init("b1", (8,), 0.1), init("w2", (16, 8, 3, 3), 0.15),
             init("b2", (16,), 0.1), init("w3", (8, 16, 3, 3), 0.1), init("b3", (8,), 0.1),
             init("wf", (8, 196), 0.4), init("bf", (196,), 0.3),
             numpy_helper.from_array(np.array([-1, 98, 2], np.int64), "shape")]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[4, 4]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["c3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["feat"], name="flatten", axis=1),
        helper.make_node("MatMul", ["feat", "wf"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "bf"], ["flat"], name="fc_bias"),
        helper.make_node("Reshape", ["flat", "shape"], ["pts"], name="reshape"),
        helper.make_node("Tanh", ["pts"], ["landmarks"], name="tanh"),
    ]
    graph = helper.make_graph(
        nodes, "conv_star",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["N", 98, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", tinymodels.OPSET)])
    model.ir_version = tinymodels.IR_VERSION
    onnx.checker.check_model(model)
    return model


def face_like_inputs(n: int, seed: int = 0) -> np.ndarray:
    """STAR-range inputs ([-1, 1]) with some structure: smooth blobs plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img = np.stack([blob * rng.uniform(0.5, 1.5) for _ in range(3)]) * 2 - 1
        out.append(np.clip(img + rng.normal(0, 0.05, img.shape), -1, 1))
    return np.asarray(out, np.float32)


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def op_types(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def int8_weights(path: Path) -> list[str]:
    model = onnx.load(str(path))
    return [t.name for t in model.graph.initializer if t.data_type in (TensorProto.INT8, TensorProto.UINT8)]


@pytest.fixture
def star_file(tmp_path) -> Path:
    path = tmp_path / "conv_star.onnx"
    onnx.save(conv_star(), str(path))
    return path


# --- quantize_star ----------------------------------------------------------------------------------------

def test_static_keeps_the_signature_and_stays_close(star_file, tmp_path):
    out = tmp_path / "star.int8.onnx"
    result = quantize.quantize_star(star_file, out, method="static", calibration=face_like_inputs(12, seed=1))
    assert result.output == out and out.is_file()
    assert result.method == "static" and result.calibration_samples == 12
    assert result.output_bytes == out.stat().st_size and result.source_bytes == star_file.stat().st_size
    assert read_signature(out) == read_signature(star_file)
    # QDQ: quantise/dequantise pairs and int8 weights (the middle conv and the MatMul)
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(out)
    assert int8_weights(out)
    x = face_like_inputs(6, seed=2)  # not the calibration inputs
    ref, got = run(star_file, x), run(out, x)
    assert got.shape == ref.shape == (6, 98, 2) and got.dtype == np.float32
    assert np.abs(got - ref).max() < 0.05  # landmarks live in (-1, 1): 0.05 is ~6 px of a 256 crop
    assert not np.array_equal(got, ref)  # it did quantise something


def test_static_keeps_the_first_and_last_conv_float(star_file, tmp_path):
    out = tmp_path / "q.onnx"
    quantize.quantize_star(star_file, out, calibration=face_like_inputs(4))
    model = onnx.load(str(out))
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def weight_is_int8(conv_name: str) -> bool:
        conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.name == conv_name)
        w = conv.input[1]
        if w in inits:
            return inits[w].data_type == TensorProto.INT8
        return producers[w].op_type == "DequantizeLinear"

    assert not weight_is_int8("conv1")
    assert weight_is_int8("conv2")
    assert not weight_is_int8("conv3")


def test_dynamic_needs_no_calibration(star_file, tmp_path):
    out = tmp_path / "dyn.onnx"
    result = quantize.quantize_star(star_file, out, method="dynamic")
    assert result.method == "dynamic" and result.calibration_samples == 0
    assert read_signature(out) == read_signature(star_file)
    assert int8_weights(out)
    assert out.stat().st_size < star_file.stat().st_size
    x = face_like_inputs(3, seed=5)
    assert np.abs(run(out, x) - run(star_file, x)).max() < 0.05


def test_the_tiny_star_of_the_test_suite_quantises_too(tmp_path):
    src = tmp_path / "tiny.onnx"
    onnx.save(tinymodels.landmarks(), str(src))
    out = tmp_path / "tiny.int8.onnx"
    quantize.quantize_star(src, out, calibration=face_like_inputs(4))
    assert read_signature(out) == read_signature(src)
    x = face_like_inputs(2, seed=9)
    assert np.abs(run(out, x) - run(src, x)).max() < 0.05


def test_static_without_calibration_is_an_error(star_file, tmp_path):
    with pytest.raises(QuantizeError, match="calibration"):
        quantize.quantize_star(star_file, tmp_path / "q.onnx", method="static")
    with pytest.raises(QuantizeError, match="calibration"):
        quantize.quantize_star(star_file, tmp_path / "q.onnx", calibration=np.zeros((0, 3, 256, 256), np.float32))
    assert not (tmp_path / "q.onnx").exists()


def test_refuses_to_overwrite_its_source_and_unknown_methods(star_file):
    before = star_file.read_bytes()
    with pytest.raises(QuantizeError, match="overwrite"):
        quantize.quantize_star(star_file, star_file, method="dynamic")
    with pytest.raises(QuantizeError, match="unknown method"):
        quantize.quantize_star(star_file, star_file.with_name("x.onnx"), method="fp16")
    assert star_file.read_bytes() == before


# --- calibration data and the model set -------------------------------------------------------------------

def test_calibration_crops_come_from_the_detected_faces(tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=20, width=96, height=80)
    x = quantize.calibration_inputs(tiny_models, [video], samples=5)
    assert x.shape == (5, 3, 256, 256) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.full((80, 96, 3), 128, np.uint8))
    both = quantize.calibration_inputs(tiny_models, [video, image], samples=4)
    assert 1 <= len(both) <= 4


def test_calibration_without_faces_is_an_error(tmp_path, synthetic_video):
    models = tinymodels.write_set(tmp_path / "noface", det=tinymodels.detector(faces=()))
    video = synthetic_video(frames=6)
    with pytest.raises(QuantizeError, match="no face"):
        quantize.calibration_inputs(models, [video], samples=3)
    with pytest.raises(QuantizeError, match="calibration"):
        quantize.calibration_inputs(models, [], samples=3)


def test_model_set_default_output_and_manifest_use(tmp_path, synthetic_video):
    models = tinymodels.write_set(tmp_path / "models", star=conv_star())
    result = quantize.quantize_model_set(models, calibration_sources=[synthetic_video(frames=8)], samples=4)
    assert result.output == models / "star.int8.onnx" and result.method == "static"
    assert result.source == models / "star.onnx"
    hint = quantize.usage_hint(models, result.output)
    assert 'landmarks = "star.int8.onnx"' in hint
    (models / "manifest.toml").write_text('[models]\nlandmarks = "star.int8.onnx"\n')
    assert load_model_set(models).path("landmarks") == models / "star.int8.onnx"
    # the manifest now names the int8 file: quantising it again is refused
    with pytest.raises(QuantizeError, match="already quantised"):
        quantize.quantize_model_set(models, tmp_path / "twice.onnx", method="dynamic")
    assert not (tmp_path / "twice.onnx").exists()
    # without calibration sources: dynamic
    (models / "manifest.toml").unlink()
    again = quantize.quantize_model_set(models, tmp_path / "elsewhere" / "dyn.onnx")
    assert again.method == "dynamic" and again.output.is_file() and again.source == models / "star.onnx"


# --- aud models quantize ----------------------------------------------------------------------------------

def test_cli_quantize(tmp_path, synthetic_video, capsys):
    models = tinymodels.write_set(tmp_path / "models", star=conv_star())
    video = synthetic_video(frames=8)
    code = cli.main(["models", "quantize", "--models", str(models), "--calibration", str(video),
                     "--samples", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (models / "star.int8.onnx").is_file()
    text = " ".join(captured.out.split())
    assert "static INT8" in text and "calibrated on 3 face crops" in text
    assert '[models] landmarks = "star.int8.onnx"' in text


def test_cli_quantize_errors(tmp_path, capsys):
    models = tinymodels.write_set(tmp_path / "models", star=conv_star())
    code = cli.main(["models", "quantize", "--models", str(models), "--method", "static"])
    assert code == 2
    assert "calibration" in capsys.readouterr().err
    code = cli.main(["models", "quantize", "--models", str(tmp_path / "missing")])
    assert code == 2
    assert "model directory not found" in " ".join(capsys.readouterr().err.split())
    assert not (models / "star.int8.onnx").exists()
