"""``aud extract``'s runs: the runner on a throw-away store, over real worker processes and in-process."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import psutil
import pytest

from daemon import output
from daemon.core.models import ModelError, sha256_of
from daemon.core.pipeline import Pipeline
from daemon.core.results import FaceRows
from daemon.core.schema import COLUMNS
from daemon.core.video import read_range
from daemon.jobs.extract import csv_paths, expand, extract
from daemon.output import AssemblyError, read_csv
from tests import tinymodels
from tests.conftest import frame_pattern
from tests.jobs.extractkit import in_process, settings
from tests.media import truncated_index_first

W, H = 64, 48


class NoExecutor:
    def __init__(self, *args):
        raise AssertionError("the executor was made before the inputs were checked")


def bright_odd_frames(index: int, width: int, height: int) -> np.ndarray:
    """Odd frames bright (the gated tiny detector finds a face), even frames dark (no face)."""
    img = frame_pattern(index, width, height).astype(np.int32)
    return np.clip(img + (90 if index % 2 else -200), 0, 255).astype(np.uint8)


def workers_left() -> list[list[str]]:
    """Child processes other than multiprocessing's resource tracker (which lives as long as this
    process and ends with it)."""
    return [p.cmdline() for p in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())]


def go(*args, **kw):
    return asyncio.run(extract(*args, **kw))


def test_extract_with_two_worker_processes(tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=20, width=W, height=H)
    out = tmp_path / "out" / "clip.csv"
    seen = []
    report = go([video], out, settings(tiny_models, tmp_path), progress=seen.append)
    rows = read_csv(out)
    assert [int(r["frame"]) for r in rows] == list(range(1, 21))
    assert all(r["success"] == "1" and r["AU45_r"] != "" and r["x_97"] != "" for r in rows)
    assert list(rows[0]) == list(COLUMNS)
    (outcome,) = report.outcomes
    assert (outcome.csv, outcome.frames, outcome.error) == (out, 20, None)
    assert report.providers["detector"] == "CPUExecutionProvider"
    done = [e.frames_done for e in seen if type(e).__name__ == "JobProgress"]
    assert done[-1] == 20 and done == sorted(done)

    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["frames"] == 20 and sidecar["frames_with_face"] == 20 and sidecar["faces"] == 1
    assert sidecar["video"] == str(video)
    assert sidecar["video_properties"]["frames"] == 20
    assert sidecar["video_properties"]["fps"] == pytest.approx(25.0)
    assert "timestamps" not in sidecar["video_properties"]
    for role, name in (("detector", "retinaface.onnx"), ("multitask", "mtl.onnx"), ("landmarks", "star.onnx")):
        assert sidecar["models"][role]["sha256"] == sha256_of(tiny_models / name)
        assert sidecar["models"][role]["path"] == str(tiny_models / name)
    assert sidecar["providers"] == report.providers
    assert sidecar["models_provenance"]["kind"] == "unknown"  # tiny models: no record of a source
    assert {"numpy", "onnxruntime"} <= set(sidecar["packages"])
    assert sidecar["options"]["au45"] is True and sidecar["options"]["faces"] == "primary"
    assert sidecar["frames_per_second"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.csv", "clip.json"]
    assert workers_left() == []


def test_sharded_csv_equals_a_sequential_run(tmp_path, synthetic_video):
    models = tinymodels.write_set(tmp_path / "gated", det=tinymodels.detector(gate=0.0))
    video = synthetic_video(frames=17, width=W, height=H, pattern=bright_odd_frames)
    s = settings(models, tmp_path, shard_frames=4)
    out = tmp_path / "clip.csv"
    go([video], out, s, make=in_process)
    sequential = Pipeline(s.pipeline_options()).run(read_range(video, 0, 17))
    assert sequential.success.tolist() == [i % 2 == 1 for i in range(17)]
    expected = output.csv_text(output.build_tables(sequential, s.output_options(), W, H)["main"])
    assert out.read_text() == expected


def test_several_videos_and_a_folder_one_csv_each(tiny_models, synthetic_video, tmp_path):
    a = synthetic_video(frames=5, width=W, height=H, name="in/a.mp4")
    b = synthetic_video(frames=6, width=W, height=H, name="in/b.mov",
                        pattern=lambda i, w, h: frame_pattern(i + 9, w, h))
    (tmp_path / "in" / "notes.txt").write_text("not a video")
    videos = expand([tmp_path / "in"])
    assert videos == [a, b]
    report = go(videos, tmp_path / "out", settings(tiny_models, tmp_path), make=in_process)
    assert [o.frames for o in report.outcomes] == [5, 6]
    assert [len(read_csv(tmp_path / "out" / n)) for n in ("a.csv", "b.csv")] == [5, 6]


def test_csv_paths():
    from pathlib import Path

    vids = [Path("/v/a.mp4"), Path("/v/b.mp4")]
    assert csv_paths(vids, None) == [Path("/v/a.csv"), Path("/v/b.csv")]
    assert csv_paths(vids[:1], Path("/o/x.csv")) == [Path("/o/x.csv")]
    assert csv_paths(vids, Path("/o")) == [Path("/o/a.csv"), Path("/o/b.csv")]
    with pytest.raises(ValueError, match="give a folder"):
        csv_paths(vids, Path("/o/x.csv"))


def test_no_face_in_the_video_is_not_an_error(tmp_path, synthetic_video):
    models = tinymodels.write_set(tmp_path / "noface", det=tinymodels.detector(faces=(), background=0.1))
    video = synthetic_video(frames=7, width=W, height=H)
    out = tmp_path / "clip.csv"
    go([video], out, settings(models, tmp_path, shard_frames=3), make=in_process)
    rows = read_csv(out)
    assert len(rows) == 7 and [r["frame"] for r in rows] == [str(i) for i in range(1, 8)]
    assert all(r["success"] == "0" and r["AU01_r"] == "" and r["AU45_r"] == "" for r in rows)
    assert json.loads((tmp_path / "clip.json").read_text())["frames_with_face"] == 0


def test_au45_off_needs_no_landmark_model(tiny_models, synthetic_video, tmp_path):
    (tiny_models / "star.onnx").unlink()
    video = synthetic_video(frames=5, width=W, height=H)
    out = tmp_path / "clip.csv"
    go([video], out, settings(tiny_models, tmp_path, au45=False), make=in_process)
    rows = read_csv(out)
    assert all(r["success"] == "1" and r["AU01_r"] != "" and r["AU45_r"] == "" and r["x_0"] == "" for r in rows)
    assert all(r["pose_Rx"] == "" for r in rows)  # no landmarks, no pose
    sidecar = json.loads((tmp_path / "clip.json").read_text())
    assert set(sidecar["models"]) == {"detector", "multitask"} and sidecar["options"]["au45"] is False


def test_bad_video_fails_before_any_executor(tiny_models, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    (outcome,) = go([bad], tmp_path / "x.csv", settings(tiny_models, tmp_path), make=NoExecutor).outcomes
    assert outcome.csv is None and "notes.mp4" in outcome.error
    assert not (tmp_path / "x.csv").exists()


def test_bad_model_set_fails_before_any_executor(tmp_path, synthetic_video):
    video = synthetic_video(frames=3, width=W, height=H)
    models = tinymodels.write_set(tmp_path / "m")
    (models / "mtl.onnx").unlink()
    with pytest.raises(ModelError, match="mtl.onnx"):
        go([video], tmp_path / "x.csv", settings(models, tmp_path), make=NoExecutor)


def test_a_video_that_fails_its_probe_is_reported_and_the_others_go_on(tiny_models, synthetic_video, tmp_path):
    """It opens (so the workers start), then its stream ends early: its reason, no CSV; the next video
    is extracted; no worker process is left."""
    cut = truncated_index_first(synthetic_video(frames=30, width=W, height=H), tmp_path / "cut.mp4")
    good = synthetic_video(frames=4, width=W, height=H, name="good.mp4",
                           pattern=lambda i, w, h: frame_pattern(i + 3, w, h))
    report = go([cut, good], tmp_path / "out", settings(tiny_models, tmp_path))
    bad, ok = report.outcomes
    assert bad.csv is None and "cut.mp4" in bad.error and "truncated" in bad.error
    assert ok.csv == tmp_path / "out" / "good.csv" and ok.frames == 4
    assert not (tmp_path / "out" / "cut.csv").exists()
    assert workers_left() == []


def _part(frames, detection=0) -> FaceRows:
    r = FaceRows.empty(len(frames))
    r.frame[:] = frames
    r.detection[:] = detection
    return r


def test_assemble_orders_shards():
    rows = output.assemble([_part([4, 5]), _part([0, 1, 2, 3]), _part([6])], np.arange(7))
    assert rows.frame.tolist() == list(range(7))


@pytest.mark.parametrize("parts,expected", [([[0, 1], [3]], 4), ([[0, 1, 2]], 4)])
def test_assemble_refuses_missing_frames(parts, expected):
    with pytest.raises(AssemblyError, match=f"expected {expected}"):
        output.assemble([_part(p) for p in parts], np.arange(expected))


def test_assemble_refuses_a_frame_stored_twice():
    with pytest.raises(AssemblyError, match="twice"):
        output.assemble([_part([0, 1]), _part([1, 2])], np.arange(3))
    two_faces = output.assemble([_part([0, 1]), _part([0, 1], detection=1)], np.arange(2))
    assert two_faces.detection.tolist() == [0, 1, 0, 1]


def test_plots_are_written_beside_the_csv(tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=5, width=W, height=H)
    out = tmp_path / "clip.csv"
    go([video], out, settings(tiny_models, tmp_path, plots=True), make=in_process)
    assert sorted(p.name for p in tmp_path.glob("clip.*") if p.suffix != ".mp4") == ["clip.csv", "clip.json",
                                                                                      "clip.png"]
    assert (tmp_path / "clip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"



def test_each_video_is_hashed_once(tiny_models, synthetic_video, tmp_path, monkeypatch):
    """The fingerprint that adds a video's job is the only hash of it: its job's start finds the file's
    identity unchanged. The sidecar has the job's whole wall time."""
    from daemon.jobs import inputs

    hashes: list[str] = []
    real = inputs.fingerprint
    monkeypatch.setattr(inputs, "fingerprint", lambda path, *a: hashes.append(str(path)) or real(path, *a))
    videos = [synthetic_video(frames=5, width=W, height=H, name=f"{n}.mp4",
                              pattern=lambda i, w, h, n=n: frame_pattern(i + 7 * n, w, h)) for n in (1, 2)]
    report = go(videos, tmp_path / "out", settings(tiny_models, tmp_path), make=in_process)
    assert [o.error for o in report.outcomes] == [None, None]
    assert sorted(hashes) == sorted(str(v) for v in videos)
    sidecar = json.loads((tmp_path / "out" / "1.json").read_text())
    assert sidecar["job_wall_seconds"] >= sidecar["wall_seconds"] > 0 and sidecar["queued_seconds"] >= 0
