"""Assembly's last step for the OpenFace 2.2 AUs: each person's merged median, then ``Predictors.finish``.

A pure function of the assembled rows (per-row projections, segments and merged ``of2_stats``) and the model
set; the shard plan cannot change its result: counts merge by addition, projections are per row, and a
segment's counts go to one face id.

Persons: with the primary face (``faces = "primary"``) the whole video is one person, as for OpenFace 2.2's
FeatureExtraction (one ``FaceAnalyser`` per video). With ``faces = "all"`` a person is a face id
(``tracking.assign_ids``, the ids of the CSV): its median holds the counts of the segments
(``segments.py``) whose rows mostly carry that id. A hemi-face side is a person of its own per face id.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .. import tracking
from ..results import FaceRows
from ..schema import AUS_C, AUS_R, OF2_AUS_C, OF2_AUS_R, SIDES
from . import median
from .formats import load_model_set
from .predict import Predictors
from .segments import series_key


def face_ids(rows: FaceRows, all_faces: bool, gap: int) -> np.ndarray:
    """The CSV's face ids (``output.face_ids``: 0 for the primary face, else ``tracking.assign_ids``)."""
    if not all_faces:  # every frame, found or not, is an entry of the one person's series (as FeatureExtraction)
        return np.zeros(len(rows))
    return tracking.assign_ids(rows.frame, rows.success, rows.box, gap)


def table_order(rows: FaceRows, ids: np.ndarray) -> np.ndarray:
    """The order of the CSV's rows (``output.build_tables``: by frame, then face id)."""
    return np.lexsort((np.nan_to_num(ids, nan=-1.0), rows.frame))


def add_columns(tables: dict[str, dict[str, np.ndarray]], rows: FaceRows, root: Path, all_faces: bool,
                gap: int, only: bool = False) -> None:
    """Add ``of2_AU01_r`` … ``of2_AU45_c`` to the main table and each hemi-face table present, in their row order
    (``root`` = ``<models>/openface2``); ``only`` (``au_models = "openface2"``): OpenFace 3.0's AU columns
    (``schema.AUS_R``, ``AUS_C``) are taken out (aud's blink, ``AU45_r/_c``, stays)."""
    predictors, hog_dims, geom_dims = _load(root)
    ids = face_ids(rows, all_faces, gap)
    order = table_order(rows, ids)
    for series, table in tables.items():
        values = columns(rows, ids, predictors, hog_dims, geom_dims, series)
        table.update({name: v[order] for name, v in values.items()})
        if only:
            for name in (*AUS_R, *AUS_C):
                table.pop(name, None)


def _load(root: Path) -> tuple[Predictors, int, int]:
    model_set = load_model_set(root)
    predictors = Predictors.of(model_set)
    geom_dims = model_set.pdm.mean_shape.size + model_set.pdm.eigen_values.size
    return predictors, predictors.reg.weights.shape[0] - geom_dims, geom_dims


def columns(rows: FaceRows, ids: np.ndarray, predictors: Predictors, hog_dims: int, geom_dims: int,
            series: str = "main") -> dict[str, np.ndarray]:
    """The columns in ``rows``' order for ``series`` ("main" or a side of ``SIDES``). A row without a face is
    blank (NaN); a face the fit failed on is 0, as OpenFace writes a failed frame."""
    side = None if series == "main" else series
    if side is None:
        reg_all, cls_all = rows.of2_r_proj, rows.of2_c_proj
    else:
        s = SIDES.index(side)
        reg_all, cls_all = rows.mirror_of2_r_proj[:, s], rows.mirror_of2_c_proj[:, s]
    ok = rows.success & np.isfinite(reg_all).all(axis=1) & np.isfinite(cls_all).all(axis=1)
    reg_proj = np.where(ok[:, None], reg_all, np.nan)
    cls_proj = np.where(ok[:, None], cls_all, np.nan)
    r_out = np.full((len(rows), len(OF2_AUS_R)), np.nan)
    c_out = np.full((len(rows), len(OF2_AUS_C)), np.nan)
    owner = _segment_owners(rows, ids)
    for face in np.unique(ids[np.isfinite(ids)]):
        mine = np.flatnonzero(ids == face)  # frame order, one row a frame
        keys = [series_key(seg, side) for seg, who in owner.items() if who == face]
        parts = [rows.of2_stats[k] for k in keys if k in rows.of2_stats]
        stats = median.Histograms.merge(parts) if parts else median.Histograms.empty(hog_dims, geom_dims)
        med_r, med_c = person_median(predictors, stats, rows.frame[mine], ok[mine], reg_proj[mine], cls_proj[mine])
        r, c = predictors.finish(rows.frame[mine], reg_proj[mine], cls_proj[mine], med_r, med_c)
        r_out[mine], c_out[mine] = r, c
    face = rows.success.astype(bool)
    r_out[~face], c_out[~face] = np.nan, np.nan
    out = {name: r_out[:, k] for k, name in enumerate(OF2_AUS_R)}
    out.update({name: c_out[:, k] for k, name in enumerate(OF2_AUS_C)})
    return out


def _segment_owners(rows: FaceRows, ids: np.ndarray) -> dict[int, float]:
    """Each segment's face id: the one most of its rows carry (ties: the smallest id)."""
    votes: dict[int, Counter] = {}
    for seg, face in zip(rows.of2_segment.tolist(), ids.tolist()):
        if np.isfinite(face):
            votes.setdefault(int(seg), Counter())[face] += 1
    return {seg: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for seg, c in votes.items()}


def person_median(predictors: Predictors, stats: median.Histograms, frames: np.ndarray, ok: np.ndarray,
                  reg_proj: np.ndarray, cls_proj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``median . w`` per model: from the merged counts, or, when a single frame updated them, that frame's own
    projections (``UpdateRunningMedian``: with one value the median is the descriptor itself)."""
    if stats.count == 1:
        single = np.flatnonzero(ok & np.array([median.counts_frame(int(f)) for f in frames], bool))
        if len(single) == 1:
            return reg_proj[single[0]], cls_proj[single[0]]
        # a face id whose one counted frame sits in another id's segment: the counts' bin centre stands in
    hog, geom = stats.medians()
    return predictors.median_dot(hog, geom)
