"""From a video's measured rows to the files a user reads: the CSV(s), the sidecar JSON and the plot.

``build_tables`` turns the assembled ``FaceRows`` into tables (column name -> one value per row, the
columns of ``schema.GROUPS``): face ids, AU45 against each face's own baseline, emotion probabilities,
AU occurrence, head pose. ``write_outputs`` writes them atomically: the sidecar first, then the plot,
the hemi-face CSVs, and the main CSV last, so the main CSV's presence means the result is complete.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from . import blink, pose, tracking
from .atomic import atomic_write, atomic_write_text
from .pipeline import FacesMode
from .results import FaceRows
from .schema import AU_THRESHOLD, AUS_C, AUS_R, BOX, COLUMNS, EMOTIONS, GAZE, LANDMARKS, MIRROR_COLUMNS, POSE, SIDES

Table = dict[str, np.ndarray]  # column -> values (float, NaN = missing; "emotion": str)


class CsvStyle(StrEnum):
    AUD = "aud"
    OPENFACE2 = "openface2"  # OpenFace 2.2 FeatureExtraction's names, order and formatting


@dataclass(frozen=True)
class OutputOptions:
    faces: FacesMode = FacesMode.PRIMARY
    csv_style: CsvStyle = CsvStyle.AUD
    plots: bool = True
    mirror: bool = False
    mirror_videos: bool = False  # with mirror: the inspection videos beside the CSVs
    track_gap_frames: int = tracking.DEFAULT_GAP
    camera: tuple[float | None, float | None, float | None, float | None] = (None, None, None, None)  # fx fy cx cy


class AssemblyError(RuntimeError):
    """The stored rows do not cover the video's frames (an internal error, never the user's)."""


def assemble(parts: list[FaceRows], expected_frames: np.ndarray) -> FaceRows:
    """All shards' rows in frame order; every expected frame must be there."""
    rows = FaceRows.concat(parts)
    pairs = np.stack([rows.frame, rows.detection.astype(np.int64)], axis=1)
    if len(np.unique(pairs, axis=0)) != len(rows):
        raise AssemblyError(f"assembled {len(rows)} rows with some (frame, face) twice: a shard was stored twice")
    found = rows.frames()
    if not np.array_equal(found, expected_frames):
        missing = np.setdiff1d(expected_frames, found)
        raise AssemblyError(f"assembled {len(found)} frames, expected {len(expected_frames)}"
                            + (f" (missing from frame {int(missing[0]) + 1})" if missing.size else ""))
    return rows


# --- tables -----------------------------------------------------------------------------------------

def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def face_ids(rows: FaceRows, options: OutputOptions) -> np.ndarray:
    """0 on every row (primary face), or ids that follow each person (all faces; NaN: no face)."""
    if options.faces == FacesMode.PRIMARY:
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
    table["emotion"] = np.where(ok, labels, "")
    put([f"emotion_{e}" for e in EMOTIONS], probs)
    put(AUS_R, au)
    table["AU45_r"] = np.where(ok, au45, np.nan)
    put(AUS_C, np.where(np.isfinite(au), (np.asarray(au) >= AU_THRESHOLD).astype(np.float64), np.nan))


def build_tables(rows: FaceRows, options: OutputOptions, width: int, height: int) -> dict[str, Table]:
    """``{"main": table}`` plus ``"left_mirrored"`` and ``"right_mirrored"`` with ``mirror``; rows ordered by
    frame, then face id (assembled rows come by detector rank, which is not the id)."""
    ids = face_ids(rows, options)
    order = np.lexsort((np.nan_to_num(ids, nan=-1.0), rows.frame))
    rows, ids = rows.take(order), ids[order]
    ok = rows.success.astype(bool)
    identity: Table = {
        "frame": rows.frame + 1.0,
        "face_id": ids,
        "timestamp": rows.timestamp.astype(np.float64),
        "confidence": rows.confidence.astype(np.float64),
        "success": ok.astype(np.float64),
    }
    right, left = rows.eye_open[:, 0], rows.eye_open[:, 1]
    main: Table = dict(identity)
    _measurements(main, ok, rows.box, rows.gaze, rows.emotion, rows.au,
                  per_face_au45(right, left, ok, ids))
    poses = pose.estimate_poses(rows.landmarks, width, height, pose.camera_for(width, height, *options.camera))
    for i, name in enumerate(POSE):
        main[name] = np.where(ok, poses[:, i], np.nan)
    main["eye_open_right"] = np.where(ok, right, np.nan)
    main["eye_open_left"] = np.where(ok, left, np.nan)
    points = np.concatenate([rows.landmarks[:, :, 0], rows.landmarks[:, :, 1]], axis=1)
    for i, name in enumerate(LANDMARKS):
        main[name] = np.where(ok, points[:, i], np.nan)
    tables = {"main": {c: main[c] for c in COLUMNS}}
    if options.mirror:
        kept_eye = {"left_mirrored": left, "right_mirrored": right}  # each side keeps the subject's own eye
        for s, side in enumerate(SIDES):
            eye = kept_eye[side]
            table: Table = dict(identity)
            _measurements(table, ok, rows.mirror_box[:, s], rows.mirror_gaze[:, s], rows.mirror_emotion[:, s],
                          rows.mirror_au[:, s], per_face_au45(eye, eye, ok, ids))
            table["eye_open"] = np.where(ok, eye, np.nan)
            tables[side] = {c: table[c] for c in MIRROR_COLUMNS}
    return tables


# --- CSV text ---------------------------------------------------------------------------------------

INTEGER_COLUMNS = frozenset({"frame", "face_id", "success", *AUS_C})


def _format(name: str, values: np.ndarray) -> list[str]:
    if name == "emotion":
        return [str(v) for v in values]
    # Python floats (``tolist``) format several times faster than NumPy scalars, to the same text
    if name == "timestamp":
        return [format(v, ".6f") for v in values.tolist()]
    if name in INTEGER_COLUMNS:
        cells = [str(int(v)) if math.isfinite(v) else "" for v in values.tolist()]
    else:  # float32 measurements keep their 9 significant digits (enough to round-trip a float32)
        cells = [format(v, ".9g") for v in values.tolist()]
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            cells[i] = ""
    return cells


def csv_text(table: Mapping[str, np.ndarray]) -> str:
    columns = list(table)
    cells = [_format(c, np.asarray(table[c])) for c in columns]
    lines = [",".join(columns)] + [",".join(row) for row in zip(*cells)]
    return "\n".join(lines) + "\n"


def table_text(table: Mapping[str, np.ndarray], style: CsvStyle) -> str:
    if style == CsvStyle.OPENFACE2:
        from .openface2 import openface2_text

        return openface2_text(table)
    return csv_text(table)


# --- files ------------------------------------------------------------------------------------------

def sidecar_path(csv_path: Path) -> Path:
    return Path(csv_path).with_suffix(".json")


def plot_path(csv_path: Path) -> Path:
    return Path(csv_path).with_suffix(".png")


def side_path(csv_path: Path, side: str) -> Path:
    """``<stem>.left_mirrored.csv`` beside ``<stem>.csv``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}.{side}.csv")


def output_paths(csv_path: Path, options: OutputOptions) -> list[Path]:
    """Every file a result consists of, the main CSV last."""
    paths = [sidecar_path(csv_path)]
    if options.plots:
        paths.append(plot_path(csv_path))
    if options.mirror:
        paths += [side_path(csv_path, side) for side in SIDES]
    return [*paths, Path(csv_path)]


def inspection_faces(rows: FaceRows, frames: int) -> list:
    """Per frame of the video, the face the inspection videos show (its best detection), or None."""
    from .mirror import FaceGeometry

    faces: list = [None] * frames
    for i in np.flatnonzero(rows.success & (rows.detection == 0)):
        faces[int(rows.frame[i])] = FaceGeometry(rows.landmarks[i].astype(np.float64), rows.box[i].astype(np.float64))
    return faces


def write_outputs(csv_path: Path, tables: dict[str, Table], sidecar: dict, options: OutputOptions,
                  title: str = "", videos: Callable[[Path], object] | None = None) -> list[Path]:
    """Sidecar, plot, inspection videos (``videos(folder)`` renders them), hemi-face CSVs, then the main
    CSV; each atomic. The main CSV appears complete or not at all, and last: once it is there,
    everything else of the result is too."""
    csv_path = Path(csv_path)
    atomic_write_text(sidecar_path(csv_path), json.dumps(sidecar, indent=2, default=str) + "\n")
    if videos is not None:
        videos(csv_path.parent)
    if options.plots:
        from ..plot import render_png

        png = render_png(tables, title or csv_path.stem)
        atomic_write(plot_path(csv_path), lambda f: f.write(png))
    for side in SIDES if options.mirror else ():
        atomic_write_text(side_path(csv_path, side), table_text(tables[side], options.csv_style))
    atomic_write_text(csv_path, table_text(tables["main"], options.csv_style))
    return output_paths(csv_path, options)


def discard_partial(csv_path: Path, options: OutputOptions) -> None:
    """After a failed write: the parts written before the main CSV (sidecar, plot, hemi-face CSVs) go,
    so nothing half-done stays beside other results while the job waits to write again."""
    if Path(csv_path).exists():
        return
    for part in output_paths(csv_path, options)[:-1]:
        try:
            Path(part).unlink(missing_ok=True)
        except OSError:  # the folder itself is unusable (the reason the write failed): nothing to remove
            pass


def read_csv(path: Path) -> list[dict[str, str]]:
    """Read a CSV written here back as dicts (tests and tools)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
