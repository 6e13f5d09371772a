"""One video start to finish: probe, shards, pool, assembled CSV and sidecar (tiny models)."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from daemon.core import csvfile, worker
from daemon.core import extract as extract_module
from daemon.core.extract import assemble, extract, shard_tasks
from daemon.core.models import ModelError, sha256_of
from daemon.core.pipeline import Pipeline, PipelineOptions
from daemon.core.results import FrameResults
from daemon.core.video import VideoError, probe, read_range
from daemon.core.worker import plan_shards
from tests import tinymodels
from tests.conftest import frame_pattern
from tests.media import truncated_index_first

W, H = 64, 48


def options(models_dir, tmp_path, **kw) -> PipelineOptions:
    return PipelineOptions(models_dir=models_dir, provider="cpu", workers=2, batch_size=3,
                           cache_dir=tmp_path / "coreml-cache", **kw)


def bright_odd_frames(index: int, width: int, height: int) -> np.ndarray:
    """Odd frames bright (the gated tiny detector finds a face), even frames dark (no face)."""
    img = frame_pattern(index, width, height).astype(np.int32)
    return np.clip(img + (90 if index % 2 else -200), 0, 255).astype(np.uint8)


@pytest.fixture
def in_process(monkeypatch):
    """A thread pool whose tasks use a pipeline initialised in this process (no worker processes)."""
    monkeypatch.setattr(worker, "_pipeline", None)

    def make(opts: PipelineOptions) -> ThreadPoolExecutor:
        worker.init_worker(opts)
        return ThreadPoolExecutor(max_workers=2)

    return make


class NoPool:
    """An executor that must never be used."""

    def submit(self, *args, **kwargs) -> Future:
        raise AssertionError("the pool was used before the inputs were checked")

    def shutdown(self, *args, **kwargs):
        pass


# --- a real process pool --------------------------------------------------------------------------------------

def test_extract_with_two_worker_processes(tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=20, width=W, height=H)
    out = tmp_path / "out" / "clip.csv"
    out.parent.mkdir()
    seen = []
    summary = extract(video, out, options(tiny_models, tmp_path), workers=2, shard_frames=6,
                      progress=lambda done, total: seen.append((done, total)))
    rows = csvfile.read_csv(out)
    assert [int(r["frame"]) for r in rows] == list(range(1, 21))
    assert all(r["success"] == "1" for r in rows)
    assert all(r["AU45_r"] != "" and r["x_97"] != "" for r in rows)
    assert list(rows[0]) == list(csvfile.COLUMNS)
    assert (summary.csv, summary.frames, summary.faces) == (out, 20, 20)
    assert summary.providers["detector"] == "CPUExecutionProvider"
    assert seen[-1] == (20, 20) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(seen) == len(plan_shards(20, 6, 2)) == 9  # one progress report per shard (guided sizes)

    sidecar = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert sidecar["frames"] == 20 and sidecar["frames_with_face"] == 20
    assert sidecar["video"] == str(video)
    assert sidecar["video_properties"]["frames"] == 20
    assert sidecar["video_properties"]["fps"] == pytest.approx(25.0)
    assert "timestamps" not in sidecar["video_properties"]
    for role, name in (("detector", "retinaface.onnx"), ("multitask", "mtl.onnx"), ("landmarks", "star.onnx")):
        assert sidecar["models"][role]["sha256"] == sha256_of(tiny_models / name)
        assert sidecar["models"][role]["path"] == str(tiny_models / name)
    assert sidecar["providers"] == summary.providers
    assert {"numpy", "onnxruntime"} <= set(sidecar["packages"])
    assert sidecar["options"] == {"au45": True, "detect_max_side": 0, "batch_size": 3}
    assert sidecar["frames_per_second"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.csv", "clip.json"]


# --- the same logic on an in-process pool ----------------------------------------------------------------------

def test_sharded_csv_equals_a_sequential_run(tmp_path, synthetic_video, in_process):
    models = tinymodels.write_set(tmp_path / "gated", det=tinymodels.detector(gate=0.0))
    video = synthetic_video(frames=17, width=W, height=H, pattern=bright_odd_frames)
    opts = options(models, tmp_path)
    out = tmp_path / "clip.csv"
    with in_process(opts) as pool:
        summary = extract(video, out, opts, workers=2, shard_frames=4, executor=pool)
    assert summary.frames == 17 and summary.faces == 8
    sequential = Pipeline(opts).run(read_range(video, 0, 17))
    assert sequential.success.tolist() == [i % 2 == 1 for i in range(17)]
    assert out.read_text() == csvfile.csv_text(sequential)


def test_no_face_in_the_video_is_not_an_error(tmp_path, synthetic_video, in_process):
    models = tinymodels.write_set(tmp_path / "noface", det=tinymodels.detector(faces=(), background=0.1))
    video = synthetic_video(frames=7, width=W, height=H)
    opts = options(models, tmp_path)
    out = tmp_path / "clip.csv"
    with in_process(opts) as pool:
        summary = extract(video, out, opts, workers=2, shard_frames=3, executor=pool)
    rows = csvfile.read_csv(out)
    assert summary.faces == 0 and len(rows) == 7
    assert all(r["success"] == "0" and r["AU01_r"] == "" and r["AU45_r"] == "" for r in rows)
    assert [r["frame"] for r in rows] == [str(i) for i in range(1, 8)]
    assert json.loads((tmp_path / "clip.json").read_text())["frames_with_face"] == 0


def test_au45_off(tiny_models, synthetic_video, tmp_path, in_process):
    video = synthetic_video(frames=5, width=W, height=H)
    opts = options(tiny_models, tmp_path, au45=False)
    out = tmp_path / "clip.csv"
    with in_process(opts) as pool:
        extract(video, out, opts, workers=2, shard_frames=2, executor=pool)
    rows = csvfile.read_csv(out)
    assert all(r["success"] == "1" and r["AU01_r"] != "" and r["AU45_r"] == "" and r["x_0"] == "" for r in rows)
    sidecar = json.loads((tmp_path / "clip.json").read_text())
    assert set(sidecar["models"]) == {"detector", "multitask"}
    assert sidecar["options"]["au45"] is False


def test_au45_off_needs_no_landmark_model(tiny_models, synthetic_video, tmp_path, in_process):
    (tiny_models / "star.onnx").unlink()
    video = synthetic_video(frames=5, width=W, height=H)
    opts = options(tiny_models, tmp_path, au45=False)
    with in_process(opts) as pool:
        summary = extract(video, tmp_path / "clip.csv", opts, workers=2, shard_frames=2, executor=pool)
    assert summary.frames == 5


# --- checks before any work -------------------------------------------------------------------------------------

def test_bad_video_fails_before_the_pool(tiny_models, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(VideoError, match="notes.mp4"):
        extract(bad, tmp_path / "x.csv", options(tiny_models, tmp_path), executor=NoPool())
    assert not (tmp_path / "x.csv").exists()


def test_workers_start_loading_before_the_video_is_probed(tiny_models, synthetic_video, tmp_path,
                                                        in_process, monkeypatch):
    """The probe and the model hashes run while the workers load their sessions."""
    events = []
    video = synthetic_video(frames=6, width=W, height=H)
    opts = options(tiny_models, tmp_path)
    real_probe, real_hash = extract_module.probe, extract_module.hash_models
    monkeypatch.setattr(extract_module, "probe", lambda v: events.append("probe") or real_probe(v))
    monkeypatch.setattr(extract_module, "hash_models", lambda o: events.append("hash") or real_hash(o))
    with in_process(opts) as pool:
        class Recording:
            def submit(self, fn, *args):
                events.append(fn.__name__)
                return pool.submit(fn, *args)

        summary = extract(video, tmp_path / "clip.csv", opts, workers=2, shard_frames=3, executor=Recording())
    assert summary.frames == 6
    assert events[:3] == ["warm_up", "probe", "hash"] and set(events[3:]) == {"run_shard"}


def test_video_that_fails_its_probe_stops_the_pool_and_writes_nothing(tiny_models, synthetic_video, tmp_path):
    """It opens (so the workers start), then its stream ends early: the error, no CSV, no workers left."""
    video = truncated_index_first(synthetic_video(frames=30, width=W, height=H), tmp_path / "cut.mp4")
    with pytest.raises(VideoError, match="cut.mp4.*truncated"):
        extract(video, tmp_path / "x.csv", options(tiny_models, tmp_path), workers=2)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.json").exists()
    assert multiprocessing.active_children() == []


def test_bad_model_set_fails_before_the_pool(tmp_path, synthetic_video):
    video = synthetic_video(frames=3, width=W, height=H)
    models = tinymodels.write_set(tmp_path / "m")
    (models / "mtl.onnx").unlink()
    with pytest.raises(ModelError, match="mtl.onnx"):
        extract(video, tmp_path / "x.csv", options(models, tmp_path), executor=NoPool())


# --- pieces -----------------------------------------------------------------------------------------------------------

def test_shard_tasks_carry_the_previous_timestamp(synthetic_video, tmp_path):
    info = probe(synthetic_video(frames=10, width=W, height=H))
    tasks = shard_tasks(info, [(0, 4), (4, 8), (8, 10)], tmp_path)
    assert [t.previous_timestamp for t in tasks] == [None, info.timestamps[3], info.timestamps[7]]
    assert len({t.out_path for t in tasks}) == 3
    assert all(t.video == info.path for t in tasks)


def _part(frames) -> FrameResults:
    r = FrameResults.empty(len(frames))
    r.frame[:] = frames
    return r


def test_assemble_orders_shards_and_writes(tmp_path):
    paths = []
    for k, frames in enumerate([[4, 5], [0, 1, 2, 3], [6]]):
        p = tmp_path / f"s{k}.npz"
        _part(frames).save(p)
        paths.append(p)
    out = tmp_path / "out.csv"
    results = assemble(paths, out, lambda r: {"frames": len(r)}, 7)
    assert results.frame.tolist() == list(range(7))
    assert [r["frame"] for r in csvfile.read_csv(out)] == [str(i) for i in range(1, 8)]


@pytest.mark.parametrize("frames,expected", [([[0, 1], [3]], 4), ([[0, 1], [1, 2]], 3), ([[0, 1, 2]], 4)])
def test_assemble_refuses_missing_or_duplicate_frames(tmp_path, frames, expected):
    paths = []
    for k, f in enumerate(frames):
        p = tmp_path / f"s{k}.npz"
        _part(f).save(p)
        paths.append(p)
    out = tmp_path / "out.csv"
    with pytest.raises(RuntimeError, match=f"expected {expected}"):
        assemble(paths, out, lambda r: {}, expected)
    assert not out.exists()
