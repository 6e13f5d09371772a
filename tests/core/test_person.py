"""The person ``faces = "primary"`` follows (``tracking.longest_track``, ``tracking.follow_person``) and what
its tables hold (``output.build_tables``): the longest track, ties to the first seen, the gap rule, no-face rows
with the frame's best score, AU45 against the person's own baseline, and the ``face_detected`` column."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.core import blink, tracking
from daemon.core.pipeline import FacesMode
from daemon.core.results import FaceRows
from daemon.core.schema import COLUMNS, FACE_DETECTED, IDENTITY
from daemon.output import OutputOptions, build_tables, csv_text, table_text, written_rows
from daemon.output.options import CsvStyle

A = np.array([10.0, 10.0, 60.0, 70.0])  # one person, left
B = np.array([300.0, 12.0, 360.0, 82.0])  # another, right
PRIMARY = OutputOptions(faces=FacesMode.PRIMARY, plots=False)


def face_rows(frames: list[list[tuple[np.ndarray, float]]], best_seen: float = 0.2) -> FaceRows:
    """Rows as the workers write them: per frame its faces (box, score) in detector-rank order, or one
    row without a face carrying ``best_seen``. Each face's eye openness is its score (a marker)."""
    n = sum(max(1, len(f)) for f in frames)
    out = FaceRows.empty(n)
    row = 0
    for index, faces in enumerate(frames):
        if not faces:
            out.frame[row], out.timestamp[row], out.confidence[row] = index, index / 10, best_seen
            row += 1
        for rank, (box, score) in enumerate(faces):
            out.frame[row], out.timestamp[row], out.detection[row] = index, index / 10, rank
            out.success[row], out.confidence[row], out.box[row] = True, score, box
            out.eye_open[row] = score
            out.au[row] = score
            row += 1
    return out


def test_longest_track_counts_rows_and_breaks_ties_by_first_seen():
    assert tracking.longest_track(np.array([0, 1, 1, np.nan, 0, 1])) == 1
    assert tracking.longest_track(np.array([1, 0, 0, 1, 2])) == 0  # 0 and 1 twice each: 0 was seen first
    assert tracking.longest_track(np.array([np.nan, np.nan])) is None
    assert tracking.longest_track(np.array([])) is None


def test_the_person_seen_most_is_followed_not_the_best_detection():
    # B outscores A in every frame they share, but A is there in 4 frames, B in 3
    frames = [[(A, 0.9)], [(B, 0.99), (A, 0.9)], [(B, 0.98), (A + 2, 0.9)], [(B, 0.97), (A + 4, 0.9)]]
    rows = tracking.follow_person(face_rows(frames))
    assert rows.frame.tolist() == [0, 1, 2, 3] and rows.success.all()
    np.testing.assert_array_equal(rows.box[:, 0], [10, 10, 12, 14])
    np.testing.assert_allclose(rows.confidence, 0.9)
    assert rows.detection.tolist() == [0, 0, 0, 0]  # the face written, whatever its rank


def test_a_tie_goes_to_the_person_seen_first_and_the_other_frames_have_no_face():
    # a scene cut: A in frames 0-2, then B in frames 3-5 (3 frames each); A came first
    frames = [[(A, 0.8)], [(A, 0.8)], [(A, 0.8)], [(B, 0.95)], [(B, 0.95)], [(B, 0.95)]]
    rows = tracking.follow_person(face_rows(frames))
    assert rows.success.tolist() == [True, True, True, False, False, False]
    np.testing.assert_allclose(rows.confidence, [0.8, 0.8, 0.8, 0.95, 0.95, 0.95])  # no face: the frame's best
    assert np.isnan(rows.box[3:]).all() and np.isnan(rows.au[3:]).all() and (rows.detection[3:] == -1).all()
    np.testing.assert_allclose(rows.timestamp, np.arange(6) / 10)


def test_a_frame_without_any_face_keeps_its_best_score():
    frames = [[(A, 0.8)], [], [(A, 0.8)]]
    rows = tracking.follow_person(face_rows(frames, best_seen=0.3))
    assert rows.success.tolist() == [True, False, True]
    np.testing.assert_allclose(rows.confidence, [0.8, 0.3, 0.8])


@pytest.mark.parametrize(("gap", "followed"), [(2, [True, False, False, True, True, True]),
                                               (1, [False, False, False, True, True, True])])
def test_the_gap_rule_decides_whether_a_return_is_the_same_person(gap, followed):
    # A, two frames away, A again for three frames: within a gap of 2 it is one track of 4 frames;
    # with a gap of 1 the return is a new track of 3 frames, longer than the first (1 frame)
    frames = [[(A, 0.9)], [], [], [(A, 0.9)], [(A, 0.9)], [(A, 0.9)]]
    rows = tracking.follow_person(face_rows(frames), gap)
    assert rows.success.tolist() == followed


def test_following_again_gives_the_same_rows():
    frames = [[(B, 0.99), (A, 0.9)], [(A + 1, 0.9)], [], [(B, 0.9), (A + 2, 0.8)], [(B, 0.9)]]
    once = tracking.follow_person(face_rows(frames))
    twice = tracking.follow_person(once)
    for name in once:
        np.testing.assert_array_equal(once[name], twice[name], err_msg=name)


def test_no_face_anywhere_is_one_no_face_row_per_frame():
    rows = tracking.follow_person(face_rows([[], []], best_seen=0.4))
    assert rows.frame.tolist() == [0, 1] and not rows.success.any()
    np.testing.assert_allclose(rows.confidence, 0.4)
    assert len(tracking.follow_person(FaceRows.empty(0))) == 0


def test_primary_tables_hold_the_person_and_au45_uses_their_own_baseline():
    # A's eyes are open 0.30 (and 0.15 once: a blink); B's, much wider, 0.9: a baseline over both faces
    # would be B's and put A's open eyes at AU45 = 5 * (1 - 0.3 / 0.9)
    frames = [[(B, 0.9), (A, 0.3)], [(B + 1, 0.9), (A, 0.3)], [(A, 0.15)], [(A + 1, 0.3)], [(A + 2, 0.3)]]
    rows = face_rows(frames)
    table = build_tables(rows, PRIMARY, 640, 360)["main"]
    np.testing.assert_array_equal(table["face_x1"], [10, 10, 10, 11, 12])
    np.testing.assert_array_equal(table["face_id"], [0, 0, 0, 0, 0])
    expected = blink.au45(np.array([0.3, 0.3, 0.15, 0.3, 0.3]), np.array([0.3, 0.3, 0.15, 0.3, 0.3]),
                          np.ones(5, bool))
    np.testing.assert_allclose(table["AU45_r"], expected)
    np.testing.assert_allclose(table["AU45_r"], [0, 0, 2.5, 0, 0], atol=1e-6)
    # … while "best" (whose workers measure the best detection of each frame only: rank 0) writes B, then A,
    # with one baseline over both
    measured_best = rows.take(np.flatnonzero(rows.detection <= 0))
    best = build_tables(measured_best, OutputOptions(faces=FacesMode.BEST, plots=False), 640, 360)["main"]
    np.testing.assert_array_equal(best["face_x1"], [300, 301, 10, 11, 12])
    assert best["AU45_r"][2] > 4  # A's blink against B's wide eyes


def test_written_rows_leave_best_and_all_as_measured():
    rows = face_rows([[(B, 0.9), (A, 0.3)], [(A, 0.3)]])
    for faces in (FacesMode.BEST, FacesMode.ALL):
        assert written_rows(rows, OutputOptions(faces=faces)) is rows
    assert len(written_rows(rows, PRIMARY)) == 2


def test_face_detected_column_only_when_following():
    rows = face_rows([[(A, 0.9)], [(A + 1, 0.9)], [(A + 2, 0.9)], []])
    rows.detected[:] = [True, False, False, True]
    plain = build_tables(rows, PRIMARY, 640, 360)["main"]
    assert tuple(plain) == COLUMNS and FACE_DETECTED not in plain
    following = OutputOptions(faces=FacesMode.PRIMARY, plots=False, detect_every=3)
    table = build_tables(rows, following, 640, 360)["main"]
    assert tuple(table) == (*IDENTITY, FACE_DETECTED, *COLUMNS[len(IDENTITY):])
    lines = csv_text(table).splitlines()
    assert lines[0].startswith("frame,face_id,timestamp,confidence,success,face_detected,face_x1")
    assert [line.split(",")[5] for line in lines[1:]] == ["1", "0", "0", "1"]
    # OpenFace 2.2's style: after OpenFace 2.2's own columns
    of2 = table_text(table, CsvStyle.OPENFACE2).splitlines()
    assert of2[0].endswith(", face_detected") and of2[0].count("face_detected") == 1
    assert [line.rsplit(",", 1)[1].strip() for line in of2[1:]] == ["1", "0", "0", "1"]
    assert FACE_DETECTED not in table_text(plain, CsvStyle.OPENFACE2).splitlines()[0]
