"""Face ids that follow the person (``daemon/core/tracking.py``): IoU, optimal assignment, the gap a face may
be missing for, the next unused id for a new face, ids never reused, NaN for frames without a face, and the
id-switch count the end-to-end tests rely on."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.core import tracking

LEFT = np.array([10.0, 10.0, 60.0, 70.0])
RIGHT = np.array([200.0, 12.0, 250.0, 72.0])


def rows(frames: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, success, box) arrays for a list of frames, each a list of boxes in detector-rank order; a
    frame with no box gets one row with success False and a NaN box, as the pipeline writes it."""
    frame, success, box = [], [], []
    for index, boxes in enumerate(frames):
        if not boxes:
            frame.append(index)
            success.append(False)
            box.append(np.full(4, np.nan))
        for b in boxes:
            frame.append(index)
            success.append(True)
            box.append(np.asarray(b, np.float64))
    return np.array(frame), np.array(success), np.array(box)


def ids_of(frames: list[list[np.ndarray]], gap: int = tracking.DEFAULT_GAP) -> list[list[float]]:
    """The ids assigned, grouped per frame like the input."""
    frame, success, box = rows(frames)
    ids = tracking.assign_ids(frame, success, box, gap)
    return [list(ids[frame == f]) for f in range(len(frames))]


def test_iou_of_known_boxes():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 5.0, 5.0]])
    np.testing.assert_allclose(tracking.iou(a, b), [[1.0, 50 / 150, 0.0, 25 / 100]])
    assert tracking.iou(a, b).shape == (1, 4)
    assert tracking.iou(b, a).shape == (4, 1)
    degenerate = np.array([[3.0, 3.0, 3.0, 3.0]])  # zero area on both sides: 0, not a division by zero
    assert tracking.iou(degenerate, degenerate)[0, 0] == 0.0


def test_two_faces_swapping_detector_rank_keep_their_ids():
    """The detector ranks faces by score, so the order of a frame's rows changes when scores do; ids must
    follow the boxes, not the rank. Frame 2 lists the right face first."""
    moved = [LEFT + 2, RIGHT - 2]
    got = ids_of([[LEFT, RIGHT], [LEFT + 1, RIGHT - 1], [moved[1], moved[0]], [LEFT + 3, RIGHT - 3]])
    assert got == [[0, 1], [0, 1], [1, 0], [0, 1]]


def test_assignment_is_optimal_not_greedy():
    """A greedy pass (best pair first) would give track 0's id to the face that overlaps it most and
    leave the other face below the threshold; the optimal assignment maximises the summed IoU."""
    track0 = np.array([0.0, 0.0, 100.0, 100.0])
    track1 = np.array([50.0, 0.0, 150.0, 100.0])
    face_a = np.array([20.0, 0.0, 120.0, 100.0])  # IoU 0.67 with track 0, 0.54 with track 1
    face_b = np.array([-30.0, 0.0, 70.0, 100.0])  # IoU 0.54 with track 0, 0.11 with track 1
    iou = tracking.iou(np.stack([track0, track1]), np.stack([face_a, face_b]))
    np.testing.assert_allclose(iou, [[80 / 120, 70 / 130], [70 / 130, 20 / 180]])
    # greedy: (0, a) first, then (1, b) is below MIN_IOU and face b would get a new id 2
    assert iou[1, 1] < tracking.MIN_IOU and iou[0, 0] + iou[1, 1] < iou[1, 0] + iou[0, 1]
    got = ids_of([[track0, track1], [face_a, face_b]])
    assert got[1] == [1, 0]  # face_a continues track 1, face_b track 0


def test_a_face_missing_up_to_the_gap_keeps_its_id_beyond_it_gets_a_new_one():
    gap = 3
    within = [[LEFT]] + [[]] * gap + [[LEFT + 1]]
    assert ids_of(within, gap)[-1] == [0]
    beyond = [[LEFT]] + [[]] * (gap + 1) + [[LEFT + 1]]
    assert ids_of(beyond, gap)[-1] == [1]
    assert ids_of(beyond, gap + 1)[-1] == [0]


def test_new_faces_get_the_next_unused_id_and_ids_are_never_reused():
    third = np.array([400.0, 10.0, 450.0, 70.0])
    gap = 2
    frames = [[LEFT, RIGHT], [LEFT], [LEFT], [LEFT], [LEFT, RIGHT], [LEFT, RIGHT, third]]
    got = ids_of(frames, gap)
    assert got[0] == [0, 1]
    assert got[4] == [0, 2]  # the right face was gone 3 frames > gap: id 1 is closed, not handed out again
    assert got[5] == [0, 2, 3]


def test_a_far_jump_is_a_new_face():
    """Below ``MIN_IOU`` a box is another face even if it is the only one (a cut to another shot)."""
    elsewhere = LEFT + np.array([300.0, 0.0, 300.0, 0.0])
    assert ids_of([[LEFT], [elsewhere]]) == [[0], [1]]


def test_frames_without_a_face_have_nan_ids():
    frame, success, box = rows([[LEFT], [], [LEFT + 1], []])
    ids = tracking.assign_ids(frame, success, box)
    assert np.isnan(ids[~success]).all() and len(ids) == 4
    np.testing.assert_array_equal(ids[success], [0, 0])
    frame, success, box = rows([[], []])
    assert np.isnan(tracking.assign_ids(frame, success, box)).all()


def test_unsuccessful_rows_are_ignored_even_with_a_box():
    """Only successful rows are tracked: a below-threshold row's box never claims an id."""
    frame, success, box = rows([[LEFT], [LEFT], [LEFT]])
    success[1] = False
    ids = tracking.assign_ids(frame, success, box)
    assert np.isnan(ids[1]) and ids[0] == ids[2] == 0


@pytest.mark.parametrize("swap_at", [1, 2])
def test_id_switches_counts_a_swapped_pair(swap_at):
    frame, success, box = rows([[LEFT, RIGHT]] * 4)
    good = tracking.assign_ids(frame, success, box)
    assert tracking.id_switches(frame, good, box) == 0
    bad = good.copy()
    bad[frame == swap_at] = bad[frame == swap_at][::-1]  # ids of the two faces exchanged in one frame
    assert tracking.id_switches(frame, bad, box) == 4  # into and out of the swapped frame, both faces


def test_id_switches_ignores_gaps_and_non_overlapping_boxes():
    same_place = np.stack([LEFT, LEFT])
    assert tracking.id_switches(np.array([0, 1]), np.array([0.0, 1.0]), same_place) == 1
    assert tracking.id_switches(np.array([0, 2]), np.array([0.0, 1.0]), same_place) == 0  # frame 1 missing
    moved_far = np.stack([LEFT, RIGHT])
    assert tracking.id_switches(np.array([0, 1]), np.array([0.0, 1.0]), moved_far) == 0
    assert tracking.id_switches(np.array([0, 1]), np.array([0.0, np.nan]), same_place) == 0  # no face


def test_csv_rows_are_ordered_by_frame_then_face_id_not_by_detector_rank():
    """Assembled rows come in detector-rank order; the tables (and so the CSV) list them by face id. Frame 1
    ranks the right face first: its rows swap, each row keeping its own box."""
    from daemon.core.pipeline import FacesMode
    from daemon.core.results import FaceRows
    from daemon.output import OutputOptions, build_tables

    frame, success, box = rows([[LEFT, RIGHT], [RIGHT + 1, LEFT + 1], []])
    face_rows = FaceRows.empty(len(frame))
    face_rows.frame[:], face_rows.success[:], face_rows.box[:] = frame, success, box
    face_rows.detection[:] = [0, 1, 0, 1, -1]
    table = build_tables(face_rows, OutputOptions(faces=FacesMode.ALL, plots=False), 640, 360)["main"]
    np.testing.assert_array_equal(table["frame"], [1, 1, 2, 2, 3])
    np.testing.assert_array_equal(table["face_id"], [0, 1, 0, 1, np.nan])
    np.testing.assert_array_equal(table["face_x1"], [LEFT[0], RIGHT[0], LEFT[0] + 1, RIGHT[0] + 1, np.nan])
