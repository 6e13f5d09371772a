"""aud's OpenFace 2.2 stages against an independent implementation: pyfaceau 1.4.1 with pyfhog, run in a venv of
its own by bench/openface2_reference.py on the same stand-in model files, landmarks and frames of the shared clip;
its outputs are committed (reference/pyfaceau.npz), so this test needs neither pyfaceau nor the official files.

Measured (6 frames, x86-64; the bounds leave 3-5x headroom and hold on any CPU: both sides are deterministic
numpy/OpenCV code, the differences come from precision, not from the machine's SIMD width):

- PDM fit: pyfaceau computes in float32, aud in float64: global parameters within 1.4e-4, local within 2.2e-4.
- Aligned face: 0-3 pixels of 12,544 differ, by 1 grey level (the warp matrix rounds differently at 1/32 pixel;
  aud's warp is OpenCV 4's fixed-point arithmetic, bit-identical to ``cv2.warpAffine`` of OpenCV 4.14, which
  pyfaceau uses, on 300 random warps).
- FHOG: identical where the faces are; at most 0.0017 where a pixel differs. Geometry: within 2.2e-4.
- SVR scores ``(x - means) . w + bias``: within 8.5e-5; on pyfaceau's own features, within 2e-15.

Where pyfaceau departs from OpenFace 2.2's C++ and aud follows the C++:

- ``CalcParams``: pyfaceau resets its no-improvement count after an improving step (``else: not_improved_in =
  0``); PDM.cpp ``PDM::CalcParams`` never resets it (``if(0.999 * currError < error) { not_improved_in++; if
  (not_improved_in == 3) break; }``, no else).
- Its pipeline takes the PDM parameters from its CLNF tracker; ``FaceAnalyser::AddNextFrame`` fits them to the
  landmarks (``pdm.CalcParams(params_global, params_local, detected_landmarks)``) — the reference here calls
  pyfaceau's ``CalcParams`` as the C++ does.
- It casts the FHOG and geometry to float32 before predicting (pipeline.py, "Ensure float32 for Cython"); the
  C++ keeps ``cv::Mat_<double>`` (``hog_desc_frame``, ``geom_descriptor_frame``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon.core.openface2au.analyser import Analyser
from tests.conftest import require_shared

from . import standins

REFERENCE = Path(__file__).parent / "reference" / "pyfaceau.npz"


@pytest.fixture(scope="module")
def ref():
    return np.load(REFERENCE)


@pytest.fixture(scope="module")
def analyser(tmp_path_factory, ref) -> Analyser:
    models = tmp_path_factory.mktemp("models")
    root = standins.make_model_set(models)
    for rel, digest in zip(ref["model_files"], ref["model_sha256"]):
        assert hashlib.sha256((root / str(rel)).read_bytes()).hexdigest() == str(digest), (
            f"the stand-in {rel} is not the one the reference was made from: regenerate the reference "
            "(bench/openface2_reference.py)")
    return Analyser.load(models)


def frames(ref) -> list[np.ndarray]:
    shared = require_shared("media/hamilton_clip.mp4")
    capture = cv2.VideoCapture(str(shared / "media" / "hamilton_clip.mp4"))
    out = []
    for index, digest in zip(ref["frames"].tolist(), ref["frame_sha256"]):
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        assert ok and hashlib.sha256(frame.tobytes()).hexdigest() == str(digest), (
            f"frame {index} decodes to other pixels here than where the reference was made")
        out.append(frame)
    return out


def test_stages_agree_with_pyfaceau(analyser, ref):
    for k, frame in enumerate(frames(ref)):
        feats = analyser.features(frame, ref["landmarks"][k])
        assert np.abs(feats.params_global - ref["params_global"][k]).max() < 1e-3
        assert np.abs(feats.params_local - ref["params_local"][k]).max() < 1e-3
        differ = np.abs(feats.aligned.astype(int) - ref["aligned"][k])
        assert differ.max() <= 1 and (differ > 0).any(axis=2).sum() <= 10
        assert np.abs(feats.hog - ref["hog"][k]).max() < 0.01
        assert np.abs(feats.geom - ref["geom"][k]).max() < 1e-3
        reg, _ = analyser.project(feats)
        assert np.abs(reg + analyser.predictors.reg.offset - ref["svr"][k]).max() < 5e-4


def test_scores_on_the_same_features_are_the_same_arithmetic(analyser, ref):
    """No shared-clip frames needed: pyfaceau's features through aud's stacked models."""
    assert [str(n) for n in ref["svr_names"]] == [f"{au}_r" for au in ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07",
                                                                       "AU09", "AU10", "AU12", "AU14", "AU15", "AU17",
                                                                       "AU20", "AU23", "AU25", "AU26", "AU45")]
    x = np.concatenate([ref["hog"], ref["geom"]], axis=1)
    scores = x @ analyser.predictors.reg.weights + analyser.predictors.reg.offset
    np.testing.assert_allclose(scores, ref["svr"], rtol=0, atol=1e-12)


def test_warp_is_opencv4s_fixed_point_warp(ref):
    """OpenCV 4's own ``cv2.warpAffine`` (recorded by the reference venv) and aud's numpy version agree to the
    bit, whichever OpenCV this venv has (OpenCV 5 samples differently: up to 7 grey levels off, measured)."""
    from bench.openface2_reference import warp_cases
    from daemon.core.openface2au.align import warp_affine_cv4

    image, matrices = warp_cases()
    np.testing.assert_array_equal(matrices, ref["warp_matrices"])
    for m, expected in zip(matrices, ref["warps"]):
        np.testing.assert_array_equal(warp_affine_cv4(image, m, 48), expected)
