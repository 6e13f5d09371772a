"""Segments: the worker's share of "same person" for the median counts (``openface2au.segments``)."""

from __future__ import annotations

import numpy as np

from daemon.core.openface2au.segments import RANKS, Segments, series_key


def test_rows_of_overlapping_boxes_in_consecutive_frames_share_a_segment():
    s = Segments()
    a, b = np.array([0, 0, 10, 10.0]), np.array([50, 0, 60, 10.0])
    assert s.assign(5, [a, b]) == [5 * RANKS, 5 * RANKS + 1]
    assert s.assign(6, [b + 1, a + 1]) == [5 * RANKS + 1, 5 * RANKS]  # matched by overlap, not by rank
    assert s.assign(7, []) == []
    assert s.assign(8, [a]) == [8 * RANKS]  # a frame without faces ends every segment (gap 0)


def test_series_keys():
    assert series_key(-1) == "main" and series_key(-1, "left_mirrored") == "main:left_mirrored"
    assert series_key(5121) == "seg5121" and series_key(3, "right_mirrored") == "seg3:right_mirrored"
