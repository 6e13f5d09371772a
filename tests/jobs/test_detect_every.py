"""``detect_every`` through settings, the job key, ``aud extract`` and the CLI, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from daemon import cli, output
from daemon.config import ConfigError, load_settings
from daemon.core.models import load_model_set
from daemon.core.pipeline import Pipeline
from daemon.core.results import FaceRows
from daemon.core.video import read_range
from daemon.jobs.plan import TimeSelection, plan_shards
from daemon.jobs.spec import job_key, output_settings
from tests import tinymodels
from tests.core.test_follow_pipeline import SQUARE_FACE, template_star
from tests.jobs.test_extract import go, in_process, settings

pytestmark = pytest.mark.usefixtures("isolated_config")  # no AUD_* or user config

W, H = 160, 120


@pytest.fixture
def models(tmp_path):
    return tinymodels.write_set(tmp_path / "template", det=tinymodels.detector([SQUARE_FACE]), star=template_star())


def still_scene(index: int, width: int, height: int) -> np.ndarray:
    """A still scene with a small block moving along the top: following holds on it."""
    img = np.full((height, width, 3), (60, 90, 120), np.uint8)
    img[4:12, 2 + 3 * index:10 + 3 * index] = (250, 250, 250)
    return img


def test_detect_every_1_writes_the_same_bytes_as_the_default(tiny_models, synthetic_video, tmp_path):
    """Through real worker processes: the CSV (and the job key) of ``detect_every = 1`` are the default's."""
    video = synthetic_video(frames=14, width=64, height=48)
    default, every_1 = tmp_path / "default.csv", tmp_path / "every1.csv"
    go([video], default, settings(tiny_models, tmp_path / "a"))
    go([video], every_1, settings(tiny_models, tmp_path / "b", detect_every=1))
    assert default.read_bytes() == every_1.read_bytes()


def test_a_followed_run_is_each_shard_followed_from_its_own_first_frame(models, synthetic_video, tmp_path):
    video = synthetic_video(frames=17, width=W, height=H, pattern=still_scene)
    s = settings(models, tmp_path, shard_frames=6, detect_every=4)
    out = tmp_path / "clip.csv"
    go([video], out, s, make=in_process)
    pipeline = Pipeline(s.pipeline_options())
    ranges = plan_shards(17, 6, 2)  # what the runner plans for 2 in-process workers (two lanes, shards shrink
    assert ranges[:3] == [(0, 1), (1, 5), (5, 7)] and (8, 13) in ranges  # towards each lane's end; the first
    # lane opens with a smallest shard)
    rows = FaceRows.concat([pipeline.run(read_range(video, start, stop, None)) for start, stop in ranges])
    assert rows.detected.tolist() == [any(i - a in (0, 4) for a, b in ranges if a <= i < b) for i in range(17)]
    assert np.flatnonzero(~rows.detected).tolist() == [2, 3, 4, 6, 9, 10, 11, 14]  # followed
    assert out.read_text() == output.csv_text(output.build_tables(rows, s.output_options(), W, H)["main"])
    exact = Pipeline(settings(models, tmp_path).pipeline_options()).run(read_range(video, 0, 17, None))
    assert output.csv_text(output.build_tables(exact, s.output_options(), W, H)["main"]) != out.read_text()


def test_detect_every_is_in_the_job_key_and_the_sidecar_only_when_set(models, tmp_path):
    found = load_model_set(models)
    keys = {}
    for n in (1, 5):
        shaping = output_settings(settings(models, tmp_path, detect_every=n), TimeSelection())
        assert shaping.get("detect_every") == (None if n == 1 else n)
        keys[n] = job_key(found, shaping)
    assert keys[1] == job_key(found, output_settings(settings(models, tmp_path), TimeSelection()))
    assert keys[1] != keys[5]


def test_settings_refuse_following_without_star(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="detect_every = 3 follows faces with STAR's landmarks, which au45 = false"):
        load_settings(None, detect_every=3, au45=False)
    monkeypatch.setenv("AUD_DETECT_EVERY", "2")
    assert load_settings(None).detect_every == 2
    with pytest.raises(ConfigError, match="greater than or equal to 1"):
        load_settings(None, detect_every=0)


def test_cli_refuses_detect_every_with_no_au45(models, synthetic_video, tmp_path, capsys):
    video = synthetic_video(frames=3, width=W, height=H)
    code = cli.main(["extract", str(video), "--models", str(models), "--detect-every", "5", "--no-au45"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "detect_every = 5 follows faces with STAR's landmarks, which au45 = false (--no-au45) turns off" in err
    assert not video.with_suffix(".csv").exists()


def test_cli_help_says_detect_every_needs_au45(capsys):
    with pytest.raises(SystemExit):
        cli.main(["extract", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--detect-every N" in text and "needs AU45: refused with --no-au45" in text
