"""aud's results in the CSV style of OpenFace 2.2's ``FeatureExtraction`` (``csv_style = "openface2"``), so that
scripts written for OpenFace 2.2 read them unchanged.

**Header, order, formatting** are those of OpenFace 2.2.0's ``RecorderCSV`` (``lib/local/Utilities/src/
RecorderCSV.cpp``; the columns are explained at https://github.com/TadasBaltrusaitis/OpenFace/wiki/Output-Format):
fields separated by ``", "`` (comma and space, in the header too; later commits on OpenFace's master branch
write a bare ``","``, so readers of OpenFace CSVs either strip the names or read with ``skipinitialspace``),
fixed-point numbers with its precisions: timestamp 3 decimals, confidence 2, success 0/1, gaze angles 3,
pose translation 1 and rotation 3, 2D landmarks 1, ``AUxx_r`` 2, ``AUxx_c`` 1 — for the values OpenFace 2.2
defines. The MTL's AU scores are not OpenFace 2.2's 0-5 intensities (they are cosine scores in [−1, 1], where
left–right differences of a few thousandths matter), so they keep aud's full precision (9 significant digits,
``_full``) under OpenFace 2.2's ``AUxx_r`` names. The full header
(``OPENFACE2_HEADER``, 714 names) is OpenFace's with its default outputs: 56 eye landmarks, 68 face landmarks,
34 shape parameters, 17 AU intensities and 18 AU occurrences (names sorted, as ``RecorderCSV`` sorts them).

**What aud writes** (``COLUMNS``, in OpenFace 2.2's order): every column of that header that aud measures —

* ``frame, face_id, timestamp, confidence, success`` (``face_id`` empty on a row for a frame without a face
  when all faces are tracked; ``confidence`` is aud's detector score);
* ``gaze_angle_x, gaze_angle_y`` = the MTL's ``gaze_yaw, gaze_pitch``, unchanged. OpenFace 2.2's angles are
  ``atan2(g.x, -g.z)`` and ``atan2(g.y, -g.z)`` of the mean gaze vector g in the camera frame (X right, Y down):
  positive x = looking towards the image's right, positive y = looking down. OpenFace 3.0 does not document
  the sign convention of its gaze head and the shared random-weight model cannot reveal it, so aud passes the
  values through (``GAZE_SIGNS``) — check it once with trained weights (look towards the image's right: the
  value should rise) and flip a sign there if not;
* ``pose_Tx … pose_Rz`` from ``daemon.core.pose`` (``schema.POSE``) (OpenFace 2.2's frame and Euler angles);
* ``x_0 … x_67, y_0 … y_67``: the 68 iBUG points taken from STAR's 98 (``wflw.TO_IBUG68``);
* ``AU01_r, AU02_r, AU04_r, AU06_r, AU09_r, AU12_r, AU25_r, AU26_r`` (the MTL's raw scores — a different scale
  from OpenFace 2.2's 0-5 intensities, written in full), ``AU45_r`` (aud's blink, 0-5, 2 decimals as
  OpenFace 2.2's), and ``AU01_c … AU26_c`` (1 when
  ``AUxx_r`` ≥ ``schema.AU_THRESHOLD``) and ``AU45_c`` (1 when ``AU45_r`` ≥ ``schema.BLINK_AU45``: the eyes at
  most half as open as the video's usual open eye).

After OpenFace 2.2's columns, aud's own ``face_detected`` when faces are followed between detections
(``--detect-every`` > 1; ``header_for`` adds it): 1 for a detected box, 0 for a followed one.

**Hemi-face CSVs** (``--mirror``; ``HEMI_COLUMNS``): the same header less what a hemi-face table does not
have — pose and landmarks belong to the whole face, so they are in the main CSV only.

**Left out** (``LEFT_OUT``): the columns aud does not measure — the per-eye 3D gaze vectors, the 56 eye-region
landmarks in 2D and 3D, the 68 landmarks in 3D, the shape-model parameters, and the AUs the MTL has no head
for (AU05, AU07, AU10, AU14, AU15, AU17, AU20, AU23, AU28).

**Missing values.** Where OpenFace 2.2 writes 0 in every measurement of a failed frame, aud leaves the field
empty, so that no zero is taken for a measurement; the empty field is written without the space (``"1,, 2"``),
which pandas reads as NaN in a numeric column with or without ``skipinitialspace``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from ..core import wflw
from ..core.schema import (
    AU45_R,
    AU_NUMBERS,
    AU_THRESHOLD,
    BLINK_AU45,
    CONFIDENCE,
    FACE_DETECTED,
    FACE_ID,
    FOLLOWING,
    FRAME,
    GAZE_PITCH,
    GAZE_YAW,
    IDENTITY,
    MIRROR_COLUMNS,
    POSE,
    POSE_T,
    SUCCESS,
    TIMESTAMP,
    au_name,
    landmark_x,
    landmark_y,
)
from .options import CHUNK_ROWS
from .pieces import lines_in_pieces

SEPARATOR = ", "
GAZE_SIGNS = (1.0, 1.0)  # gaze_angle_x = sign · gaze_yaw, gaze_angle_y = sign · gaze_pitch

OPENFACE2_AU_R = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15", "AU17",
                  "AU20", "AU23", "AU25", "AU26", "AU45")
OPENFACE2_AU_C = OPENFACE2_AU_R[:-1] + ("AU28", "AU45")
MTL_AUS = tuple(au_name(n, "r")[:-2] for n in AU_NUMBERS)  # "AU01" … in the MTL's order


def _openface2_header() -> tuple[str, ...]:
    """FeatureExtraction's header with its default outputs, in RecorderCSV's order."""
    names = list(IDENTITY)  # OpenFace 2.2's first five names are aud's
    names += ["gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z", "gaze_angle_x", "gaze_angle_y"]
    names += [f"eye_lmk_{axis}_{i}" for axis in "xyXYZ" for i in range(56)]
    names += list(POSE)  # OpenFace 2.2's pose names are aud's
    names += [f"{axis}_{i}" for axis in "xyXYZ" for i in range(68)]
    names += ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
    names += [f"{au}_r" for au in OPENFACE2_AU_R] + [f"{au}_c" for au in OPENFACE2_AU_C]
    return tuple(names)


OPENFACE2_HEADER = _openface2_header()


def _fixed(decimals: int) -> Callable[[float], str]:
    fmt = f".{decimals}f"
    return lambda v: format(v, fmt)


def _integer(v: float) -> str:
    return str(int(v))


def _full(v: float) -> str:
    """aud's own precision: 9 significant digits round-trip a float32 (as ``text.csv_text``)."""
    return format(v, ".9g")


def _source_columns() -> dict[str, tuple[str, Callable[[float], str]]]:
    """OpenFace 2.2 name -> (aud table column, formatter)."""
    spec: dict[str, tuple[str, Callable[[float], str]]] = {
        FRAME: (FRAME, _integer),
        FACE_ID: (FACE_ID, _integer),
        TIMESTAMP: (TIMESTAMP, _fixed(3)),
        CONFIDENCE: (CONFIDENCE, _fixed(2)),
        SUCCESS: (SUCCESS, _integer),
        FACE_DETECTED: (FACE_DETECTED, _integer),  # aud's, written after OpenFace 2.2's columns (text.py)
        "gaze_angle_x": (GAZE_YAW, _fixed(3)),
        "gaze_angle_y": (GAZE_PITCH, _fixed(3)),
    }
    for name in POSE:
        spec[name] = (name, _fixed(1 if name in POSE_T else 3))
    for k, point in enumerate(wflw.TO_IBUG68):
        spec[landmark_x(k)] = (landmark_x(point), _fixed(1))
        spec[landmark_y(k)] = (landmark_y(point), _fixed(1))
    for number in AU_NUMBERS:  # the MTL's scores: no OpenFace 2.2 precision applies
        spec[au_name(number, "r")] = (au_name(number, "r"), _full)
    spec[AU45_R] = (AU45_R, _fixed(2))  # aud's AU45 is on OpenFace 2.2's 0-5 scale
    for number in (*AU_NUMBERS, 45):
        spec[au_name(number, "c")] = (au_name(number, "c"), _fixed(1))
    return spec


_SOURCES = _source_columns()
COLUMNS: tuple[str, ...] = tuple(name for name in OPENFACE2_HEADER if name in _SOURCES)
LEFT_OUT: tuple[str, ...] = tuple(name for name in OPENFACE2_HEADER if name not in _SOURCES)


def _in_hemi_table(name: str) -> bool:
    source = _SOURCES[name][0]
    return source in MIRROR_COLUMNS or (name.endswith("_c") and _SOURCES[f"{name[:-2]}_r"][0] in MIRROR_COLUMNS)


HEMI_COLUMNS: tuple[str, ...] = tuple(name for name in COLUMNS if _in_hemi_table(name))

OF3_PREFIX = "of3_"  # OpenFace 3.0's AUs after OpenFace 2.2's, when both are written
BLINK_PREFIX = "aud_"  # aud's AU45 (eye openness) after OpenFace 2.2's
OF2_SOURCE_PREFIX = "of2_"  # the aud table's OpenFace 2.2 AU columns (schema.OF2_AUS)


def _with_openface2_aus() -> tuple[tuple[str, ...], dict[str, tuple[str, Callable[[float], str]]]]:
    """Columns and sources when the table holds OpenFace 2.2's AUs: theirs under OpenFace 2.2's names (as
    ``RecorderCSV::WriteLine`` writes them: intensities with 2 decimals, occurrences with 1), then OpenFace
    3.0's under ``of3_`` (full precision) and aud's AU45 under ``aud_``."""
    spec = {k: v for k, v in _SOURCES.items() if not k.startswith("AU")}
    for au in OPENFACE2_AU_R:
        spec[f"{au}_r"] = (f"{OF2_SOURCE_PREFIX}{au}_r", _fixed(2))
    for au in OPENFACE2_AU_C:
        spec[f"{au}_c"] = (f"{OF2_SOURCE_PREFIX}{au}_c", _fixed(1))
    names = [name for name in OPENFACE2_HEADER if name in spec]
    for au in MTL_AUS:
        spec[f"{OF3_PREFIX}{au}_r"] = _SOURCES[f"{au}_r"]
        spec[f"{OF3_PREFIX}{au}_c"] = _SOURCES[f"{au}_c"]
    spec[f"{BLINK_PREFIX}{AU45_R}"] = _SOURCES[AU45_R]
    spec[f"{BLINK_PREFIX}AU45_c"] = _SOURCES["AU45_c"]
    names += [f"{OF3_PREFIX}{au}_r" for au in MTL_AUS] + [f"{BLINK_PREFIX}{AU45_R}"]
    names += [f"{OF3_PREFIX}{au}_c" for au in MTL_AUS] + [f"{BLINK_PREFIX}AU45_c"]
    return tuple(names), spec


COLUMNS_WITH_OF2, _SOURCES_WITH_OF2 = _with_openface2_aus()


def _in_hemi_table_with_of2(name: str) -> bool:
    source = _SOURCES_WITH_OF2[name][0]
    return source in MIRROR_COLUMNS or source.startswith(OF2_SOURCE_PREFIX) or (
        name.endswith("_c") and f"{name[:-2]}_r" in _SOURCES_WITH_OF2
        and _SOURCES_WITH_OF2[f"{name[:-2]}_r"][0] in MIRROR_COLUMNS)


HEMI_COLUMNS_WITH_OF2: tuple[str, ...] = tuple(n for n in COLUMNS_WITH_OF2 if _in_hemi_table_with_of2(n))


def _sources(table: Mapping[str, np.ndarray | Sequence]) -> Mapping[str, tuple[str, Callable[[float], str]]]:
    return _SOURCES_WITH_OF2 if f"{OF2_SOURCE_PREFIX}AU01_r" in table else _SOURCES


def header_for(table: Mapping[str, np.ndarray | Sequence], hemi: bool = False) -> tuple[str, ...]:
    """The columns to write for ``table``: with OpenFace 2.2's AUs in it (``of2_*``), theirs under OpenFace
    2.2's names, then OpenFace 3.0's (``of3_*``, left out with au_models = "openface2") and aud's AU45;
    else ``COLUMNS``; a hemi-face table's (``hemi``) less pose and landmarks. aud's own columns OpenFace 2.2
    does not have (``schema.FOLLOWING``: ``face_detected``) come last, in the main table."""
    following = () if hemi else tuple(c for c in FOLLOWING if c in table)
    if f"{OF2_SOURCE_PREFIX}AU01_r" not in table:
        return (*(HEMI_COLUMNS if hemi else COLUMNS), *following)
    names = HEMI_COLUMNS_WITH_OF2 if hemi else COLUMNS_WITH_OF2
    if au_name(AU_NUMBERS[0], "r") not in table:  # au_models = "openface2": no OpenFace 3.0 AUs
        names = tuple(n for n in names if not n.startswith(OF3_PREFIX))
    return (*names, *following)


class TableError(ValueError):
    """The table handed to ``openface2_chunks`` lacks a column or has columns of different lengths."""


def openface2_chunks(table: Mapping[str, np.ndarray | Sequence], header: Sequence[str] | None = None,
                     rows: int = CHUNK_ROWS) -> Iterator[str]:
    """The OpenFace 2.2-style CSV text for ``table`` in pieces (the header line, then ``rows`` rows at a time):
    aud's column names (``frame``, ``face_id``, ``timestamp``, ``confidence``, ``success``, ``gaze_yaw``,
    ``gaze_pitch``, ``pose_*``, ``AUxx_r``, optionally ``AUxx_c``, ``x_0 … x_97``, ``y_0 … y_97``) -> one value
    per row; numbers as floats with NaN for missing (``face_id`` NaN for a row without a face). Other columns
    (emotion, box, eye openness) are ignored. ``header``: the columns to write (default: ``header_for(table)``;
    ``HEMI_COLUMNS`` for a hemi-face table). A table that lacks a column raises ``TableError`` here, before
    the first piece."""
    header = header_for(table) if header is None else header
    sources = _sources(table)
    columns = {name: _column(table, name, sources) for name in header}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{name}: {len(v)}" for name, v in columns.items() if len(v) != len(columns["frame"]))
        raise TableError(f"openface2: columns differ in length from 'frame' ({len(columns['frame'])} rows): {sizes}")

    def cells(name: str, values: np.ndarray) -> list[str]:
        return [sources[name][1](v) if np.isfinite(v) else "" for v in values]

    return lines_in_pieces(SEPARATOR.join(header) + "\n", columns, cells, _join, rows)


def openface2_text(table: Mapping[str, np.ndarray | Sequence], header: Sequence[str] | None = None) -> str:
    """``openface2_chunks`` as one string."""
    return "".join(openface2_chunks(table, header))


def _join(fields: Sequence[str]) -> str:
    """Fields joined by ", ", except that an empty field follows a bare "," (read as NaN, not as " ")."""
    parts = [fields[0]]
    for f in fields[1:]:
        parts.append(SEPARATOR + f if f else ",")
    return "".join(parts)


def _column(table: Mapping[str, np.ndarray | Sequence], name: str,
            sources: Mapping[str, tuple[str, Callable[[float], str]]] = _SOURCES) -> np.ndarray:
    source = sources[name][0]
    if name.endswith("_c") and source not in table:
        return _occurrence(table, source[:-2])
    if source not in table:
        raise TableError(f"openface2: the table has no column {source!r} (needed for {name!r})")
    values = np.asarray(table[source], dtype=np.float64)
    if values.ndim != 1:
        raise TableError(f"openface2: column {source!r} must be one value per row, got shape {values.shape}")
    if name == "gaze_angle_x":
        values = GAZE_SIGNS[0] * values
    elif name == "gaze_angle_y":
        values = GAZE_SIGNS[1] * values
    return values


def _occurrence(table: Mapping[str, np.ndarray | Sequence], au: str) -> np.ndarray:
    """AUxx_c from AUxx_r by aud's rules, NaN where the intensity is missing."""
    intensity = _column(table, f"{au}_r")
    threshold = BLINK_AU45 if f"{au}_r" == AU45_R else AU_THRESHOLD
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(intensity), (intensity >= threshold).astype(np.float64), np.nan)
