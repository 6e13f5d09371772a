"""The picture of every result, end to end: ``aud plot`` on the shared clip's CSV, and the daemon's outbox holding
CSV, sidecar and PNG for each video, a video without faces included (its plot is a short notice saying so).

"Not blank" uses tests/output/test_plot.py's measured bounds: a blank white figure of this size is under 10 kB with
pixel standard deviation 0; plots of curves measure 80-900 kB with a standard deviation of 40-70 grey levels.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.output import read_csv
from tests.conftest import SHARED, frame_pattern, require_shared
from tests.media import cut_clip, drop, write_video

pytestmark = pytest.mark.slow
CLIP = SHARED / "media" / "hamilton_clip.mp4"


def grey_pixels(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)


def assert_a_plot(png: bytes) -> np.ndarray:
    pixels = grey_pixels(png)
    assert len(png) > 20 * 1024 and pixels.std() > 20, (len(png), pixels.std())
    return pixels


def test_aud_plot_on_the_shared_clip_csv(full_clip_extract, tmp_path):
    out = tmp_path / "hamilton.png"
    proc = subprocess.run([sys.executable, "-m", "daemon", "plot", str(full_clip_extract), "-o", str(out)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    pixels = assert_a_plot(out.read_bytes())
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 800, pixels.shape  # panels, readable
    assert (pixels < 100).mean() > 0.005  # curves and text are drawn, not only the background


def no_face_video(path: Path) -> Path:
    """Twelve 640x360 frames of coloured blocks moving over a plain background: nothing like a face."""
    return write_video(path, [frame_pattern(i, 640, 360) for i in range(12)], 25.0)


def test_daemon_outbox_holds_csv_sidecar_and_plot_for_each_video(daemon, tmp_path):
    require_shared("media/hamilton_clip.mp4", "models/openface3/star.onnx")
    faces = cut_clip(CLIP, tmp_path / "faces.mp4", 0, 12)
    empty = no_face_video(tmp_path / "empty.mp4")
    d = daemon().start()
    sub = d.subscribe()
    drop(faces, d.inbox, "faces.mp4")
    drop(empty, d.inbox, "empty.mp4")
    ended = [sub.wait_for(lambda e, n=n: sum(x["type"] in ("job_done", "job_failed") for x in sub.events) >= n
                          and e["type"] in ("job_done", "job_failed"), 600) for n in (1, 2)]
    assert all(e["type"] == "job_done" for e in ended), ended
    assert d.outbox_files() == ["empty.csv", "empty.json", "empty.png", "faces.csv", "faces.json", "faces.png"]
    assert {r["success"] for r in read_csv(d.outbox / "empty.csv")} == {"0"}
    assert {r["success"] for r in read_csv(d.outbox / "faces.csv")} == {"1"}
    with_faces = assert_a_plot((d.outbox / "faces.png").read_bytes())
    notice_png = (d.outbox / "empty.png").read_bytes()
    notice = grey_pixels(notice_png)
    # a short notice (title and one sentence), not panels of empty axes
    assert notice.shape[0] < with_faces.shape[0] / 2 and len(notice_png) < 60 * 1024, notice.shape
    assert (notice < 128).mean() > 0.002, "the notice has no text"
