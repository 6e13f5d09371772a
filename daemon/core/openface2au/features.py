"""The 4,702 values an OpenFace 2.2.0 AU model reads: FHOG of the aligned face, then the geometry descriptor.

- FHOG: ``Extract_FHOG_descriptor`` (lib/local/FaceAnalyser/src/Face_utils.cpp) runs dlib's
  ``extract_fhog_features`` with cell size 8 on the 112x112 BGR face (12 x 12 cells x 31 = 4,464 values) and
  writes them cell row by cell row (``for y < num_cols: for x < num_rows: 31 values``). ``pyfhog`` wraps that
  same dlib function and returns that order.
- Geometry: ``FaceAnalyser::AddNextFrame``: the local PDM parameters p (34) after ``princ_comp * p`` (the 204
  non-rigid point offsets), 238 values; zeros when the frame failed.
"""

from __future__ import annotations

import numpy as np
import pyfhog

CELL = 8  # Extract_FHOG_descriptor's default cell_size (Face_utils.h)


def fhog(face: np.ndarray) -> np.ndarray:
    """FHOG of a BGR uint8 face, OpenFace's order, float64."""
    return np.asarray(pyfhog.extract_fhog_features(np.ascontiguousarray(face, dtype=np.uint8), cell_size=CELL),
                      dtype=np.float64)


def geometry(princ_comp: np.ndarray, params_local: np.ndarray) -> np.ndarray:
    """``[princ_comp @ p, p]`` (3n + m values)."""
    return np.concatenate([princ_comp @ params_local, params_local])
