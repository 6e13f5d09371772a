"""INT8 quantisation of the STAR landmark model with ``onnxruntime.quantization`` (opt-in speed switch).

Two methods:

- ``static`` (the recommended one): QDQ format, uint8 activations and per-channel int8 weights in 7 bits
  (``reduce_range``, so x86-64 CPUs without VNNI do not saturate: see ``quantization_choice``), scales
  calibrated (min/max) on real STAR face crops cut from a few videos or images. Only convolutions (and
  MatMul/Gemm, which STAR does not have) are quantised; the first convolution (the raw image) and the
  last one (the heatmaps the landmarks are read from) stay float, as do the residual additions, the
  upsampling and the soft-argmax head. Its speed-up and drift per CPU: docs/benchmark.md.
- ``dynamic``: int8 weights, activations quantised at run time; needs no calibration data, but convs
  become ``ConvInteger``, which ONNX Runtime's CPU provider runs only a little faster than float.

Both keep the model's signature (input and output names, shapes), so the result drops into a model set
through ``manifest.toml``: ``[models] landmarks = "star.int8.onnx"``. ``quantize_model_set`` records how
each file was made in the manifest beside it, ``[quantization."star.int8.onnx"]`` (source and its sha256,
method, reduce_range, per_channel, the CPU flags it was made on, the ONNX Runtime version). Needs the
``onnx`` package.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from ..core import crops, detection
from ..core.atomic import atomic_write_bytes, atomic_write_text
from ..core.models import MANIFEST, ModelError, load_model_set, manifest_data, read_signature, sha256_of
from .cpu import CpuFeatures, read_cpu

METHODS = ("static", "dynamic")
DEFAULT_OUTPUT = "star.int8.onnx"
QUANTISED_OPS = ("Conv", "MatMul", "Gemm")
QUANTISED_MARKERS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
                     "MatMulInteger", "QLinearConv", "QLinearMatMul"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class QuantizeError(ValueError):
    """Quantisation cannot run (missing package, no calibration faces, a bad result); plain words."""


@dataclass(frozen=True)
class QuantizationChoice:
    """How the weights are quantised, and why (written into the manifest beside the model)."""

    reduce_range: bool  # weights in 7 bits: no int16 saturation in x86 U8S8 kernels without VNNI
    per_channel: bool  # one scale per output channel of each weight
    reason: str


@dataclass(frozen=True)
class QuantizeResult:
    source: Path
    output: Path
    method: str
    source_bytes: int
    output_bytes: int
    calibration_samples: int
    seconds: float
    choice: QuantizationChoice


def quantization_choice(cpu: CpuFeatures, method: str = "static") -> QuantizationChoice:
    """Static INT8 gets 7-bit per-channel weights on every CPU; the reason says whether this one needs it.

    Static INT8 here is U8S8 (uint8 activations, int8 weights). On x86-64 without VNNI, ONNX Runtime's
    U8S8 kernels multiply with VPMADDUBSW, whose int16 pair sums saturate (2 x 255 x 127 > 32767);
    7-bit weights (``reduce_range``) keep every sum in range (2 x 255 x 64 = 32640). VNNI and arm64
    accumulate in 32 bits and would not need it (ONNX Runtime's quantisation guide, "When to use
    reduce-range and per-channel quantization?"). It is chosen everywhere all the same: the model file is
    copied with its model set to other machines (a VNNI workstation's model on an Intel Mac without VNNI
    would saturate), and on a VNNI CPU it costs no speed and little drift (docs/benchmark.md, "INT8 STAR
    per CPU flag set"). Dynamic INT8 here has uint8 weights (U8U8), which do not saturate anywhere."""
    if method == "dynamic":
        return QuantizationChoice(False, False, "dynamic INT8: uint8 weights (U8U8) do not saturate on any CPU")
    if cpu.is_x86 and not cpu.has_vnni:
        why = "needed here: x86-64 without VNNI saturates 8-bit U8S8 products"
    elif cpu.is_x86 or cpu.is_arm:
        why = ("not needed on this CPU (32-bit accumulation), kept so the file runs right on x86-64 "
               "CPUs without VNNI")
    else:
        why = f"unknown CPU {cpu.machine!r}: kept so the file runs right on x86-64 CPUs without VNNI"
    return QuantizationChoice(True, True, f"7-bit weights (reduce_range), {why}")


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
    assert models.outputs.detector is not None
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
    from ..core.video import VideoError, open_capture

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
                  calibration: np.ndarray | None = None,
                  choice: QuantizationChoice | None = None) -> QuantizeResult:
    """Quantise the STAR model ``source`` to ``output`` (written atomically); check the result loads in
    ONNX Runtime with the same signature. ``calibration``: STAR inputs [K,3,256,256] (static only).
    ``choice``: reduce_range and per-channel; by default ``quantization_choice`` for this machine's CPU."""
    if method not in METHODS:
        raise QuantizeError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    choice = choice or quantization_choice(read_cpu(), method)
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
                assert calibration is not None  # static needs calibration data (checked above)
                samples = [{input_name: np.ascontiguousarray(x[np.newaxis], np.float32)} for x in calibration]

                class Reader(q.CalibrationDataReader):  # type: ignore[name-defined]
                    def __init__(self) -> None:
                        self._it = iter(samples)

                    def get_next(self):
                        return next(self._it, None)

                q.quantize_static(str(prepared), str(quantised), Reader(), quant_format=q.QuantFormat.QDQ,
                                  activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                                  per_channel=choice.per_channel, reduce_range=choice.reduce_range,
                                  op_types_to_quantize=list(QUANTISED_OPS),
                                  nodes_to_exclude=_float_ends(prepared),
                                  calibrate_method=q.CalibrationMethod.MinMax)
            else:
                q.quantize_dynamic(str(prepared), str(quantised), weight_type=q.QuantType.QUInt8,
                                   per_channel=choice.per_channel, reduce_range=choice.reduce_range,
                                   op_types_to_quantize=list(QUANTISED_OPS))
        try:
            got = read_signature(quantised)
        except ModelError as exc:
            raise QuantizeError(f"the quantised model does not load: {exc}") from exc
        if got != signature:
            raise QuantizeError(f"the quantised model's signature {got} differs from {signature}")
        atomic_write_bytes(output, quantised.read_bytes())  # exclusive temp file, renamed in
    return QuantizeResult(source, output, method, source.stat().st_size, output.stat().st_size,
                          0 if calibration is None or method != "static" else len(calibration),
                          time.perf_counter() - began, choice)


def quantize_model_set(models_dir: Path, output: Path | None = None, *, method: str | None = None,
                       calibration_sources: Sequence[Path] = (), samples: int = 32,
                       cpu: CpuFeatures | None = None) -> QuantizeResult:
    """The model set's STAR to INT8: static when calibration sources are given (or asked for), else dynamic.
    How it was made is recorded in the manifest of the output's directory (``record_in_manifest``)."""
    models_dir = Path(models_dir).expanduser()
    method = method or ("static" if calibration_sources else "dynamic")
    cpu = cpu or read_cpu()
    source = star_path(models_dir)
    check_float(source)
    calibration = (calibration_inputs(models_dir, calibration_sources, samples)
                   if method == "static" else None)
    result = quantize_star(source, output or default_output(models_dir), method=method, calibration=calibration,
                           choice=quantization_choice(cpu, method))
    record_in_manifest(result, cpu)
    return result


# --- the record in manifest.toml ------------------------------------------------------------------

def manifest_record(result: QuantizeResult, cpu: CpuFeatures) -> dict[str, object]:
    """What ``[quantization."<file>"]`` says about a quantised file: its source, method, weight choice,
    the CPU it was made on and the ONNX Runtime that made it."""
    same_dir = result.source.resolve().parent == result.output.resolve().parent
    return {
        "source": result.source.name if same_dir else str(result.source.resolve()),
        "source_sha256": sha256_of(result.source),
        "method": result.method,
        "reduce_range": result.choice.reduce_range,
        "per_channel": result.choice.per_channel,
        "calibration_samples": result.calibration_samples,
        "reason": result.choice.reason,
        "made_on": cpu.summary(),
        "onnxruntime": ort.__version__,
    }


def record_in_manifest(result: QuantizeResult, cpu: CpuFeatures) -> Path:
    """Write ``manifest_record`` to ``manifest.toml`` beside the output, under ``[quantization."<name>"]``
    (replacing an earlier record of the same file; other tables and comments are kept). Atomic."""
    import tomlkit

    path = result.output.resolve().parent / MANIFEST
    try:
        document = tomlkit.parse(path.read_text()) if path.is_file() else tomlkit.document()
    except (OSError, tomlkit.exceptions.ParseError) as exc:
        raise QuantizeError(f"{path}: cannot read the manifest to record how {result.output.name} was "
                            f"made: {exc}") from exc
    if not isinstance(document.get("quantization", {}), dict):
        raise QuantizeError(f"{path}: 'quantization' must be a table of quantised files")
    table = document.setdefault("quantization", tomlkit.table(is_super_table=True))
    entry = tomlkit.table()
    entry.update(manifest_record(result, cpu))
    table[result.output.name] = entry
    atomic_write_text(path, tomlkit.dumps(document))
    return path


def read_quantization_record(models_dir: Path, name: str) -> dict[str, object] | None:
    """The manifest's record of a quantised file, or None."""
    data = manifest_data(models_dir, QuantizeError)
    if data is None:
        return None
    record = data.get("quantization", {}).get(name)
    return record if isinstance(record, dict) else None


def usage_hint(models_dir: Path, output: Path) -> str:
    """How the file was made (from its manifest record) and how to use it: a manifest entry."""
    models_dir, output = Path(models_dir).expanduser().resolve(), Path(output).resolve()
    name = output.name if output.parent == models_dir else str(output)
    record = read_quantization_record(output.parent, output.name)
    made = ""
    if record:
        made = (f"recorded in {output.parent / MANIFEST} [quantization.\"{output.name}\"]: "
                f"reduce_range = {str(record.get('reduce_range')).lower()}, "
                f"per_channel = {str(record.get('per_channel')).lower()} ({record.get('reason')}); "
                f"made on {record.get('made_on')}\n")
    return (f"{made}to use it, add to {models_dir / MANIFEST} (or to the manifest of a model directory holding "
            f"the other two models):\n\n[models]\nlandmarks = \"{name}\"\n\n"
            f"(if the manifest pins [sha256] landmarks, update or remove that pin)")
