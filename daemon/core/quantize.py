"""INT8 quantisation of the STAR landmark model with ``onnxruntime.quantization`` (opt-in speed switch).

Two methods:

- ``static`` (the recommended one): QDQ format, uint8 activations and per-channel int8 weights, scales
  calibrated (min/max) on real STAR face crops cut from a few videos or images. Only convolutions (and
  MatMul/Gemm, which STAR does not have) are quantised; the first convolution (the raw image) and the
  last one (the heatmaps the landmarks are read from) stay float, as do the residual additions, the
  upsampling and the soft-argmax head. On an x86 CPU with VNNI this runs STAR about 2.5x faster.
- ``dynamic``: int8 weights, activations quantised at run time; needs no calibration data, but convs
  become ``ConvInteger``, which ONNX Runtime's CPU provider runs only a little faster than float.

Both keep the model's signature (input and output names, shapes), so the result drops into a model set
through ``manifest.toml``: ``[models] landmarks = "star.int8.onnx"``. Needs the ``onnx`` package.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from . import crops, detection
from .models import MANIFEST, ModelError, load_model_set, read_signature

METHODS = ("static", "dynamic")
DEFAULT_OUTPUT = "star.int8.onnx"
QUANTISED_OPS = ("Conv", "MatMul", "Gemm")
QUANTISED_MARKERS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
                     "MatMulInteger", "QLinearConv", "QLinearMatMul"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class QuantizeError(ValueError):
    """Quantisation cannot run (missing package, no calibration faces, a bad result); plain words."""


@dataclass(frozen=True)
class QuantizeResult:
    source: Path
    output: Path
    method: str
    source_bytes: int
    output_bytes: int
    calibration_samples: int
    seconds: float


def default_output(models_dir: Path) -> Path:
    return Path(models_dir) / DEFAULT_OUTPUT


def star_path(models_dir: Path) -> Path:
    """The landmark model of a model set (as its manifest names it)."""
    return load_model_set(Path(models_dir), ("landmarks",)).path("landmarks")


# --- calibration data -----------------------------------------------------------------------------

def _detector(models_dir: Path) -> tuple[ort.InferenceSession, str, tuple[str, str]]:
    models = load_model_set(Path(models_dir), ("detector",))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(models.path("detector")), opts, providers=["CPUExecutionProvider"])
    boxes, scores, _ = models.outputs.detector
    return session, models.input_name("detector"), (boxes, scores)


def _frames(source: Path, count: int) -> Iterator[np.ndarray]:
    """``count`` frames spread evenly over a video (seeking; exactness does not matter here), or the
    image itself."""
    if source.suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if image is None:
            raise QuantizeError(f"{source}: not an image OpenCV can read")
        yield image
        return
    from .video import VideoError, open_capture

    try:
        cap = open_capture(source)
    except VideoError as exc:
        raise QuantizeError(str(exc)) from exc
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or count
        for k in range(count):
            index = (2 * k + 1) * total // (2 * count)
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, image = cap.read()
            if ok:
                yield image
    finally:
        cap.release()


def calibration_inputs(models_dir: Path, sources: Sequence[Path], samples: int = 32) -> np.ndarray:
    """STAR inputs [K, 3, 256, 256] cut the way the pipeline cuts them, around the faces the model set's
    detector finds: the primary face of ``samples`` frames spread over the videos; every face in an image."""
    if not sources:
        raise QuantizeError("static quantisation needs calibration videos or images with faces")
    if samples < 1:
        raise QuantizeError(f"calibration samples must be at least 1, not {samples}")
    session, input_name, outputs = _detector(models_dir)
    per_source = max(1, math.ceil(samples / len(sources)))
    out: list[np.ndarray] = []
    for source in map(Path, sources):
        is_image = source.suffix.lower() in IMAGE_SUFFIXES
        for image in _frames(source, per_source):
            tensor, scale = detection.detector_input(image)
            loc, conf = session.run(list(outputs), {input_name: tensor})
            found = detection.detections(loc[0], conf[0], tensor.shape[2:], scale)
            faces = [f for f in found if f.score >= detection.FACE_THRESHOLD]
            for face in faces if is_image else faces[:1]:
                out.append(crops.star_input(image, crops.star_matrix(face.box)))
    if not out:
        names = ", ".join(str(s) for s in sources)
        raise QuantizeError(f"no face found for calibration in {names}")
    if len(out) > samples:  # rounding up per source: keep an even spread over all of them
        out = [out[i] for i in np.linspace(0, len(out) - 1, samples).round().astype(int)]
    return np.stack(out)


# --- quantisation ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime.quantization warns on the root logger for every per-channel tensor it skips."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _quantization():
    try:
        from onnxruntime import quantization
    except ImportError as exc:  # onnxruntime.quantization imports onnx
        raise QuantizeError(f"quantisation needs the onnx package ({exc}); "
                            f"install it with: pip install onnx") from exc
    return quantization


def _quantised_ops(model_path: Path) -> set[str]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return {n.op_type for n in model.graph.node} & QUANTISED_MARKERS


def check_float(model_path: Path) -> None:
    """QuantizeError when the model is already quantised (quantising twice only loses accuracy)."""
    _quantization()
    if found := _quantised_ops(model_path):
        raise QuantizeError(f"{model_path} is already quantised ({', '.join(sorted(found))}): "
                            f"quantise the float model")


def _float_ends(model_path: Path) -> list[str]:
    """Names of the first and the last Conv (graph order is topological): kept in float."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name]
    return sorted({convs[0], convs[-1]}) if convs else []


def quantize_star(source: Path, output: Path, *, method: str = "static",
                  calibration: np.ndarray | None = None) -> QuantizeResult:
    """Quantise the STAR model ``source`` to ``output`` (written atomically); check the result loads in
    ONNX Runtime with the same signature. ``calibration``: STAR inputs [K,3,256,256] (static only)."""
    if method not in METHODS:
        raise QuantizeError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    source, output = Path(source), Path(output)
    if output.resolve() == source.resolve():
        raise QuantizeError(f"{output}: the output would overwrite the model it is made from")
    if method == "static" and (calibration is None or len(calibration) == 0):
        raise QuantizeError("static quantisation needs calibration inputs (face crops)")
    q = _quantization()
    signature = read_signature(source)
    check_float(source)
    input_name = signature.inputs[0].name
    began = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aud-quantize-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantised = Path(tmp) / "quantised.onnx"
        with _quiet_quantizer():
            # constant folding and shape inference, as onnxruntime recommends before quantising
            # (the symbolic shape pass needs sympy and adds nothing for STAR's static shapes)
            q.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            if method == "static":
                samples = [{input_name: np.ascontiguousarray(x[np.newaxis], np.float32)} for x in calibration]

                class Reader(q.CalibrationDataReader):
                    def __init__(self) -> None:
                        self._it = iter(samples)

                    def get_next(self):
                        return next(self._it, None)

                q.quantize_static(str(prepared), str(quantised), Reader(), quant_format=q.QuantFormat.QDQ,
                                  activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                                  per_channel=True, op_types_to_quantize=list(QUANTISED_OPS),
                                  nodes_to_exclude=_float_ends(prepared),
                                  calibrate_method=q.CalibrationMethod.MinMax)
            else:
                q.quantize_dynamic(str(prepared), str(quantised), weight_type=q.QuantType.QUInt8,
                                   op_types_to_quantize=list(QUANTISED_OPS))
        try:
            got = read_signature(quantised)
        except ModelError as exc:
            raise QuantizeError(f"the quantised model does not load: {exc}") from exc
        if got != signature:
            raise QuantizeError(f"the quantised model's signature {got} differs from {signature}")
        partial = output.with_name(f".{output.name}.tmp")
        try:
            partial.write_bytes(quantised.read_bytes())
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
    return QuantizeResult(source, output, method, source.stat().st_size, output.stat().st_size,
                          0 if calibration is None or method != "static" else len(calibration),
                          time.perf_counter() - began)


def quantize_model_set(models_dir: Path, output: Path | None = None, *, method: str | None = None,
                       calibration_sources: Sequence[Path] = (), samples: int = 32) -> QuantizeResult:
    """The model set's STAR to INT8: static when calibration sources are given (or asked for), else dynamic."""
    models_dir = Path(models_dir).expanduser()
    method = method or ("static" if calibration_sources else "dynamic")
    source = star_path(models_dir)
    check_float(source)
    calibration = (calibration_inputs(models_dir, calibration_sources, samples)
                   if method == "static" else None)
    return quantize_star(source, output or default_output(models_dir), method=method, calibration=calibration)


def usage_hint(models_dir: Path, output: Path) -> str:
    """How to use the quantised model: a manifest entry in a model directory."""
    models_dir, output = Path(models_dir).expanduser().resolve(), Path(output).resolve()
    name = output.name if output.parent == models_dir else str(output)
    return (f"to use it, add to {models_dir / MANIFEST} (or to the manifest of a model directory holding "
            f"the other two models):\n\n[models]\nlandmarks = \"{name}\"\n\n"
            f"(if the manifest pins [sha256] landmarks, update or remove that pin)")
