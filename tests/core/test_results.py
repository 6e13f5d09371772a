"""FrameResults: empty rows, concatenation in frame order, atomic .npz save and load."""

from __future__ import annotations

import os
from dataclasses import fields

import numpy as np
import pytest

from daemon.core.atomic import fsync_dir
from daemon.core.results import N_LANDMARKS, FrameResults

SHAPES = {"frame": (), "timestamp": (), "success": (), "confidence": (), "box": (4,), "gaze": (2,),
          "emotion": (8,), "au": (8,), "landmarks": (N_LANDMARKS, 2), "eye_open": (2,)}
DTYPES = {"frame": np.int64, "timestamp": np.float64, "success": np.bool_, "confidence": np.float32,
          "box": np.float32, "gaze": np.float32, "emotion": np.float32, "au": np.float32,
          "landmarks": np.float32, "eye_open": np.float32}


def filled(frames, seed=0) -> FrameResults:
    rng = np.random.default_rng(seed)
    r = FrameResults.empty(len(frames))
    r.frame[:] = frames
    r.timestamp[:] = np.asarray(frames) / 25.0
    r.success[:] = rng.uniform(size=len(frames)) > 0.3
    for name in ("confidence", "box", "gaze", "emotion", "au", "landmarks", "eye_open"):
        arr = getattr(r, name)
        arr[r.success] = rng.normal(size=arr[r.success].shape)
    return r


def test_empty_has_right_shapes_dtypes_and_nan():
    r = FrameResults.empty(4)
    assert len(r) == 4
    assert set(r.arrays()) == set(SHAPES) == {f.name for f in fields(FrameResults)}
    for name, arr in r.arrays().items():
        assert arr.shape == (4, *SHAPES[name]), name
        assert arr.dtype == DTYPES[name], name
    assert not r.success.any() and (r.confidence == 0).all()
    for name in ("box", "gaze", "emotion", "au", "landmarks", "eye_open"):
        assert np.isnan(getattr(r, name)).all()


def test_concat_sorts_by_frame():
    a, b, c = filled([6, 7, 8], 1), filled([0, 1, 2], 2), filled([3, 4, 5], 3)
    merged = FrameResults.concat([a, b, c])
    assert merged.frame.tolist() == list(range(9))
    for name in SHAPES:
        expected = np.concatenate([getattr(p, name) for p in (b, c, a)])
        np.testing.assert_array_equal(getattr(merged, name), expected)
        assert getattr(merged, name).dtype == DTYPES[name]


def test_concat_of_nothing_is_empty():
    r = FrameResults.concat([])
    assert len(r) == 0 and r.landmarks.shape == (0, N_LANDMARKS, 2)


def test_save_load_round_trip(tmp_path):
    r = filled(list(range(10, 17)))
    path = tmp_path / "shard.npz"
    r.save(path)
    back = FrameResults.load(path)
    for name in SHAPES:
        np.testing.assert_array_equal(getattr(back, name), getattr(r, name))
        assert getattr(back, name).dtype == DTYPES[name]
    assert [p.name for p in tmp_path.iterdir()] == ["shard.npz"]


def test_save_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "shard.npz"
    filled([0, 1]).save(path)
    before = path.read_bytes()

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        filled([5, 6, 7]).save(path)
    assert path.read_bytes() == before  # the old shard is intact, never half-written


def test_failed_save_leaves_no_temp_file(tmp_path, monkeypatch):
    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        filled([0, 1, 2]).save(tmp_path / "shard.npz")
    assert list(tmp_path.iterdir()) == []


def test_fsync_dir_tolerates_missing_directory(tmp_path):
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")  # no exception
