"""Face ids that follow the person across a whole video (``faces = "all"``), and the one person
``faces = "primary"`` writes.

Faces are linked frame to frame by box overlap: in each frame, the faces found are matched to the
tracks seen in the last ``gap + 1`` frames by an optimal assignment (SciPy's ``linear_sum_assignment``)
that maximises the summed IoU between each track's last box and the face's box; a pair counts only
with IoU ≥ ``MIN_IOU``. A face left unmatched starts a new track with the next unused id, so ids are
0, 1, 2 … in order of first appearance. A track not seen for more than ``gap`` frames is closed: its
id is never reused. Linking runs over the assembled video, so shard boundaries never break an id.

``faces = "primary"`` follows one person (``follow_person``): the faces are linked into tracks as above,
and the track with the most frames with a face is the person (ties: the one seen first, the smaller id);
each frame gets that person's row, or a row without a face (``success`` false, ``confidence`` the frame's
best detection score) where the person is not found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .results import FaceRows, blank
from .schema import FIELDS

MIN_IOU = 0.3  # boxes of the same face one frame apart overlap far more; two people side by side far less
DEFAULT_GAP = 30  # frames a face may be missing (turned away, occluded, a missed detection) and keep its id


@dataclass
class _Track:
    id: int
    box: np.ndarray
    last_frame: int


def best_pairs(overlap: np.ndarray) -> list[tuple[int, int]]:
    """The (row, column) pairs of the assignment with the largest summed overlap (SciPy's
    ``linear_sum_assignment``, imported when first needed: importing ``scipy.optimize`` is a noticeable part
    of a process's start-up, and a worker that links no faces never needs it)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [n,4] with every box in ``b`` [m,4] (x1, y1, x2, y2) -> [n, m]."""
    a, b = np.asarray(a, np.float64)[:, None, :], np.asarray(b, np.float64)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def assign_ids(frame: np.ndarray, success: np.ndarray, box: np.ndarray, gap: int = DEFAULT_GAP) -> np.ndarray:
    """A face id per row (float64; NaN for rows without a face). Rows must be ordered by frame."""
    ids = np.full(len(frame), np.nan)
    tracks: list[_Track] = []
    next_id = 0
    rows = np.flatnonzero(success)
    if rows.size == 0:
        return ids
    breaks = np.flatnonzero(np.diff(frame[rows])) + 1
    for group in np.split(rows, breaks):
        current = int(frame[group[0]])
        tracks = [t for t in tracks if current - t.last_frame <= gap + 1]
        matched: dict[int, _Track] = {}
        if tracks:
            overlap = iou(np.stack([t.box for t in tracks]), box[group])
            for ti, fi in best_pairs(overlap):
                if overlap[ti, fi] >= MIN_IOU:
                    matched[int(fi)] = tracks[ti]
        for fi, row in enumerate(group):
            track = matched.get(fi)
            if track is None:
                track = _Track(next_id, box[row], current)
                tracks.append(track)
                next_id += 1
            track.box, track.last_frame = box[row], current
            ids[row] = track.id
    return ids


def longest_track(ids: np.ndarray) -> int | None:
    """The id with the most rows (one a frame per id), ties to the smallest (the first seen); None: no face."""
    valid = ids[np.isfinite(ids)].astype(np.int64)
    return int(np.argmax(np.bincount(valid))) if valid.size else None  # argmax: the first of equal counts


def follow_person(rows: FaceRows, gap: int = DEFAULT_GAP) -> FaceRows:
    """One row per frame for the person ``faces = "primary"`` follows (``longest_track`` of ``assign_ids``):
    the person's row (``detection`` 0: the face written), or a row without a face carrying the frame's
    timestamp, whether it was detected, and its best detection score. Rows must be ordered by frame; the
    result, linked again, gives the same person (their track has no gap longer than ``gap``)."""
    if len(rows) == 0:
        return rows
    frames, first = np.unique(rows.frame, return_index=True)
    ids = assign_ids(rows.frame, rows.success, rows.box, gap)
    person = longest_track(ids)
    theirs = np.flatnonzero(ids == person) if person is not None else np.zeros(0, np.int64)
    at = np.searchsorted(frames, rows.frame[theirs])
    # a field no row holds stays one value (``results.blank``: a long recording's rows are large)
    held = [f for f in FIELDS if not rows.blank(f.name)]
    arrays = {f.name: blank(f, len(frames)) for f in FIELDS} | {f.name: f.empty(len(frames)) for f in held}
    # every frame: its timestamp, whether it was detected, its best detection score; then the person's rows
    arrays["frame"][:], arrays["timestamp"][:] = frames, rows.timestamp[first]
    arrays["detected"][:] = rows.detected[first]
    arrays["confidence"][:] = np.maximum.reduceat(rows.confidence, first)
    for f in held:
        arrays[f.name][at] = rows[f.name][theirs]
    arrays["detection"][at] = 0
    # the OpenFace 2.2 person-median counts, by face segment: the person's rows name theirs
    return FaceRows(arrays, rows.of2_stats)


def id_switches(frame: np.ndarray, ids: np.ndarray, box: np.ndarray, min_iou: float = 0.5) -> int:
    """How often a face whose box overlaps (IoU ≥ ``min_iou``) a box of the previous frame carries
    another id than that box: the number a test of "ids stay with the person" wants to be zero."""
    switches = 0
    valid = np.isfinite(ids)
    frames = np.unique(frame[valid])
    for previous, current in zip(frames, frames[1:]):
        if current != previous + 1:
            continue
        a = np.flatnonzero(valid & (frame == previous))
        b = np.flatnonzero(valid & (frame == current))
        overlap = iou(box[a], box[b])
        for i, j in zip(*np.nonzero(overlap >= min_iou)):
            switches += int(ids[a[i]] != ids[b[j]])
    return switches
