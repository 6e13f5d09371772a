"""Exported ONNX files compute what PyTorch computes from the same checkpoints, on real face crops; a failed
export leaves the previous model set in place.

Tolerances, measured on this machine (x86-64) with ``pytest -s`` on the random-weight checkpoints of these
tests and the three faces of ../shared/media/obama.jpg and two_people.jpg (the crops aud cuts):
- MTL: 5.6e-9 (emotion), 9.3e-10 (gaze), 2.1e-7 (au); bound 1e-5. Summation order only, so the bound
  holds on AVX2, AVX-512 and arm64 (their kernels differ in summation order, not in precision).
- RetinaFace, loc/conf/landms at 640x360 and 1280x720: 6.0e-8; bound 1e-3, as on real detector weights,
  where PyTorch and ONNX Runtime differ by about 1e-4 from summation order alone.
- STAR (last stack's landmarks, crop units): 1.1e-6 to 1.7e-6, while the exported graph's own output
  moves by 1.6e-6 to 2.5e-6 when Gaussian noise of 1e-6 is added to the crop: the difference is at the
  float noise floor of this network. Bound 1e-4, 60 times the measured difference, so it holds where
  another CPU's summation order doubles the noise; a wrong export (crop, colour or decoder slip) moves
  points by far more than that.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="the model tools need PyTorch (pip install -e '.[export]')")

from daemon.tools import export
from daemon.tools.checkpoints import Role, load_network
from tests import tinymodels
from tests.tools import faces


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def differences(model, sess, x: np.ndarray) -> list[float]:
    with torch.no_grad():
        ours = model(torch.from_numpy(x))
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = sess.run(None, {sess.get_inputs()[0].name: x})
    assert [tuple(o.shape) for o in ours] == [t.shape for t in theirs]
    return [float(np.abs(o.numpy() - t).max()) for o, t in zip(ours, theirs)]


@pytest.fixture(scope="module")
def crops():
    mtl, star, images = faces.real_crops()
    return mtl, star, images


def test_mtl_export_parity_on_real_face_crops(fetched, checkpoints, crops):
    assert fetched.result.returncode == 0, fetched.result.stderr
    model = load_network(Role.MULTITASK, checkpoints / "MTL_backbone.pth")
    diffs = differences(model, session(fetched.models / "mtl.onnx"), crops[0])
    print("mtl max |diff| emotion, gaze, au:", diffs)
    assert max(diffs) < 1e-5


def test_retinaface_export_parity_at_two_sizes(fetched, checkpoints, crops):
    assert fetched.result.returncode == 0, fetched.result.stderr
    model = load_network(Role.DETECTOR, checkpoints / "Alignment_RetinaFace.pth")
    sess = session(fetched.models / "retinaface.onnx")
    for image in crops[2]:
        for x in faces.detector_frames(image):  # 640x360 and 1280x720: H and W are dynamic
            diffs = differences(model, sess, x)
            print(f"retinaface {x.shape[2]}x{x.shape[3]} max |diff| loc, conf, landms:", diffs)
            assert max(diffs) < 1e-3


def test_star_export_parity_within_its_float_noise(fetched, checkpoints, crops):
    assert fetched.result.returncode == 0, fetched.result.stderr
    model = load_network(Role.LANDMARKS, checkpoints / "Landmark_98.pkl")
    sess = session(fetched.models / "star.onnx")
    rng = np.random.default_rng(0)
    for i in range(len(crops[1])):
        x = crops[1][i:i + 1]
        (diff,) = differences(model, sess, x)
        noisy = (x + rng.normal(0, 1e-6, x.shape)).astype(np.float32)
        floor = float(np.abs(sess.run(None, {"input": noisy})[0] - sess.run(None, {"input": x})[0]).max())
        print(f"star face {i}: max |diff| {diff:.3g}, output moved by {floor:.3g} for 1e-6 of input noise")
        assert diff < 1e-4


def test_a_failed_export_leaves_the_previous_set_in_place(checkpoints, tmp_path):
    models = tinymodels.write_set(tmp_path / "models")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in models.iterdir()}
    with pytest.raises(export.ExportError, match="retinaface.onnx: ONNX Runtime differs from PyTorch"):
        export.export_set(checkpoints, models, tolerance=-1.0, say=lambda s: None)  # any difference fails
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in models.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]  # the staging directory is gone


def test_export_refuses_to_replace_a_directory_with_other_files(checkpoints, tmp_path):
    target = tmp_path / "Documents"
    target.mkdir()
    (target / "thesis.docx").write_bytes(b"precious")
    with pytest.raises(export.ExportError, match="holds other files \\(thesis.docx\\)"):
        export.export_set(checkpoints, target, say=lambda s: None)
    assert (target / "thesis.docx").read_bytes() == b"precious"


def test_interrupted_swap_is_restored(tmp_path):
    target = tmp_path / "models"
    previous = tmp_path / ".models.previous"
    tinymodels.write_set(previous)  # as if the process died between the two renames
    export.restore_interrupted(target)
    assert (target / "star.onnx").is_file() and not previous.exists()
