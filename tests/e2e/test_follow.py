"""``detect_every`` on the shared clip: a followed run re-detects at every scene cut and never follows a face
out of the frame; ``--detect-every 1`` writes the default's CSV byte for byte.

The clip cuts between people. The cuts are found from the exact run's boxes (every face, ``faces = "all"``):
a frame none of whose boxes overlaps a box of the frame before by IoU ≥ 0.5 (between consecutive frames
of one shot the same face's boxes overlap by 0.62 or more, see ``follow.py``). Each segment below is one
``Pipeline.run`` (as a shard is) of 8 frames around one cut, the cut at the segment's 5th frame: not a
scheduled detection with ``detect_every = 5`` (those are the 1st and the 6th), so only the scene-change
rule can make it one. STAR, at 0.4-1 s a face on this machine, sets the cost: about 50 faces.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from daemon.core.follow import Bounds, left_frame
from daemon.core.pipeline import FacesMode, Pipeline, PipelineOptions
from daemon.core.tracking import iou
from daemon.core.video import read_range
from tests.conftest import SHARED, require_shared
from tests.media import cut_clip

pytestmark = pytest.mark.slow

CLIP = "media/hamilton_clip.mp4"
MODELS = "models/openface3"
SEGMENTS = ((16, 24), (78, 86), (207, 215))  # around the clip's cuts
WIDTH, HEIGHT = 640, 360


def pipeline(tmp_path, **kw) -> Pipeline:
    return Pipeline(PipelineOptions(models_dir=SHARED / MODELS, provider="cpu", workers=2, faces=FacesMode.ALL,
                                    cache_dir=tmp_path / "coreml", **kw))


def boxes_by_frame(rows) -> dict[int, np.ndarray]:
    return {int(f): rows.box[(rows.frame == f) & rows.success] for f in rows.frames()}


def cuts(boxes: dict[int, np.ndarray]) -> list[int]:
    """Frames where no face continues one of the frame before (IoU ≥ 0.5)."""
    found = []
    for f in sorted(boxes)[1:]:
        before, now = boxes[f - 1], boxes[f]
        if len(before) and len(now) and iou(before, now).max() < 0.5:
            found.append(f)
    return found


def test_a_followed_run_redetects_at_every_scene_cut_and_never_leaves_the_frame(tmp_path):
    require_shared(CLIP, f"{MODELS}/retinaface.onnx", f"{MODELS}/mtl.onnx", f"{MODELS}/star.onnx")
    video = SHARED / CLIP
    exact_boxes = pipeline(tmp_path, au45=False)  # boxes are the detector's with or without STAR
    followed = pipeline(tmp_path, detect_every=5)
    bounds = Bounds()
    overlaps = []
    for start, stop in SEGMENTS:
        exact = boxes_by_frame(exact_boxes.run(read_range(video, start, stop, None)))
        rows = followed.run(read_range(video, start, stop, None))
        found = cuts(exact)
        assert len(found) == 1 and found[0] == start + 4, (start, found)  # the clip's cut, by its boxes
        detected = {int(f) for f in rows.frame[rows.detected]}
        assert set(found) <= detected, f"a scene cut at frame {found} was followed, not detected"
        assert {start, start + 5} <= detected  # the run's first frame and every 5th after it
        assert len(detected) < stop - start  # and some frames were followed
        for row in np.flatnonzero(rows.success):
            f = int(rows.frame[row])
            assert not left_frame(rows.box[row], WIDTH, HEIGHT, bounds) or rows.detected[row], \
                f"frame {f}: a face followed out of the frame: {rows.box[row]}"
            if rows.detected[row]:  # a detected frame measures the detector's boxes, as the exact run
                assert any(np.array_equal(rows.box[row], b) for b in exact[f]), f
            else:
                overlaps.append(float(iou(rows.box[row][None], exact[f]).max()) if len(exact[f]) else 0.0)
        assert np.isfinite(rows.landmarks[rows.success]).all() and np.isfinite(rows.au[rows.success]).all()
    # drift of followed boxes against the exact run's nearest box: reported, only sanity asserted (the
    # shared STAR's landmarks follow the crop, not the face, so its followed boxes stand still)
    print(f"followed boxes: {len(overlaps)}, IoU with the exact run's nearest box: median "
          f"{np.median(overlaps):.3f}, min {min(overlaps):.3f}")
    assert np.median(overlaps) > 0.5


def test_detect_every_1_writes_the_defaults_csv(tmp_path):
    require_shared(CLIP, f"{MODELS}/retinaface.onnx", f"{MODELS}/mtl.onnx", f"{MODELS}/star.onnx")
    clip = cut_clip(SHARED / CLIP, tmp_path / "cut.mp4", 14, 12)  # across the cut at frame 20
    csvs = []
    for extra in ([], ["--detect-every", "1"]):
        out = tmp_path / f"out{len(csvs)}.csv"
        proc = subprocess.run(
            [sys.executable, "-m", "daemon", "extract", str(clip), "-o", str(out), "--models", str(SHARED / MODELS),
             "--workers", "2", "--provider", "cpu", "--no-plots", *extra],
            capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        csvs.append(out.read_bytes())
    assert csvs[0] == csvs[1]
