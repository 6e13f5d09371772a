"""OpenFace 2.2.0's 17 AU intensities and 18 occurrences: per-frame projections in the workers, the video's
post-processing at assembly.

The models are linear (``SVR_static_lin_regressors::Predict``, ``SVR_dynamic_lin_regressors::Predict``,
``SVM_static_lin::Predict``, ``SVM_dynamic_lin::Predict``, lib/local/FaceAnalyser/src/):
``score = (x - means - median) . w + bias`` (``median`` only for dynamic models; x = [FHOG, geometry]). So a
worker keeps per frame only ``x . w`` of each model (``project``: 35 float64, 280 bytes a frame) and the
histogram counts of the person median (``median.Histograms``); assembly merges the counts and computes
``median . w`` once (``finish``).

``finish`` is ``FaceAnalyser::ExtractAllPredictionsOfflineReg`` / ``…OfflineClass`` after
``PostprocessPredictions`` (FaceAnalyser.cpp), for one face over a video:

- every frame is predicted with the final median (``PostprocessPredictions`` re-predicts the first
  ``max_init_frames`` = 3000 successful frames, FaceAnalyser.h). Departure: beyond 3,000 successful frames of a
  face (100 s at 30 fps) the C++ keeps the prediction made with the running median of that moment; aud uses the
  final median there too, since a running median would tie every frame to all frames before it (no sharding);
- intensities: a failed frame is 0; a dynamic SVR with ``cutoff`` != -1 is shifted down by its successful
  frames' predictions' value at rank ``(int)(n * cutoff)`` of the sorted values; clamped to [0, 5]; then a
  3-frame moving average over all frames (first and last unchanged);
- occurrences: ``pos_class`` when the score is > 0, else ``neg_class``; a failed frame 0; then a 7-frame moving
  average (frames 3 … n-4) thresholded at 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formats import LinearModel, ModelSet, RegressorType

# OpenFace 2.2's outputs, as FeatureExtraction writes them (AU names sorted: PostprocessOutputFile)
AUS_R: tuple[str, ...] = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14",
                          "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")
AUS_C: tuple[str, ...] = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14",
                          "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU28", "AU45")
MAX_INTENSITY = 5.0  # ExtractAllPredictionsOfflineReg's clamp
REG_WINDOW = 3  # ExtractAllPredictionsOfflineReg: "a moving average of 3 frames"
CLASS_WINDOW = 7  # ExtractAllPredictionsOfflineClass: "a moving average of 7 frames on classifications"


class ModelSetError(ValueError):
    """The AU list does not give one intensity model per OpenFace 2.2 intensity AU and one classifier per
    occurrence AU."""


@dataclass(frozen=True)
class Stack:
    """The models of one output kind, in ``AUS_R`` or ``AUS_C`` order, as matrices."""

    weights: np.ndarray  # (d, k)
    offset: np.ndarray  # (k,) bias - means . w
    dynamic: np.ndarray  # (k,) bool
    cutoff: np.ndarray  # (k,) -1 = none
    pos: np.ndarray
    neg: np.ndarray

    @classmethod
    def of(cls, models: list[LinearModel]) -> Stack:
        return cls(np.stack([m.weights for m in models], axis=1),
                   np.array([m.bias - float(m.means @ m.weights) for m in models]),
                   np.array([m.dynamic for m in models]),
                   np.array([m.cutoff if m.kind == RegressorType.SVR_DYNAMIC else -1.0 for m in models]),
                   np.array([m.pos_class for m in models]), np.array([m.neg_class for m in models]))


@dataclass(frozen=True)
class Predictors:
    reg: Stack
    cls: Stack

    @classmethod
    def of(cls, model_set: ModelSet) -> Predictors:
        def pick(names: tuple[str, ...], regressor: bool) -> list[LinearModel]:
            listed = [m.au for m in model_set.models if m.regressor == regressor]
            twice = sorted({au for au in listed if listed.count(au) > 1})
            if twice:  # FaceAnalyser would append both models' predictions to one AU's series
                raise ModelSetError(f"AU_all_best.txt lists two {'SVR' if regressor else 'SVM'} models for "
                                    f"{', '.join(twice)}")
            found = {m.au: m for m in model_set.models if m.regressor == regressor}
            missing = [n for n in names if n not in found]
            if missing:
                kind = "intensity (SVR)" if regressor else "occurrence (SVM)"
                raise ModelSetError(f"AU_all_best.txt lists no {kind} model for {', '.join(missing)}")
            return [found[n] for n in names]

        reg, clf = pick(AUS_R, True), pick(AUS_C, False)
        dims = {m.weights.size for m in (*reg, *clf)}
        if len(dims) != 1:
            raise ModelSetError(f"AU models of different input sizes {sorted(dims)}")
        return cls(Stack.of(reg), Stack.of(clf))

    def project(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x . w`` of every model for (k, d) features: ((k, 17), (k, 18))."""
        return features @ self.reg.weights, features @ self.cls.weights

    def finish(self, frames: np.ndarray, reg_proj: np.ndarray, cls_proj: np.ndarray,
               median_reg: np.ndarray, median_cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One face's (intensities (n, 17), occurrences (n, 18)) over its rows in frame order (one row a frame);
        a row whose projections are NaN failed. ``median_*`` = ``median . w`` per model (``median_dot``)."""
        order = np.argsort(frames, kind="stable")
        if not np.array_equal(order, np.arange(len(frames))):
            raise ValueError("finish takes one face's rows in frame order")
        ok = np.isfinite(reg_proj).all(axis=1) & np.isfinite(cls_proj).all(axis=1)
        return (_intensities(self.reg, ok, reg_proj, median_reg),
                _occurrences(self.cls, ok, cls_proj, median_cls))

    def median_dot(self, hog_median: np.ndarray, geom_median: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([hog_median, geom_median])
        return x @ self.reg.weights, x @ self.cls.weights


def _scores(stack: Stack, proj: np.ndarray, median: np.ndarray) -> np.ndarray:
    return proj + stack.offset - np.where(stack.dynamic, median, 0.0)


def _intensities(stack: Stack, ok: np.ndarray, proj: np.ndarray, median: np.ndarray) -> np.ndarray:
    raw = np.where(ok[:, None], _scores(stack, np.nan_to_num(proj), median), 0.0)
    out = np.zeros_like(raw)
    good = raw[ok]
    for k in range(raw.shape[1]):
        shift = 0.0
        if good.shape[0] and stack.cutoff[k] != -1:
            ranked = np.sort(good[:, k])
            shift = ranked[int(len(ranked) * stack.cutoff[k])]
        out[:, k] = np.where(ok, np.clip(raw[:, k] - shift, 0.0, MAX_INTENSITY), 0.0)
    half = (REG_WINDOW - 1) // 2
    smoothed = out.copy()
    if len(out) > 2 * half:
        window = sum(out[half + w:len(out) - half + w] for w in range(-half, half + 1))
        smoothed[half:len(out) - half] = window / REG_WINDOW
    return smoothed


def _occurrences(stack: Stack, ok: np.ndarray, proj: np.ndarray, median: np.ndarray) -> np.ndarray:
    scores = _scores(stack, np.nan_to_num(proj), median)
    values = np.where(ok[:, None], np.where(scores > 0, stack.pos, stack.neg), 0.0)
    half = (CLASS_WINDOW - 1) // 2
    out = values.copy()
    if len(values) > half:
        for i in range(half, len(values) - half):
            mean = values[i - half:i + half + 1].mean(axis=0)
            out[i] = np.where(mean < 0.5, 0.0, 1.0)
    return out
