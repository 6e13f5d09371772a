"""Assembly's last step for the OpenFace 2.2 AUs: the merged person median, then ``Predictors.finish``.

A pure function of the assembled rows (their per-row projections and merged ``of2_stats``) and the model set;
the shard plan cannot change its result (integer counts merge by addition, the projections are per row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..results import FaceRows
from ..schema import OF2_AUS_C, OF2_AUS_R, SIDES
from . import median
from .formats import load_model_set
from .predict import Predictors


def columns(rows: FaceRows, root: Path, series: str = "main") -> dict[str, np.ndarray]:
    """``of2_AU01_r`` … ``of2_AU45_c`` for assembled primary-face rows (frame order, one row a frame), with the
    OpenFace 2.2 files under ``root`` (``<models>/openface2``); ``series`` "main" or a hemi-face side of
    ``SIDES``. A row without a face is blank (NaN); a face the fit failed on is 0, as OpenFace writes a failed
    frame."""
    model_set = load_model_set(root)
    predictors = Predictors.of(model_set)
    geom_dims = model_set.pdm.mean_shape.size + model_set.pdm.eigen_values.size
    hog_dims = predictors.reg.weights.shape[0] - geom_dims
    if series == "main":
        reg_all, cls_all = rows.of2_r_proj, rows.of2_c_proj
    else:
        s = SIDES.index(series)
        reg_all, cls_all = rows.mirror_of2_r_proj[:, s], rows.mirror_of2_c_proj[:, s]
    ok = rows.success & np.isfinite(reg_all).all(axis=1) & np.isfinite(cls_all).all(axis=1)
    reg_proj = np.where(ok[:, None], reg_all, np.nan)
    cls_proj = np.where(ok[:, None], cls_all, np.nan)
    stats = rows.of2_stats.get(series) or median.Histograms.empty(hog_dims, geom_dims)
    med_r, med_c = person_median(predictors, stats, rows.frame, ok, reg_proj, cls_proj)
    r, c = predictors.finish(rows.frame, reg_proj, cls_proj, med_r, med_c)
    face = rows.success.astype(bool)
    out = {name: np.where(face, r[:, k], np.nan) for k, name in enumerate(OF2_AUS_R)}
    out.update({name: np.where(face, c[:, k], np.nan) for k, name in enumerate(OF2_AUS_C)})
    return out


def person_median(predictors: Predictors, stats: median.Histograms, frames: np.ndarray, ok: np.ndarray,
                  reg_proj: np.ndarray, cls_proj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``median . w`` per model: from the merged counts, or, when a single frame updated them, that frame's own
    projections (``UpdateRunningMedian``: with one value the median is the descriptor itself)."""
    if stats.count == 1:
        (single,) = np.flatnonzero(ok & np.array([median.counts_frame(int(f)) for f in frames], bool))
        return reg_proj[single], cls_proj[single]
    hog, geom = stats.medians()
    return predictors.median_dot(hog, geom)
