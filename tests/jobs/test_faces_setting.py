"""``faces`` through settings, the CLI and the job key: "primary" (the person followed), "best" (OpenFace 3.0's
per-frame choice), "all"; and a run of two faces on tiny models in each mode (issue 26, item 8)."""

from __future__ import annotations

import pytest

from daemon import cli
from daemon.config import ConfigError, load_settings
from daemon.core.models import load_model_set
from daemon.core.pipeline import FacesMode
from daemon.jobs.plan import TimeSelection
from daemon.jobs.spec import job_key, output_settings
from daemon.output import read_csv
from tests import tinymodels
from tests.jobs.test_extract import go, settings

pytestmark = pytest.mark.usefixtures("isolated_config")  # no AUD_* or user config

TWO = (tinymodels.Face((0.05, 0.1, 0.45, 0.9), 0.8), tinymodels.Face((0.55, 0.15, 0.95, 0.95), 0.9))


@pytest.fixture
def two_faces(tmp_path):
    return tinymodels.write_set(tmp_path / "two", det=tinymodels.detector(list(TWO)))


def test_the_three_modes_reach_the_pipeline_and_the_output(two_faces, tmp_path):
    for faces in ("primary", "best", "all"):
        s = settings(two_faces, tmp_path, faces=faces)
        assert s.pipeline_options().faces == s.output_options().faces == FacesMode(faces)
    with pytest.raises(ConfigError, match="faces"):
        load_settings(None, faces="first", models=two_faces)


def test_cli_accepts_best():
    args = cli.build_parser().parse_args(["extract", "v.mp4", "--faces", "best"])
    assert args.faces == "best"


def test_every_mode_has_its_own_job_key_and_primary_keys_its_gap(two_faces, tmp_path):
    found = load_model_set(two_faces)

    def key(**kw) -> str:
        return job_key(found, output_settings(settings(two_faces, tmp_path, **kw), TimeSelection()))

    assert len({key(faces=f) for f in ("primary", "best", "all")}) == 3
    assert key(faces="primary", track_gap_frames=5) != key(faces="primary")  # the gap decides the person
    assert key(faces="best", track_gap_frames=5) == key(faces="best")  # best links nothing


def test_two_faces_always_there_in_each_mode(two_faces, synthetic_video, tmp_path):
    """Two faces in every frame, the better-scored one on the right, through real worker processes: "best"
    writes the right one; "primary" the one seen first of two equally long tracks, which in a frame is the
    detector's order (ids go to a frame's faces best first): the right one too; "all" both."""
    video = synthetic_video(frames=6, width=64, height=48)
    boxes = {}
    for faces in ("primary", "best", "all"):
        out = tmp_path / f"{faces}.csv"
        go([video], out, settings(two_faces, tmp_path / faces, faces=faces))
        rows = read_csv(out)
        boxes[faces] = [float(r["face_x1"]) for r in rows]
        assert {r["success"] for r in rows} == {"1"}
    assert len(boxes["all"]) == 12 and len(boxes["primary"]) == len(boxes["best"]) == 6
    assert boxes["primary"] == boxes["best"] == pytest.approx([0.55 * 64] * 6, abs=1)
    assert sorted(set(boxes["all"])) == pytest.approx([0.05 * 64, 0.55 * 64], abs=1)
