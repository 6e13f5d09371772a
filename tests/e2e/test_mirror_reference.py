"""The production mirror path (daemon.core.mirror + crops.mtl_input) against the independent reference
(tests/e2e/mirror_reference.py) on frames of the shared clip, with the pipeline's own landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.core import crops, mirror
from daemon.core.pipeline import Pipeline, PipelineOptions
from daemon.core.video import read_range
from tests.conftest import SHARED, require_shared
from tests.e2e.mirror_reference import (
    SIDES,
    MirrorReference,
    pillow_f_mode_is_antialiased,
)

pytestmark = pytest.mark.slow

CLIP = "media/hamilton_clip.mp4"
MODELS = "models/openface3"
FRAMES = (0, 20, 40, 60, 120, 200, 260)  # faces from 24 to 176 px wide, several people


def csv_row(results, i: int) -> dict[str, str]:
    """The identity-free part of the main CSV's row for result i, formatted as the CSV writes floats."""
    row = {}
    for k, name in enumerate(("face_x1", "face_y1", "face_x2", "face_y2")):
        row[name] = format(float(results.box[i, k]), ".9g")
    for p in range(98):
        row[f"x_{p}"] = format(float(results.landmarks[i, p, 0]), ".9g")
        row[f"y_{p}"] = format(float(results.landmarks[i, p, 1]), ".9g")
    return row


@pytest.fixture(scope="module")
def measured():
    require_shared(CLIP, f"{MODELS}/retinaface.onnx", f"{MODELS}/mtl.onnx", f"{MODELS}/star.onnx")
    pipeline = Pipeline(PipelineOptions(models_dir=SHARED / MODELS, provider="cpu", workers=1, batch_size=4,
                                        mirror=True))
    frames = [f for f in read_range(SHARED / CLIP, 0, max(FRAMES) + 1) if f.index in FRAMES]
    results = pipeline.run(frames)
    assert results.success.all(), "every chosen frame has a face"
    return pipeline, frames, results


def test_pillow_float_mode_bilinear_is_antialiased():
    assert pillow_f_mode_is_antialiased()


def test_reference_and_production_agree_within_1e_5(measured):
    """Per frame and side: same moved box, same mirrored frame, and AUs, emotion logits and gaze within
    1e-5. The two preprocessings differ only in float rounding (Pillow's float32 resize against the
    project's float64 one), which moves the shared MTL's outputs by about 1e-7 (../shared/README.md:
    4e-7 for input noise of 1e-6, on any CPU); a crop one pixel off would move them by 1e-4 or more.
    Measured on this machine: 1.6e-7 at most (``pytest -s`` prints it), with identical mirrored frames."""
    pipeline, frames, results = measured
    reference = MirrorReference(SHARED / MODELS / "mtl.onnx")
    worst, least_side_gap = 0.0, np.inf
    for i, frame in enumerate(frames):
        expected = reference.sides(frame.image, csv_row(results, i))
        line = mirror.midline(results.landmarks[i])
        box = mirror.mirrored_box(results.box[i], line)
        produced = dict(zip(SIDES, mirror.mirrored_frames(frame.image, line)))
        emotion, gaze, au = pipeline.multitask(np.stack([crops.mtl_input(produced[s], box) for s in SIDES]))
        for k, side in enumerate(SIDES):
            want = expected[side]
            np.testing.assert_allclose(box, want.box, rtol=0, atol=1e-9, err_msg=f"frame {frame.index} {side}")
            got = np.concatenate([au[k], emotion[k], gaze[k]])
            ref = np.concatenate([want.au, want.emotion, want.gaze])
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5, err_msg=f"frame {frame.index} {side}")
            worst = max(worst, float(np.abs(got - ref).max()))
        # the two sides differ by far more than the tolerance, so agreeing with the reference means
        # computing the right side (measured: 8.3e-4 on the closest frame)
        least_side_gap = min(least_side_gap, float(np.abs(au[0] - au[1]).max()))
        assert least_side_gap > 1e-4
    print(f"reference vs production, max |difference| over {len(frames)} frames x 2 sides: {worst:.3g}; "
          f"least largest AU gap between the sides: {least_side_gap:.3g}")


def test_mirrored_frames_match_the_reference_to_the_pixel(measured):
    """The warp and the seam, before any resize: identical frames (both call the same OpenCV warp with
    matrices computed independently; a one-ulp difference in the matrix could move a pixel by one grey
    level, so count such pixels rather than assume none)."""
    from tests.e2e.mirror_reference import midline_from_row, mirrored

    _, frames, results = measured
    differing = 0
    for i, frame in enumerate(frames):
        m, n = midline_from_row(csv_row(results, i))
        want = mirrored(frame.image, m, n)
        got = dict(zip(SIDES, mirror.mirrored_frames(frame.image, mirror.midline(results.landmarks[i]))))
        for side in SIDES:
            diff = np.abs(got[side].astype(int) - want[side].astype(int))
            assert diff.max() <= 1, f"frame {frame.index} {side}"
            differing += int((diff > 0).sum())
    print(f"pixels that differ between reference and production mirrored frames: {differing}")
    assert differing <= 10


def test_pipeline_mirror_rows_match_the_reference(measured):
    """The same check on what the worker pipeline stores for the side CSVs (``mirror = true``): moved
    boxes and each side's AUs, emotion logits and gaze within 1e-5 of the reference (the pipeline batches
    the mirrored crops of 4 frames; measured: 1.6e-7 at most). The stored boxes are float32, whose step
    is 3e-5 px at 500 px (measured difference 2.9e-5), hence 1e-4 for them."""
    _, frames, results = measured
    reference = MirrorReference(SHARED / MODELS / "mtl.onnx")
    for i, frame in enumerate(frames):
        expected = reference.sides(frame.image, csv_row(results, i))
        for k, side in enumerate(SIDES):
            want = expected[side]
            message = f"frame {frame.index} {side}"
            np.testing.assert_allclose(results.mirror_box[i, k], want.box, rtol=0, atol=1e-4, err_msg=message)
            np.testing.assert_allclose(results.mirror_au[i, k], want.au, rtol=0, atol=1e-5, err_msg=message)
            np.testing.assert_allclose(results.mirror_emotion[i, k], want.emotion, rtol=0, atol=1e-5,
                                       err_msg=message)
            np.testing.assert_allclose(results.mirror_gaze[i, k], want.gaze, rtol=0, atol=1e-5, err_msg=message)
