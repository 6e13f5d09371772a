"""From a video's measured rows to tables: column name -> one value per row, the columns of ``schema.GROUPS``
(and ``schema.MIRROR_GROUPS`` for each hemi-face): face ids, AU45 against each face's own baseline, emotion
probabilities, AU occurrence, head pose. With ``faces = "primary"`` the rows are first reduced to the one
person followed (``written_rows``, ``tracking.follow_person``)."""

from __future__ import annotations

import numpy as np

from ..core import blink, pose, tracking
from ..core.pipeline import FacesMode
from ..core.results import FaceRows, in_order
from ..core.schema import (
    AU45_R,
    AU_THRESHOLD,
    AUS_C,
    AUS_R,
    BOX,
    CONFIDENCE,
    EMOTION_LABEL,
    EMOTION_PROBS,
    EMOTIONS,
    EYE_OPEN,
    EYE_OPEN_LEFT,
    EYE_OPEN_RIGHT,
    FACE_DETECTED,
    FACE_ID,
    FRAME,
    GAZE,
    LANDMARKS,
    MIRROR_COLUMNS,
    POSE,
    SIDES,
    SUCCESS,
    TIMESTAMP,
    columns,
)
from .options import OutputOptions

Table = dict[str, np.ndarray]  # column -> values (float, NaN = missing; "emotion": str)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def written_rows(rows: FaceRows, options: OutputOptions) -> FaceRows:
    """The rows a result writes: with ``faces = "primary"`` one per frame for the person followed (the
    longest-tracked face, ``tracking.follow_person``), otherwise the rows as measured. Applying it to rows it
    returned gives them back unchanged."""
    if options.faces == FacesMode.PRIMARY:
        return tracking.follow_person(rows, options.track_gap_frames)
    return rows


def face_ids(rows: FaceRows, options: OutputOptions) -> np.ndarray:
    """0 on every row (one face per frame: primary, best), or ids that follow each person (all faces; NaN:
    no face)."""
    if options.faces != FacesMode.ALL:
        return np.zeros(len(rows))
    return tracking.assign_ids(rows.frame, rows.success, rows.box, options.track_gap_frames)


def per_face_au45(right: np.ndarray, left: np.ndarray, success: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """AU45 with each face's own baseline (the 95th percentile of that face's openness)."""
    out = np.full(len(ids), np.nan)
    for face in np.unique(ids[np.isfinite(ids)]):
        rows = ids == face
        out[rows] = blink.au45(right[rows], left[rows], success[rows])
    return out


def _measurements(table: Table, ok: np.ndarray, box, gaze, emotion, au, au45) -> None:
    """The columns a main and a hemi-face table share, blank where there is no face."""
    def put(names, values) -> None:
        values = np.asarray(values, np.float64).reshape(len(ok), len(names))
        for i, name in enumerate(names):
            table[name] = np.where(ok, values[:, i], np.nan)

    put(BOX, box)
    put(GAZE, gaze)
    probs = softmax(np.asarray(emotion, np.float64))
    labels = np.array(EMOTIONS, dtype=object)[np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1)]
    table[EMOTION_LABEL] = np.where(ok, labels, "")
    put(EMOTION_PROBS, probs)
    put(AUS_R, au)
    table[AU45_R] = np.where(ok, au45, np.nan)
    put(AUS_C, np.where(np.isfinite(au), (np.asarray(au) >= AU_THRESHOLD).astype(np.float64), np.nan))


def _landmark_columns(rows: FaceRows, ok: np.ndarray) -> Table:
    """``x_0 … x_97, y_0 … y_97``, blank where there is no face: columns of one block (views, not 196 arrays);
    without landmarks at all (AU45 off: STAR never ran) one blank column stands for every name."""
    landmarks = rows.landmarks
    if rows.blank("landmarks") or not np.isfinite(landmarks).any():
        blank = np.full(len(ok), np.nan, landmarks.dtype)
        return dict.fromkeys(LANDMARKS, blank)
    points = np.where(ok[:, None], np.concatenate([landmarks[:, :, 0], landmarks[:, :, 1]], axis=1), np.nan)
    return {name: points[:, i] for i, name in enumerate(LANDMARKS)}


def build_tables(rows: FaceRows, options: OutputOptions, width: int, height: int) -> dict[str, Table]:
    """``{"main": table}`` plus ``"left_mirrored"`` and ``"right_mirrored"`` with ``mirror``; rows ordered by
    frame, then face id (assembled rows come by detector rank, which is not the id). With ``faces = "primary"``
    the rows of the person followed only (``written_rows``); with ``detect_every`` > 1 a ``face_detected``
    column after the identity group."""
    return tables_of_written(written_rows(rows, options), options, width, height)


def tables_of_written(rows: FaceRows, options: OutputOptions, width: int, height: int) -> dict[str, Table]:
    """``build_tables`` of rows ``written_rows`` gave already (the results writer holds them: the person is
    followed once)."""
    ids = face_ids(rows, options)
    order = np.lexsort((np.nan_to_num(ids, nan=-1.0), rows.frame))
    if not in_order(order):  # in order already (one row a frame): no copy of the rows
        rows, ids = rows.take(order), ids[order]
    ok = rows.success.astype(bool)
    identity: Table = {
        FRAME: rows.frame + 1.0,
        FACE_ID: ids,
        TIMESTAMP: rows.timestamp.astype(np.float64),
        CONFIDENCE: rows.confidence.astype(np.float64),
        SUCCESS: ok.astype(np.float64),
        FACE_DETECTED: rows.detected.astype(np.float64),
    }
    right, left = rows.eye_open[:, 0], rows.eye_open[:, 1]
    main: Table = dict(identity)
    _measurements(main, ok, rows.box, rows.gaze, rows.emotion, rows.au,
                  per_face_au45(right, left, ok, ids))
    poses = (np.full((len(rows), len(POSE)), np.nan) if rows.blank("landmarks")  # AU45 off: no landmarks, no pose
             else pose.estimate_poses(rows.landmarks, width, height, pose.camera_for(width, height, *options.camera)))
    for i, name in enumerate(POSE):
        main[name] = np.where(ok, poses[:, i], np.nan)
    main[EYE_OPEN_RIGHT] = np.where(ok, right, np.nan)
    main[EYE_OPEN_LEFT] = np.where(ok, left, np.nan)
    main.update(_landmark_columns(rows, ok))
    tables = {"main": {c: main[c] for c in columns(options.detect_every > 1)}}
    if options.mirror:
        kept_eye = {"left_mirrored": left, "right_mirrored": right}  # each side keeps the subject's own eye
        for s, side in enumerate(SIDES):
            eye = kept_eye[side]
            table: Table = dict(identity)
            _measurements(table, ok, rows.mirror_box[:, s], rows.mirror_gaze[:, s], rows.mirror_emotion[:, s],
                          rows.mirror_au[:, s], per_face_au45(eye, eye, ok, ids))
            table[EYE_OPEN] = np.where(ok, eye, np.nan)
            tables[side] = {c: table[c] for c in MIRROR_COLUMNS}
    return tables
