"""Our architectures compute what the official OpenFace 3.0 classes compute.

``../shared/models/openface3/*.onnx`` were exported with ``torch.onnx.export`` from the official classes.
Their weights are rebuilt into a state dict for our modules (``onnx_weights``: by node name, with the
exporter's folded BatchNorms unfolded), loaded with strict key matching, and both are run on real face
crops. Every parameter of every module that runs must come from the file, and the outputs must agree.

Tolerances (measured on this machine, x86-64, on the three faces of ../shared/media/obama.jpg and
two_people.jpg, by the same computation as these tests):
- RetinaFace (trained weights) at 640x360 and 1280x720: max difference 4.5e-5 over loc/conf/landms; bound
  1e-3 (PyTorch and ONNX Runtime differ by about 1e-4 on real detector weights from summation order).
- MTL (random weights): 1.3e-6 (emotion), 6.6e-7 (gaze), 2.4e-7 (au); bound 1e-5. Layer by layer the
  relative difference starts at 4e-7 after the first block: folded vs unfolded BatchNorm rounding,
  amplified by depth; a wrong padding or activation moves outputs by 1e-2 or more.
- STAR (random weights, before the shared file's appended template ops): 1.5e-5 to 2.4e-5 in crop units.
  The official graph's own output moves by 4.5e-5 to 8.7e-5 when Gaussian noise of 1e-6 is added to the
  same crop (printed; up to 6.6e-4 over other noise draws): the float noise floor of this network.
  Bound 1e-3 (0.13 px in a 256-px crop).
The bounds come from float rounding, which depends on weights and inputs and not on the instruction set
beyond summation order, so they hold on AVX2, AVX-512 and arm64 alike.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="the export tests need PyTorch (pip install -e '.[export]')")

from daemon.tools.arch.mtl import MTL
from daemon.tools.arch.retinaface import RetinaFace
from daemon.tools.arch.star import StackedHourglass
from daemon.tools.checkpoints import load_strict
from tests.conftest import require_shared
from tests.tools import faces
from tests.tools.onnx_weights import (
    state_dict_from_onnx,
    unread_keys_of_running_modules,
)


def loaded(cls, name: str, example: np.ndarray, prefix: str = ""):
    path = require_shared(f"models/openface3/{name}") / f"models/openface3/{name}"
    model = cls().eval()
    x = torch.from_numpy(example)
    state, read = state_dict_from_onnx(path, model, x, prefix)
    load_strict(model, state, path)
    unread = unread_keys_of_running_modules(model, x, read)
    assert not unread, f"{name}: weights our forward pass uses but the official graph does not: {unread}"
    return model, path


def run_onnx(model_bytes_or_path, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
    session = ort.InferenceSession(model_bytes_or_path, providers=["CPUExecutionProvider"])
    return session.run(outputs, {session.get_inputs()[0].name: x})


def test_retinaface_matches_the_official_graph():
    images = faces.shared_images()
    frames = [f for image in images for f in faces.detector_frames(image)]
    model, path = loaded(RetinaFace, "retinaface.onnx", frames[0])
    worst = 0.0
    for x in frames:
        with torch.no_grad():
            ours = model(torch.from_numpy(x))
        for a, b in zip(ours, run_onnx(str(path), x)):
            assert a.shape == b.shape
            worst = max(worst, float(np.abs(a.numpy() - b).max()))
    print(f"retinaface: max |ours - official| {worst:.3g}")
    assert worst < 1e-3, worst


def test_mtl_matches_the_official_graph():
    mtl, _, _ = faces.real_crops()
    model, path = loaded(MTL, "mtl.onnx", mtl[:1])
    with torch.no_grad():
        ours = model(torch.from_numpy(mtl))
    theirs = run_onnx(str(path), mtl)
    for name, a, b in zip(("emotion", "gaze", "au"), ours, theirs):
        assert a.shape == b.shape
        print(f"mtl {name}: max |ours - official| {np.abs(a.numpy() - b).max():.3g}")
        assert np.abs(a.numpy() - b).max() < 1e-5, name


def test_star_matches_the_official_graph_before_its_appended_template():
    _, star, _ = faces.real_crops()
    model, path = loaded(StackedHourglass, "star.onnx", star[:1], prefix="n.")
    graph = onnx.load(str(path))
    tanh = next(n for n in graph.graph.node if n.op_type == "Tanh")  # template + 0.05·tanh(landmarks)
    graph.graph.output.append(onnx.helper.make_tensor_value_info(tanh.input[0], onnx.TensorProto.FLOAT, None))
    graph_bytes = graph.SerializeToString()
    rng = np.random.default_rng(0)
    for i in range(len(star)):
        x = star[i:i + 1]
        (raw,) = run_onnx(graph_bytes, x, [tanh.input[0]])
        with torch.no_grad():
            ours = model(torch.from_numpy(x)).numpy()
        assert ours.shape == raw.shape == (1, 98, 2)
        noisy = (x + rng.normal(0, 1e-6, x.shape)).astype(np.float32)
        floor = np.abs(run_onnx(graph_bytes, noisy, [tanh.input[0]])[0] - raw).max()
        print(f"star face {i}: max |ours - official| {np.abs(ours - raw).max():.3g}; the official graph "
              f"moves by {floor:.3g} for 1e-6 of input noise")
        assert np.abs(ours - raw).max() < 1e-3
