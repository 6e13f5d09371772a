"""Per-face measurements as columns of numpy arrays, one row per (frame, face): what a worker computes.

Every frame has at least one row: a frame without a face has one row with ``success`` False,
``detection`` -1 and NaN measurements. The arrays are the ones ``schema.FIELDS`` declares. A shard's
rows travel by value (``to_bytes``) and are stored in the job store; assembly concatenates them in
frame order.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .openface2au.median import Histograms
from .schema import FIELD_NAMES, FIELDS, SHARD_FORMAT, Field

OF2_STATS = "of2_stats_"  # prefix of the OpenFace 2.2 person-median counts in the stored arrays
# fields stored only when some row holds a value: the OpenFace 2.2 AUs (off in most jobs: 848 bytes a row), the
# landmarks and eye openness (AU45 off: STAR never runs; 792 bytes a row) and the hemi-face measurements
# (mirror off: 176 bytes a row). Read back, a field not stored is ``blank``: its fill value on every row, held
# as one value (an hour's rows of blank fields would otherwise take ~200 MB).
OPTIONAL_FIELDS = frozenset(f.name for f in FIELDS
                            if f.name.startswith(("of2_", "mirror_")) or f.name in ("landmarks", "eye_open"))
_FIELD = {f.name: f for f in FIELDS}


def blank(field: Field, n: int) -> np.ndarray:
    """``n`` rows of ``field``'s fill value as one value seen ``n`` times (a read-only view taking no memory):
    a field no row holds. ``take`` and ``concat`` keep it so."""
    return np.broadcast_to(np.asarray(field.fill, dtype=field.dtype), (n, *field.shape))


def in_order(order: np.ndarray) -> bool:
    """Whether sorting by ``order`` (an ``argsort``) leaves rows where they are: then they need no reordered copy."""
    return bool(np.all(order == np.arange(len(order))))


def is_blank(values: np.ndarray, field: Field) -> bool:
    """Whether ``values`` is ``blank(field, …)``: known without reading its rows."""
    if values.size == 0 or any(values.strides):
        return False
    return _all_fill(values.reshape(-1)[:1], field.fill)


class ShardFormatError(ValueError):
    """Stored rows written by another version of aud (their format is not ``SHARD_FORMAT``)."""


class FaceRows(Mapping[str, np.ndarray]):
    """The arrays of ``schema.FIELDS``, all with the same number of rows. Read as a mapping
    (``rows["box"]``) or by attribute (``rows.box``).

    ``of2_stats``: with the OpenFace 2.2 AUs on, the person-median histogram counts of these rows' face, per
    series (``"main"`` and, in hemi-face mode, each of ``SIDES``: a mirrored face is a person of its own); they
    merge by addition in ``concat``."""

    def __init__(self, arrays: Mapping[str, np.ndarray], of2_stats: Mapping[str, Histograms] | None = None):
        missing = set(FIELD_NAMES) - set(arrays)
        if missing:
            raise ValueError(f"face rows without {sorted(missing)}")
        lengths = {len(arrays[name]) for name in FIELD_NAMES}
        if len(lengths) > 1:
            raise ValueError(f"face rows of unequal lengths {sorted(lengths)}")
        self._arrays = {f.name: np.asarray(arrays[f.name], dtype=f.dtype) for f in FIELDS}
        self.of2_stats: dict[str, Histograms] = dict(of2_stats or {})

    @classmethod
    def empty(cls, n: int) -> FaceRows:
        return cls({f.name: f.empty(n) for f in FIELDS})

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["_arrays"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(FIELD_NAMES)

    def __len__(self) -> int:
        return len(self._arrays["frame"])

    @property
    def rows(self) -> int:
        return len(self)

    def blank(self, name: str) -> bool:
        """Whether no row holds a value of this field (it was not stored: ``blank``)."""
        return is_blank(self._arrays[name], _FIELD[name])

    def take(self, index: np.ndarray) -> FaceRows:
        taken = {f.name: self._arrays[f.name][index] for f in FIELDS if not self.blank(f.name)}
        n = len(taken["frame"])
        return FaceRows({f.name: taken[f.name] if f.name in taken else blank(f, n) for f in FIELDS}, self.of2_stats)

    @classmethod
    def concat(cls, parts: list[FaceRows]) -> FaceRows:
        """Rows of all parts, ordered by frame, then by detection rank (stable)."""
        if not parts:
            return cls.empty(0)
        n = sum(len(p) for p in parts)
        merged = {f.name: blank(f, n) if all(p.blank(f.name) for p in parts)
                  else np.concatenate([p[f.name] for p in parts]) for f in FIELDS}
        order = np.lexsort((merged["detection"], merged["frame"]))
        if not in_order(order):  # parts out of order: one field at a time (no second copy)
            for f in FIELDS:
                if not is_blank(merged[f.name], f):  # a blank field is in any order
                    merged[f.name] = merged[f.name][order]
        series = sorted({key for p in parts for key in p.of2_stats})
        stats = {key: Histograms.merge([p.of2_stats[key] for p in parts if key in p.of2_stats]) for key in series}
        return cls(merged, stats)

    def frames(self) -> np.ndarray:
        """The distinct frame indexes, ascending."""
        return np.unique(self._arrays["frame"])

    # --- by value, with the format recorded ------------------------------------------------------

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {"shard_format": np.int64(SHARD_FORMAT)}
        for f in FIELDS:
            values = self._arrays[f.name]
            if f.name in OPTIONAL_FIELDS and (self.blank(f.name) or _all_fill(values, f.fill)):
                continue
            arrays[f.name] = values
        for key, stats in self.of2_stats.items():
            arrays.update(stats.to_arrays(f"{OF2_STATS}{key}_"))
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FaceRows:
        """Rows stored by ``to_bytes``; ShardFormatError when another format stored them."""
        try:
            with np.load(io.BytesIO(data)) as stored:
                found = int(stored["shard_format"]) if "shard_format" in stored.files else 1
                if found != SHARD_FORMAT:
                    raise ShardFormatError(f"stored shard format {found}, this aud reads {SHARD_FORMAT}")
                keys = [f[len(OF2_STATS):-len("_dims")] for f in stored.files
                        if f.startswith(OF2_STATS) and f.endswith("_dims")]
                stats = {key: Histograms.from_arrays(stored, f"{OF2_STATS}{key}_") for key in keys}
                n = len(stored["frame"])
                return cls({f.name: stored[f.name] if f.name in stored.files or f.name not in OPTIONAL_FIELDS
                            else blank(f, n) for f in FIELDS}, stats)
        except (OSError, ValueError, KeyError) as exc:
            if isinstance(exc, ShardFormatError):
                raise
            raise ShardFormatError(f"unreadable stored shard ({exc})") from exc


def _all_fill(values: np.ndarray, fill: float | int | bool) -> bool:
    if isinstance(fill, float) and np.isnan(fill):
        return bool(np.isnan(values).all())
    return bool((values == fill).all())
