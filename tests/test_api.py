"""daemon.api: an extraction from Python (as a notebook runs it) and a result loaded as a DataFrame."""

from __future__ import annotations

import asyncio
import json

import pytest

from daemon import api
from daemon.core import schema
from tests.conftest import frame_pattern

pd = pytest.importorskip("pandas", reason="daemon.api.load returns pandas DataFrames (the test extra has it)")

pytestmark = pytest.mark.usefixtures("isolated_config")

RUN = dict(provider="cpu", workers=2, batch_size=3, shard_frames=6)


def bright(index: int, width: int, height: int):
    import numpy as np

    return np.clip(frame_pattern(index, width, height).astype(int) + 90, 0, 255).astype("uint8")


def test_extract_two_videos_with_progress_then_load_with_groups_and_sidecar(tiny_models, synthetic_video, tmp_path):
    videos = [synthetic_video(frames=10, width=64, height=48, name=f"v{i}.mp4", pattern=bright) for i in (1, 2)]
    seen: list[api.Progress] = []
    outcomes = api.extract(videos, tmp_path / "out", models=tiny_models, state=tmp_path / "state",
                           progress=seen.append, faces="all", **RUN)
    assert [o.video.name for o in outcomes] == ["v1.mp4", "v2.mp4"]
    assert all(o.error is None and o.csv is not None and o.frames == 10 for o in outcomes)
    assert {p.video for p in seen} == {"v1.mp4", "v2.mp4"}
    last = [p for p in seen if p.video == "v1.mp4"][-1]
    assert last.frames_done == last.frames_total == 10

    result = api.load(outcomes[0].csv)
    assert isinstance(result, pd.DataFrame) and len(result) == 10
    assert list(result.aus.columns) == list(schema.AUS)
    assert list(result.emotions.columns) == list(schema.EMOTION)
    assert set(result.groups) >= {"identity", "box", "gaze", "pose", "emotion", "aus", "eyes", "landmarks"}
    sidecar = json.loads(outcomes[0].csv.with_suffix(".json").read_text())
    assert result.sidecar == sidecar and result.models == sidecar["models"]
    assert result.sidecar["options"]["faces"] == "all"
    head = result.head(3)  # slicing keeps the groups and the sidecar
    assert list(head.aus.columns) == list(schema.AUS) and head.sidecar is result.sidecar
    with pytest.raises(KeyError, match="no column group 'hands'"):
        result.group("hands")


def test_extract_inside_a_running_event_loop_as_jupyter_has(tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=4, width=64, height=48, pattern=bright)

    async def notebook_cell():
        return api.extract(video, tmp_path / "one.csv", models=tiny_models, state=tmp_path / "state", **RUN)

    (outcome,) = asyncio.run(notebook_cell())
    assert outcome.csv == tmp_path / "one.csv" and outcome.csv.exists()


def test_a_failed_video_is_reported_and_the_others_written(tiny_models, synthetic_video, tmp_path):
    good = synthetic_video(frames=4, width=64, height=48, name="good.mp4", pattern=bright)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    outcomes = api.extract([good, bad], tmp_path / "out", models=tiny_models, state=tmp_path / "state", **RUN)
    assert outcomes[0].csv is not None
    assert outcomes[1].csv is None and "bad.mp4" in outcomes[1].error


def test_openface2_style_groups(tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=4, width=64, height=48, pattern=bright)
    (outcome,) = api.extract(video, tmp_path / "of2.csv", models=tiny_models, state=tmp_path / "state",
                             csv_style="openface2", **RUN)
    result = api.load(outcome.csv)
    assert "AU01_r" in result.aus.columns and "AU45_c" in result.aus.columns
    assert all(c.startswith("pose_") for c in result.pose.columns) and len(result.pose.columns) == 6
    assert result.groups["identity"][:2] == ["frame", "face_id"]


def test_an_unknown_option_is_named():
    with pytest.raises(TypeError, match="unknown option.*face_count"):
        api.extract("x.mp4", face_count=2)
