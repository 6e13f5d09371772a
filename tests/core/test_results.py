"""FaceRows: the schema's arrays, concatenation in (frame, detection) order, by-value round trips with
the shard format recorded."""

from __future__ import annotations

import io

import numpy as np
import pytest

from daemon.core.atomic import fsync_dir
from daemon.core.results import OPTIONAL_FIELDS, FaceRows, ShardFormatError
from daemon.core.schema import FIELDS, N_LANDMARKS, SHARD_FORMAT


def filled(frames, seed=0, faces_per_frame=1) -> FaceRows:
    rng = np.random.default_rng(seed)
    frame = np.repeat(frames, faces_per_frame)
    r = FaceRows.empty(len(frame))
    r.frame[:] = frame
    r.detection[:] = np.tile(np.arange(faces_per_frame), len(frames))
    r.timestamp[:] = frame / 25.0
    r.success[:] = rng.uniform(size=len(frame)) > 0.3
    for f in FIELDS[4:]:
        arr = r[f.name]
        arr[r.success] = rng.normal(size=arr[r.success].shape)
    return r


def test_empty_has_the_schema_shapes_dtypes_and_fill():
    r = FaceRows.empty(4)
    assert len(r) == 4 and list(r) == [f.name for f in FIELDS]
    for f in FIELDS:
        assert r[f.name].shape == (4, *f.shape), f.name
        assert r[f.name].dtype == np.dtype(f.dtype), f.name
    assert not r.success.any() and (r.confidence == 0).all() and (r.detection == -1).all()
    for name in ("box", "gaze", "emotion", "au", "landmarks", "eye_open", "mirror_au"):
        assert np.isnan(r[name]).all()
    assert r.landmarks.shape == (4, N_LANDMARKS, 2)


def test_rows_of_unequal_length_or_missing_fields_are_refused():
    arrays = dict(FaceRows.empty(3))
    arrays["box"] = arrays["box"][:2]
    with pytest.raises(ValueError, match="unequal"):
        FaceRows(arrays)
    del arrays["box"]
    with pytest.raises(ValueError, match="box"):
        FaceRows(arrays)


def test_concat_sorts_by_frame_then_detection():
    a, b, c = filled([6, 7, 8], 1, 2), filled([0, 1, 2], 2, 2), filled([3, 4, 5], 3, 2)
    merged = FaceRows.concat([a, b, c])
    assert merged.frame.tolist() == [f for f in range(9) for _ in range(2)]
    assert merged.detection.tolist() == [0, 1] * 9
    for f in FIELDS:
        expected = np.concatenate([p[f.name] for p in (b, c, a)])
        np.testing.assert_array_equal(merged[f.name], expected)
        assert merged[f.name].dtype == np.dtype(f.dtype)
    np.testing.assert_array_equal(merged.frames(), np.arange(9))


def test_concat_of_nothing_is_empty():
    r = FaceRows.concat([])
    assert len(r) == 0 and r.landmarks.shape == (0, N_LANDMARKS, 2)


def test_bytes_round_trip_is_exact():
    r = filled(list(range(10, 17)), faces_per_frame=3)
    back = FaceRows.from_bytes(r.to_bytes())
    for f in FIELDS:
        np.testing.assert_array_equal(back[f.name], r[f.name])
        assert back[f.name].dtype == np.dtype(f.dtype)


def test_rows_without_landmarks_or_hemi_faces_store_neither():
    """AU45 off (no landmarks, no eye openness) and mirror off: those fields are not stored and read back
    blank; a shard stored with them (before they became optional) reads as
    it always did."""
    r = filled(list(range(5)), faces_per_frame=2)
    for name in ("landmarks", "eye_open", "mirror_box", "mirror_gaze", "mirror_emotion", "mirror_au"):
        r[name][:] = np.nan
    blob = r.to_bytes()
    assert {"landmarks", "eye_open", "mirror_au"}.isdisjoint(np.load(io.BytesIO(blob)).files)
    back = FaceRows.from_bytes(blob)
    for f in FIELDS:
        np.testing.assert_array_equal(back[f.name], r[f.name])
        assert back[f.name].dtype == np.dtype(f.dtype)
    with_all = io.BytesIO()  # every field stored, as aud wrote them before
    np.savez(with_all, shard_format=np.int64(SHARD_FORMAT), **dict(r))
    assert len(with_all.getvalue()) - len(blob) >= 10 * (98 * 2 * 4 + 2 * 4 + 2 * 22 * 4)  # 968 bytes a row
    back = FaceRows.from_bytes(with_all.getvalue())
    for f in FIELDS:
        np.testing.assert_array_equal(back[f.name], r[f.name])


def test_fields_not_stored_stay_one_value_through_concat_take_and_following():
    """A field no stored row holds reads back as one value seen on every row (no memory per row: an hour's
    blank landmarks, hemi-face and OpenFace 2.2 fields would be ~200 MB); concatenation, ``take`` and
    following the person keep it so, with the same values as the full arrays they stand for."""
    from daemon.core.tracking import follow_person

    parts = []
    for k, frames in enumerate(([4, 5, 6], [0, 1, 2, 3])):  # stored out of order
        r = filled(frames, seed=k, faces_per_frame=2)
        r.box[:] = [10, 10, 50, 50]  # one face that stays put: a person to follow
        for f in FIELDS:
            if f.name in OPTIONAL_FIELDS:  # AU45, mirror and the OpenFace 2.2 AUs off
                r[f.name][:] = f.fill
        parts.append((r, FaceRows.from_bytes(r.to_bytes())))
    full, read = (FaceRows.concat([p[i] for p in parts]) for i in (0, 1))
    for rows in (read, read.take(np.array([5, 0, 3])), read.take(read.success), follow_person(read)):
        assert rows.blank("landmarks") and rows.blank("mirror_au") and rows.blank("of2_r_proj")
        assert not any(rows.landmarks.strides) and not rows.blank("box")
    for mine, theirs in ((read, full), (read.take(np.array([5, 0, 3])), full.take(np.array([5, 0, 3]))),
                         (follow_person(read), follow_person(full))):
        for f in FIELDS:
            np.testing.assert_array_equal(mine[f.name], theirs[f.name])
    assert not FaceRows.concat([read, filled([7])]).blank("landmarks")  # one part holding values: all stored


def test_another_format_is_recognised_not_misread():
    old = io.BytesIO()  # a shard of format 1: no format recorded, one row per frame
    np.savez(old, frame=np.arange(3), success=np.ones(3, bool))
    with pytest.raises(ShardFormatError, match=f"format 1, this aud reads {SHARD_FORMAT}"):
        FaceRows.from_bytes(old.getvalue())
    newer = io.BytesIO()
    np.savez(newer, shard_format=np.int64(SHARD_FORMAT + 1), **dict(FaceRows.empty(1)))
    with pytest.raises(ShardFormatError, match=f"format {SHARD_FORMAT + 1}"):
        FaceRows.from_bytes(newer.getvalue())
    with pytest.raises(ShardFormatError, match="unreadable"):
        FaceRows.from_bytes(b"not a shard")


def test_fsync_dir_tolerates_missing_directory(tmp_path):
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")  # no exception
