"""One face in one frame through OpenFace 2.2.0's AU front end (``FaceAnalyser::AddNextFrame``,
lib/local/FaceAnalyser/src/FaceAnalyser.cpp): PDM fit, aligned masked face, FHOG, geometry, the models'
projections; and the shard's share of each face's person-median histograms (``ShardFrontEnd``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import align, features, files, median
from .formats import ModelSet, load_model_set
from .pdm import PDM, calc_params
from .predict import Predictors
from .segments import Segments

log = logging.getLogger("aud.pipeline")


@dataclass(frozen=True)
class FrameFeatures:
    aligned: np.ndarray  # 112x112 BGR, masked
    hog: np.ndarray  # (4464,)
    geom: np.ndarray  # (238,)
    params_global: np.ndarray
    params_local: np.ndarray


class Analyser:
    """The loaded model set and its stacked predictors (built once a process)."""

    def __init__(self, model_set: ModelSet):
        self.model_set = model_set
        self.pdm = PDM.of(model_set.pdm)
        self.predictors = Predictors.of(model_set)

    @classmethod
    def load(cls, models_dir: Path) -> Analyser:
        return cls(load_model_set(models_dir / files.SUBDIR))

    def features(self, image: np.ndarray, landmarks68: np.ndarray) -> FrameFeatures:
        points = np.asarray(landmarks68, np.float64)
        glob, loc = calc_params(self.pdm, points)
        face = align.align_face_mask(image, points, self.pdm.mean_shape, glob[4], glob[5],
                                     self.model_set.triangulation)
        return FrameFeatures(face, features.fhog(face), features.geometry(self.pdm.princ_comp, loc), glob, loc)

    def project(self, feats: FrameFeatures) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([feats.hog, feats.geom])[None]
        reg, cls = self.predictors.project(x)
        return reg[0], cls[0]


class MedianCollector:
    """A shard's descriptors of the frames that update the person median, folded into counts every
    ``FOLD`` frames (so a long shard holds counts, not descriptors)."""

    FOLD = 128

    def __init__(self) -> None:
        self.hog: list[np.ndarray] = []
        self.geom: list[np.ndarray] = []
        self.folded: list[median.Histograms] = []

    def add(self, frame: int, feats: FrameFeatures) -> None:
        if median.counts_frame(frame):
            self.hog.append(feats.hog)
            self.geom.append(feats.geom)
            if len(self.hog) == self.FOLD:
                self._fold()

    def _fold(self) -> None:
        if self.hog:
            self.folded = [median.Histograms.merge(
                [*self.folded, median.Histograms.of_frames(np.stack(self.hog), np.stack(self.geom))])]
            self.hog, self.geom = [], []

    def histograms(self) -> median.Histograms | None:
        self._fold()
        return self.folded[0] if self.folded else None


class ShardFrontEnd:
    """OpenFace 2.2's AU front end over one shard: each face's projections, each series' share of its
    person-median counts and, with several faces a frame (``several_faces``), the rows' face segments."""

    def __init__(self, analyser: Analyser, several_faces: bool) -> None:
        self.analyser = analyser
        self.medians: dict[str, MedianCollector] = {}
        self.segments = Segments() if several_faces else None

    def face(self, image: np.ndarray, points68: np.ndarray, frame: int,
             series: str) -> tuple[np.ndarray, np.ndarray] | None:
        """One face's projections (None: the fit failed) and its share of ``series``' median."""
        try:
            feats = self.analyser.features(image, points68)
        except (np.linalg.LinAlgError, ValueError) as exc:  # degenerate landmarks: no PDM fit
            log.debug("frame %d: no OpenFace 2.2 features (%s)", frame, exc)
            return None
        reg, cls = self.analyser.project(feats)
        if not (np.isfinite(reg).all() and np.isfinite(cls).all()):
            return None
        self.medians.setdefault(series, MedianCollector()).add(frame, feats)
        return reg, cls

    def stats(self) -> dict[str, median.Histograms]:
        """Each series' median counts over the shard (series without a counted frame left out)."""
        return {key: h for key, c in self.medians.items() if (h := c.histograms()) is not None}
