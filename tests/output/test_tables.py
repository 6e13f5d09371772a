"""The CSV: columns, rows, number formatting, and atomic writes of a result's files."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from daemon import output
from daemon.core import atomic, blink
from daemon.core.pipeline import FacesMode
from daemon.core.results import FaceRows
from daemon.core.schema import AUS_R, COLUMNS, EMOTIONS
from daemon.output import OutputOptions, tables

EXPECTED_HEAD = [
    "frame", "face_id", "timestamp", "confidence", "success",
    "face_x1", "face_y1", "face_x2", "face_y2", "gaze_yaw", "gaze_pitch",
    "pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz", "emotion",
    "emotion_neutral", "emotion_happy", "emotion_sad", "emotion_surprise", "emotion_fear", "emotion_disgust",
    "emotion_anger", "emotion_contempt",
    "AU01_r", "AU02_r", "AU04_r", "AU06_r", "AU09_r", "AU12_r", "AU25_r", "AU26_r",
    "AU45_r", "AU01_c", "AU02_c", "AU04_c", "AU06_c", "AU09_c", "AU12_c", "AU25_c", "AU26_c",
    "eye_open_right", "eye_open_left",
]
HEAD = len(EXPECTED_HEAD)
# the rows made here are one a frame with random boxes: written as measured ("best"), not followed ("primary")
NO_PLOTS = OutputOptions(faces=FacesMode.BEST, plots=False)


def main_table(r: FaceRows, options: OutputOptions = NO_PLOTS) -> dict:
    return output.build_tables(r, options, 640, 360)["main"]


def main_tables(r: FaceRows) -> dict:
    return output.build_tables(r, NO_PLOTS, 640, 360)


def csv_text(r: FaceRows) -> str:
    return output.csv_text(main_table(r))


def make_results(n: int = 9, failed=(2, 5), seed: int = 0) -> FaceRows:
    rng = np.random.default_rng(seed)
    r = FaceRows.empty(n)
    r.frame[:] = np.arange(n)
    r.timestamp[:] = np.arange(n) / 29.97
    for i in range(n):
        if i in failed:
            r.confidence[i] = 0.1
            continue
        r.success[i] = True
        r.detection[i] = 0
        r.confidence[i] = rng.uniform(0.5, 1)
        r.box[i] = rng.uniform(0, 500, 4)
        r.gaze[i] = rng.normal(0, 0.3, 2)
        r.emotion[i] = rng.normal(0, 3, 8)
        r.au[i] = rng.normal(0, 1, 8)
        r.landmarks[i] = rng.uniform(0, 640, (98, 2))
        r.eye_open[i] = rng.uniform(0.1, 0.4, 2)
    # values that need all their digits
    r.au[0, 0] = np.float32(1.0000001)
    r.au[0, 1] = np.float32(123456.789)
    r.au[0, 2] = np.float32(-3.4028235e38)
    r.au[0, 3] = np.float32(1.4e-45)
    return r


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def successful_rows(r: FaceRows) -> Iterator[tuple[int, dict[str, str]]]:
    """(index, CSV row) of each successful row of ``r``'s CSV."""
    for i, row in enumerate(parse(csv_text(r))):
        if r.success[i]:
            yield i, row


def test_columns_exact_order_and_count():
    assert len(COLUMNS) == HEAD + 196 == 241
    assert list(COLUMNS[:HEAD]) == EXPECTED_HEAD
    assert list(COLUMNS[HEAD:]) == [f"x_{i}" for i in range(98)] + [f"y_{i}" for i in range(98)]
    assert COLUMNS[0] == "frame" and COLUMNS[-1] == "y_97"
    assert len(set(COLUMNS)) == len(COLUMNS)


def test_header_line_and_row_lengths():
    text = csv_text(make_results())
    lines = text.splitlines()
    assert lines[0] == ",".join(EXPECTED_HEAD + [f"x_{i}" for i in range(98)] + [f"y_{i}" for i in range(98)])
    assert len(lines) == 1 + 9
    assert all(len(line.split(",")) == 241 for line in lines)
    assert text.endswith("\n") and "\r" not in text


def test_frames_start_at_one_and_timestamps():
    r = make_results()
    rows = parse(csv_text(r))
    assert [int(row["frame"]) for row in rows] == list(range(1, 10))
    assert all(row["face_id"] == "0" for row in rows)
    np.testing.assert_allclose([float(row["timestamp"]) for row in rows], r.timestamp, atol=5e-7)


def test_failed_frames_have_success_0_and_empty_measurements():
    rows = parse(csv_text(make_results()))
    for i, row in enumerate(rows):
        if i in (2, 5):
            assert row["success"] == "0"
            assert all(row[c] == "" for c in COLUMNS[5:]), i
            assert float(row["confidence"]) == pytest.approx(0.1)
        else:
            assert row["success"] == "1"
            assert all(row[c] != "" for c in COLUMNS if not c.startswith("pose_")), i  # random points: no pose


def test_emotion_probabilities_and_name():
    r = make_results()
    for i, row in successful_rows(r):
        logits = r.emotion[i].astype(np.float64)
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        got = np.array([float(row[f"emotion_{e}"]) for e in EMOTIONS])
        np.testing.assert_allclose(got, probs, rtol=1e-8)
        assert got.sum() == pytest.approx(1, abs=1e-7)
        assert row["emotion"] == EMOTIONS[int(np.argmax(logits))]


def test_softmax_is_stable_for_large_logits():
    p = tables.softmax(np.array([[1000.0, 0.0, -1000.0]]))
    np.testing.assert_allclose(p, [[1, 0, 0]])


def test_float32_values_round_trip_with_7_significant_digits():
    r = make_results()
    for i, row in successful_rows(r):
        pairs = [(row[f"face_{k}"], r.box[i, j]) for j, k in enumerate(("x1", "y1", "x2", "y2"))]
        pairs += [(row["gaze_yaw"], r.gaze[i, 0]), (row["gaze_pitch"], r.gaze[i, 1])]
        pairs += [(row[name], r.au[i, j]) for j, name in enumerate(AUS_R)]
        pairs += [(row[f"x_{k}"], r.landmarks[i, k, 0]) for k in range(98)]
        pairs += [(row[f"y_{k}"], r.landmarks[i, k, 1]) for k in range(98)]
        pairs += [(row["eye_open_right"], r.eye_open[i, 0]), (row["eye_open_left"], r.eye_open[i, 1]),
                  (row["confidence"], r.confidence[i])]
        for text, value in pairs:
            np.testing.assert_allclose(float(text), float(value), rtol=1e-7)
            assert np.float32(float(text)) == value  # float32 exactly recoverable


def test_extreme_values_keep_their_digits():
    rows = parse(csv_text(make_results()))
    assert np.float32(float(rows[0]["AU01_r"])) == np.float32(1.0000001)
    assert np.float32(float(rows[0]["AU02_r"])) == np.float32(123456.789)
    assert np.float32(float(rows[0]["AU04_r"])) == np.float32(-3.4028235e38)
    assert np.float32(float(rows[0]["AU06_r"])) == np.float32(1.4e-45)


def test_au45_column_is_over_the_whole_video():
    r = make_results()
    expected = blink.au45(r.eye_open[:, 0], r.eye_open[:, 1], r.success)
    rows = parse(csv_text(r))
    for i, row in enumerate(rows):
        if r.success[i]:
            assert float(row["AU45_r"]) == pytest.approx(expected[i], rel=1e-7, abs=1e-9)
        else:
            assert row["AU45_r"] == ""


def test_successful_frame_with_au45_off_has_empty_landmark_fields():
    r = make_results(n=3, failed=())
    r.landmarks[:] = np.nan
    r.eye_open[:] = np.nan
    rows = parse(csv_text(r))
    for row in rows:
        assert row["success"] == "1" and row["AU01_r"] != "" and row["emotion"] in EMOTIONS
        assert row["AU45_r"] == row["eye_open_right"] == row["x_0"] == row["y_97"] == ""


def test_au_occurrence_is_the_score_at_the_threshold():
    r = make_results()
    r.au[0, :] = [0.4999, 0.5, 0.7, -1, 1, 0.49, 0.51, 0.0]
    row = parse(csv_text(r))[0]
    assert [row[f"AU{n:02d}_c"] for n in (1, 2, 4, 6, 9, 12, 25, 26)] == ["0", "1", "1", "0", "1", "0", "1", "0"]


def test_no_frames_is_header_only():
    assert csv_text(FaceRows.empty(0)) == ",".join(COLUMNS) + "\n"


# --- writing -------------------------------------------------------------------------------------------------

def test_write_outputs_csv_and_sidecar(tmp_path):
    out = tmp_path / "clip.csv"
    r = make_results()
    output.write_outputs(out, output.build_tables(r, NO_PLOTS, 640, 360), {"frames": 9, "path": Path("/x/y")},
                         NO_PLOTS)
    assert out.read_text() == csv_text(r)
    assert json.loads((tmp_path / "clip.json").read_text()) == {"frames": 9, "path": "/x/y"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.csv", "clip.json"]  # no temp files
    assert [row["frame"] for row in output.read_csv(out)] == [str(i) for i in range(1, 10)]


def test_sidecar_path():
    assert output.sidecar_path(Path("/a/b/video.csv")) == Path("/a/b/video.json")
    assert output.side_path(Path("/a/b/video.csv"), "left_mirrored") == Path("/a/b/video.left_mirrored.csv")


def test_failed_write_leaves_no_partial_csv(tmp_path, monkeypatch):
    out = tmp_path / "clip.csv"

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        output.write_outputs(out, main_tables(make_results()), {}, NO_PLOTS)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_csv(tmp_path, monkeypatch):
    out = tmp_path / "clip.csv"
    out.write_text("old\n")

    def broken(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write_text(out, "new\n")
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.csv"]


def test_failure_while_writing_the_temp_file(tmp_path, monkeypatch):
    out = tmp_path / "clip.csv"

    def broken(fd):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        atomic.atomic_write_text(out, "data\n")
    assert list(tmp_path.iterdir()) == []


def test_mirror_in_openface2_style_writes_every_file(tmp_path):
    """Issue 26 item 1: ``--mirror --csv-style openface2`` wrote the sidecar and the plot, then failed on the
    hemi-face CSV (no pose columns) and left no CSV. Every file is written now."""
    from daemon.output import CsvStyle
    from daemon.output.openface2 import HEMI_COLUMNS

    options = OutputOptions(faces=FacesMode.BEST, mirror=True, csv_style=CsvStyle.OPENFACE2, plots=False)
    tables = output.build_tables(make_results(), options, 640, 360)
    out = tmp_path / "video.csv"
    paths = output.write_outputs(out, tables, {}, options)
    assert [p.name for p in paths] == ["video.json", "video.left_mirrored.csv", "video.right_mirrored.csv",
                                       "video.csv"]
    assert all(p.exists() for p in paths)
    for side in ("left_mirrored", "right_mirrored"):
        header = output.side_path(out, side).read_text().splitlines()[0]
        assert header.split(", ") == list(HEMI_COLUMNS)


def test_a_table_the_style_cannot_write_leaves_no_file(tmp_path):
    """The CSV text is made before anything is written: a table the style cannot write fails with no sidecar
    or plot left claiming a result."""
    from daemon.output import CsvStyle
    from daemon.output.openface2 import TableError

    options = OutputOptions(faces=FacesMode.BEST, csv_style=CsvStyle.OPENFACE2, plots=False)
    tables = output.build_tables(make_results(), options, 640, 360)
    del tables["main"]["pose_Tx"]
    with pytest.raises(TableError):
        output.write_outputs(tmp_path / "video.csv", tables, {}, options)
    assert list(tmp_path.iterdir()) == []
