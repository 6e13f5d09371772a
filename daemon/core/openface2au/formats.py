"""Readers of OpenFace 2.2.0's model files, in their official formats.

- Text matrices (PDM, triangulation): ``LandmarkDetector::ReadMat`` after ``SkipComments``
  (lib/local/LandmarkDetector/src/LandmarkDetectorUtils.cpp): lines starting with ``#`` are comments; a matrix
  is ``rows``, ``cols``, an OpenCV type code, then ``rows*cols`` numbers, row-major.
- The PDM (``PDM::Read``, lib/local/LandmarkDetector/src/PDM.cpp): mean shape (3n x 1: all x, then all y, then
  all z), principal components (3n x m), eigenvalues (1 x m), in that order.
- The triangulation (``FaceAnalyser::Read``, module ``Triangulation``): a (t x 3) integer matrix of point indices.
- The AU models (``FaceAnalyser::ReadRegressor``, lib/local/FaceAnalyser/src/FaceAnalyser.cpp): little-endian
  binary; an int32 regressor type (``RegressorType`` in FaceAnalyser.h: 0 static SVR, 1 dynamic SVR, 4 static
  SVM, 5 dynamic SVM), then as the type's ``Read``: a dynamic SVR first has its float64 ``cutoff``
  (``SVR_dynamic_lin_regressors::Read``); every model has ``means`` and ``support_vectors`` as binary matrices
  (``ReadMatBin``: int32 rows, int32 cols, int32 OpenCV type 6 = CV_64F, the float64 values row-major) and a
  float64 bias; an SVM then has its float64 positive and negative class values (``SVM_static_lin::Read``,
  ``SVM_dynamic_lin::Read``). A dynamic SVM is read with or without a leading cutoff, whichever the file's
  length says (the C++ ignores a classifier's cutoff in post-processing either way).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np

from . import files


class ModelFileError(ValueError):
    """A model file that is not in OpenFace 2.2's format (the message names the file)."""


class RegressorType(IntEnum):
    """``FaceAnalyser::RegressorType`` (lib/local/FaceAnalyser/include/FaceAnalyser.h)."""

    SVR_STATIC = 0
    SVR_DYNAMIC = 1
    SVM_STATIC = 4
    SVM_DYNAMIC = 5


CV_64F = 6


def read_text_matrices(path: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` matrices of an OpenFace text matrix file (comments skipped)."""
    tokens: list[str] = []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        tokens.extend(line.split())
    out: list[np.ndarray] = []
    at = 0
    try:
        for _ in range(count):
            rows, cols = int(tokens[at]), int(tokens[at + 1])
            at += 3  # rows, cols, the OpenCV type code
            values = np.array(tokens[at:at + rows * cols], dtype=np.float64)
            if values.size != rows * cols:
                raise ModelFileError(f"{path}: matrix {len(out) + 1} is cut short")
            out.append(values.reshape(rows, cols))
            at += rows * cols
    except (IndexError, ValueError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path}: not an OpenFace text matrix file ({exc})") from exc
    return out


@dataclass(frozen=True)
class PDMData:
    mean_shape: np.ndarray  # (3n,)
    princ_comp: np.ndarray  # (3n, m)
    eigen_values: np.ndarray  # (m,)


def read_pdm(path: Path) -> PDMData:
    mean, comp, eig = read_text_matrices(path, 3)
    if mean.shape[1] != 1 or mean.shape[0] % 3 or comp.shape[0] != mean.shape[0] or eig.size != comp.shape[1]:
        raise ModelFileError(f"{path}: PDM matrices of shapes {mean.shape}, {comp.shape}, {eig.shape} do not fit")
    return PDMData(mean[:, 0], comp, eig.reshape(-1))


def read_triangulation(path: Path) -> np.ndarray:
    (tris,) = read_text_matrices(path, 1)
    if tris.shape[1] != 3:
        raise ModelFileError(f"{path}: a triangulation has 3 columns, found {tris.shape[1]}")
    return tris.astype(np.int64)


@dataclass(frozen=True)
class LinearModel:
    """One AU model: ``score = (x - means [- median]) . weights + bias``."""

    au: str  # "AU01"
    kind: RegressorType
    means: np.ndarray  # (d,) (zeros where the file's means are empty)
    weights: np.ndarray  # (d,)
    bias: float
    cutoff: float = -1.0  # dynamic SVR: the neutral-frame proportion of the calibration shift; -1: none
    pos_class: float = 1.0  # SVM: the value for a positive score
    neg_class: float = 0.0

    @property
    def dynamic(self) -> bool:
        return self.kind in (RegressorType.SVR_DYNAMIC, RegressorType.SVM_DYNAMIC)

    @property
    def regressor(self) -> bool:
        return self.kind in (RegressorType.SVR_STATIC, RegressorType.SVR_DYNAMIC)


class _Cursor:
    def __init__(self, path: Path, data: bytes):
        self.path, self.data, self.at = path, data, 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise ModelFileError(f"{self.path}: ends inside a model ({len(self.data)} bytes)")
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return values

    def matrix(self) -> np.ndarray:
        rows, cols, cv_type = self.take("<iii")
        if rows < 0 or cols < 0 or (rows * cols and cv_type != CV_64F):
            raise ModelFileError(f"{self.path}: a {rows}x{cols} matrix of OpenCV type {cv_type}, expected CV_64F")
        if self.at + 8 * rows * cols > len(self.data):
            raise ModelFileError(f"{self.path}: ends inside a {rows}x{cols} matrix")
        values = np.frombuffer(self.data, "<f8", rows * cols, self.at)
        self.at += 8 * rows * cols
        return values.reshape(rows, cols).astype(np.float64)


def read_model(path: Path, au: str) -> LinearModel:
    """One ``.dat`` AU model (a file holds one model in OpenFace 2.2's ``svr_combined``/``svm_combined``)."""
    data = path.read_bytes()
    cursor = _Cursor(path, data)
    (code,) = cursor.take("<i")
    try:
        kind = RegressorType(code)
    except ValueError:
        raise ModelFileError(f"{path}: regressor type {code} is not one OpenFace 2.2 reads") from None
    cutoff = -1.0
    if kind == RegressorType.SVR_DYNAMIC:
        (cutoff,) = cursor.take("<d")
    elif kind == RegressorType.SVM_DYNAMIC and _svm_has_cutoff(data):
        cursor.take("<d")
    means = cursor.matrix()
    support = cursor.matrix()
    (bias,) = cursor.take("<d")
    pos, neg = (1.0, 0.0)
    if kind in (RegressorType.SVM_STATIC, RegressorType.SVM_DYNAMIC):
        pos, neg = cursor.take("<dd")
    if cursor.at != len(data):
        raise ModelFileError(f"{path}: {len(data) - cursor.at} bytes after the model")
    if support.shape[1] != 1:
        raise ModelFileError(f"{path}: {support.shape[1]} support vector columns, a file holds one model")
    weights = support[:, 0]
    means_row = means.reshape(-1) if means.size else np.zeros_like(weights)
    if means_row.shape != weights.shape:
        raise ModelFileError(f"{path}: means of {means_row.size} values for {weights.size} weights")
    return LinearModel(au, kind, means_row, weights, float(bias), float(cutoff), float(pos), float(neg))


def _svm_has_cutoff(data: bytes) -> bool:
    """A dynamic SVM file's length with a leading float64 before its matrices (see the module docstring)."""
    try:
        rows, cols = struct.unpack_from("<ii", data, 4)
        plain = 4 + 12 + 8 * rows * cols
        rows2, cols2 = struct.unpack_from("<ii", data, plain)
        return plain + 12 + 8 * rows2 * cols2 + 24 != len(data)
    except struct.error:
        return True


@dataclass(frozen=True)
class ModelSet:
    pdm: PDMData
    triangulation: np.ndarray
    models: tuple[LinearModel, ...]  # in AU_all_best.txt's order


def load_model_set(root: Path) -> ModelSet:
    """The PDM, triangulation and every AU model ``AU_all_best.txt`` lists, from ``root`` laid out at OpenFace's
    repository-relative paths (``root`` = ``<models>/openface2``)."""
    missing = [p for p in files.REQUIRED_PATHS if not (root / p).is_file()]
    if missing:
        raise ModelFileError(f"OpenFace 2.2 files missing under {root}: {', '.join(missing)}")
    entries = files.parse_au_list((root / files.AU_LIST_PATH).read_text())
    models = []
    for rel, aus in entries:
        if len(aus) != 1:
            raise ModelFileError(f"{rel}: lists {len(aus)} AUs; OpenFace 2.2's files hold one each")
        if not (root / rel).is_file():
            raise ModelFileError(f"OpenFace 2.2 model file missing: {root / rel}")
        models.append(read_model(root / rel, aus[0]))
    return ModelSet(read_pdm(root / files.PDM_PATH), read_triangulation(root / files.TRIANGULATION_PATH),
                    tuple(models))
