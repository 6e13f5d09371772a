"""The person-specific running median of OpenFace 2.2.0's dynamic models, as mergeable histogram counts.

``FaceAnalyser::UpdateRunningMedian`` (lib/local/FaceAnalyser/src/FaceAnalyser.cpp) keeps, per descriptor value,
a histogram: HOG values in 1000 bins over [-0.005, 1], geometry values in 10000 bins over [-60, 60] (the
``FaceAnalyser`` constructor: ``num_bins_hog``, ``min_val_hog``, ``max_val_hog``, ``num_bins_geom`` …). A value
goes to bin ``(int)((v - min) * bins / (max - min))`` capped to [0, bins - 1]. The median of ``count`` values is
the centre of the first bin whose cumulative count reaches ``(count + 1) / 2`` (integer division):
``min + j * width + width / 2``; with a single value it is that value itself; the HOG median is then floored at
0 (``hog_desc_median.setTo(0, hog_desc_median < 0)`` in ``AddNextFrame``).

Which frames count (``AddNextFrame``): the frames where tracking succeeded, and only every second frame
(``frames_tracking % 2 == 1``, ``frames_tracking`` counting every frame given, from 1): here the frames of even
0-based index. Counts are integers, so merging shards in any order gives the same histograms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOG_BINS, HOG_MIN, HOG_MAX = 1000, -0.005, 1.0  # FaceAnalyser::FaceAnalyser
GEOM_BINS, GEOM_MIN, GEOM_MAX = 10000, -60.0, 60.0  # FaceAnalyser::FaceAnalyser


def counts_frame(frame: int) -> bool:
    """Whether a successful frame (0-based index) updates the histograms (``frames_tracking % 2 == 1``)."""
    return frame % 2 == 0


def bins(values: np.ndarray, n_bins: int, lo: float, hi: float) -> np.ndarray:
    """``UpdateRunningMedian``'s bin of each value."""
    converted = (np.asarray(values, np.float64) - lo) * float(n_bins) / abs(hi - lo)  # the C++'s order
    converted = np.clip(converted, 0, n_bins - 1)
    return converted.astype(np.int64)


def median_of_counts(counts: np.ndarray, count: int, n_bins: int, lo: float, hi: float) -> np.ndarray:
    """``UpdateRunningMedian``'s median of (dims, n_bins) counts holding ``count`` values per dim (count != 1)."""
    length = abs(hi - lo)
    cutoff = (count + 1) // 2
    first = np.argmax(np.cumsum(counts, axis=1) >= cutoff, axis=1)
    return lo + first * (length / n_bins) + 0.5 * length / n_bins


@dataclass
class Histograms:
    """One face's histogram counts (sparse: flat bin index -> count) and how many frames they hold."""

    hog_dims: int
    geom_dims: int
    hog_index: np.ndarray  # int64 flat indices (dim * HOG_BINS + bin), unique, ascending
    hog_count: np.ndarray  # int64
    geom_index: np.ndarray
    geom_count: np.ndarray
    count: int  # frames added

    @classmethod
    def empty(cls, hog_dims: int, geom_dims: int) -> Histograms:
        z = np.zeros(0, np.int64)
        return cls(hog_dims, geom_dims, z, z, z, z, 0)

    @classmethod
    def of_frames(cls, hog: np.ndarray, geom: np.ndarray) -> Histograms:
        """The counts of frames' descriptors, (k, hog_dims) and (k, geom_dims)."""
        k, hd = hog.shape
        gd = geom.shape[1]
        h = (bins(hog, HOG_BINS, HOG_MIN, HOG_MAX) + np.arange(hd) * HOG_BINS).reshape(-1)
        g = (bins(geom, GEOM_BINS, GEOM_MIN, GEOM_MAX) + np.arange(gd) * GEOM_BINS).reshape(-1)
        hi, hc = np.unique(h, return_counts=True)
        gi, gc = np.unique(g, return_counts=True)
        return cls(hd, gd, hi, hc.astype(np.int64), gi, gc.astype(np.int64), k)

    @classmethod
    def merge(cls, parts: list[Histograms]) -> Histograms:
        """The sum of parts' counts (order-independent: integer sums). Few entries: by sorting them; many (a
        long video's shards): into a dense count array (at most 6.8 M int64, the histograms' full size)."""
        if not parts:
            raise ValueError("no histogram to merge")
        if len({(p.hog_dims, p.geom_dims) for p in parts}) > 1:
            raise ValueError("histograms of different descriptor sizes")
        if len(parts) == 1:
            return parts[0]
        hd, gd = parts[0].hog_dims, parts[0].geom_dims
        hi, hc = _add([p.hog_index for p in parts], [p.hog_count for p in parts], hd * HOG_BINS)
        gi, gc = _add([p.geom_index for p in parts], [p.geom_count for p in parts], gd * GEOM_BINS)
        return cls(hd, gd, hi, hc, gi, gc, sum(p.count for p in parts))

    def medians(self) -> tuple[np.ndarray, np.ndarray]:
        """(HOG median floored at 0, geometry median) for ``count`` != 1 (a single frame is its own median)."""
        hog = np.zeros(self.hog_dims * HOG_BINS, np.int32)
        hog[self.hog_index] = self.hog_count
        geom = np.zeros(self.geom_dims * GEOM_BINS, np.int32)
        geom[self.geom_index] = self.geom_count
        hog_median = median_of_counts(hog.reshape(self.hog_dims, HOG_BINS), self.count, HOG_BINS, HOG_MIN, HOG_MAX)
        geom_median = median_of_counts(geom.reshape(self.geom_dims, GEOM_BINS), self.count,
                                       GEOM_BINS, GEOM_MIN, GEOM_MAX)
        return np.maximum(hog_median, 0.0), geom_median

    # --- by value ---------------------------------------------------------------------------------
    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}hog_index": self.hog_index, f"{prefix}hog_count": self.hog_count,
                f"{prefix}geom_index": self.geom_index, f"{prefix}geom_count": self.geom_count,
                f"{prefix}dims": np.array([self.hog_dims, self.geom_dims, self.count], np.int64)}

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> Histograms:
        hd, gd, count = (int(v) for v in arrays[f"{prefix}dims"])
        return cls(hd, gd, np.asarray(arrays[f"{prefix}hog_index"], np.int64),
                   np.asarray(arrays[f"{prefix}hog_count"], np.int64),
                   np.asarray(arrays[f"{prefix}geom_index"], np.int64),
                   np.asarray(arrays[f"{prefix}geom_count"], np.int64), count)


def _add(index: list[np.ndarray], count: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum sparse counts (each part's indices unique) -> (unique indices ascending, counts)."""
    total = sum(len(i) for i in index)
    if total * 8 < size:
        i = np.concatenate(index)
        u, inverse = np.unique(i, return_inverse=True)
        return u, np.bincount(inverse, weights=np.concatenate(count), minlength=len(u)).astype(np.int64)
    dense = np.zeros(size, np.int64)
    for i, c in zip(index, count):
        dense[i] += c  # a part's indices are unique, so fancy-index addition counts each once
    nonzero = np.flatnonzero(dense)
    return nonzero, dense[nonzero]
