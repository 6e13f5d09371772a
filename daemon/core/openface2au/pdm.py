"""The point distribution model and its fit to 2-D landmarks, as OpenFace 2.2.0's ``PDM::CalcParams``
(lib/local/LandmarkDetector/src/PDM.cpp).

Shape: ``shape3d = mean + V p`` (3n values: all x, all y, all z); in the image, weak perspective
``x2d = s R[:2] shape3d + t`` with ``R = Rx(a) Ry(b) Rz(c)`` (``Utilities::Euler2RotationMatrix``,
lib/local/Utilities/include/RotationHelpers.h). Global parameters ``(s, a, b, c, tx, ty)``, local ``p`` (m modes).

The fit (``PDM::CalcParams``), kept rule for rule:

- a landmark whose x is exactly 0 is invisible and left out;
- start: rotation 0, local 0, scale = mean of (landmark box width / mean-shape width, height / height),
  translation = the landmark box's centre;
- up to 1000 Gauss-Newton steps on the residual with the full Jacobian (``PDM::ComputeJacobian``: scale, three
  small-angle rotation terms, translation, the modes), Tikhonov regularisation ``1/eigenvalue`` on the modes
  (reg_factor 1), the step solved by Cholesky and damped by 0.75;
- the update as ``PDM::UpdateModelParameters``: scale and translation added, rotation composed with the
  orthonormalised small-angle matrix (``PDM::Orthonormalise``), back to Euler angles (NaN -> 0), modes added;
- the error after a step is measured with the step's global parameters on the shape from *before* the step's
  mode update (the C++ reuses ``shape_3D`` of the iteration's start); the loop ends the third time
  ``0.999 * previous error < error`` (the count is never reset).

Numbers are float64 here (the C++ uses float32 with BLAS): the fitted parameters agree to float32 rounding
noise, measured in tests/core/openface2au.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formats import PDMData

MAX_ITERATIONS = 1000  # PDM::CalcParams
DAMPING = 0.75  # PDM::CalcParams: "To not overshoot, have the gradient decent rate a bit smaller"
IMPROVEMENT = 0.999  # PDM::CalcParams: a step improves when error < 0.999 * previous error
PATIENCE = 3  # PDM::CalcParams: stop the third time a step does not improve


def euler_to_matrix(euler: np.ndarray) -> np.ndarray:
    """``Utilities::Euler2RotationMatrix``: R = Rx(a) Ry(b) Rz(c)."""
    s1, s2, s3 = np.sin(euler)
    c1, c2, c3 = np.cos(euler)
    return np.array([
        [c2 * c3, -c2 * s3, s2],
        [c1 * s3 + c3 * s1 * s2, c1 * c3 - s1 * s2 * s3, -c2 * s1],
        [s1 * s3 - c1 * c3 * s2, c3 * s1 + c1 * s2 * s3, c1 * c2],
    ])


def matrix_to_euler(r: np.ndarray) -> np.ndarray:
    """The inverse of ``euler_to_matrix`` (OpenFace goes through the axis-angle and a quaternion,
    ``RotationMatrix2AxisAngle``/``AxisAngle2Euler``; the angles are the same)."""
    b = np.arcsin(np.clip(r[0, 2], -1.0, 1.0))
    a = np.arctan2(-r[1, 2], r[2, 2])
    c = np.arctan2(-r[0, 1], r[0, 0])
    return np.array([a, b, c])


def orthonormalise(r: np.ndarray) -> np.ndarray:
    """``PDM::Orthonormalise``: the nearest rotation (no reflection) by SVD."""
    u, _, vt = np.linalg.svd(r)
    w = np.eye(3)
    w[2, 2] = np.linalg.det(u @ vt)
    return u @ w @ vt


@dataclass(frozen=True)
class PDM:
    mean_shape: np.ndarray  # (3n,)
    princ_comp: np.ndarray  # (3n, m)
    eigen_values: np.ndarray  # (m,)

    @classmethod
    def of(cls, data: PDMData) -> PDM:
        return cls(data.mean_shape, data.princ_comp, data.eigen_values)

    @property
    def n_points(self) -> int:
        return self.mean_shape.size // 3

    @property
    def n_modes(self) -> int:
        return self.eigen_values.size

    def shape_2d(self, params_global: np.ndarray, params_local: np.ndarray) -> np.ndarray:
        """``PDM::CalcShape2D`` as (n, 2)."""
        n = self.n_points
        shape = (self.mean_shape + self.princ_comp @ params_local).reshape(3, n)
        r = euler_to_matrix(params_global[1:4])
        return (params_global[0] * (r[:2] @ shape)).T + params_global[4:6]


def calc_params(pdm: PDM, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``PDM::CalcParams``: (global (6,), local (m,)) for (n, 2) landmarks in image pixels."""
    n_all = pdm.n_points
    pts = np.asarray(landmarks, np.float64).reshape(n_all, 2)
    visible = pts[:, 0] != 0
    n = int(visible.sum())
    m = pdm.n_modes
    idx3 = np.concatenate([np.flatnonzero(visible) + k * n_all for k in range(3)])
    mean = pdm.mean_shape[idx3]
    comp = pdm.princ_comp[idx3]
    target = np.concatenate([pts[visible, 0], pts[visible, 1]])

    min_x, max_x = target[:n].min(), target[:n].max()
    min_y, max_y = target[n:].min(), target[n:].max()
    width, height = abs(min_x - max_x), abs(min_y - max_y)
    model = mean.reshape(3, n)  # PDM::CalcBoundingBox at unit scale, no rotation: the mean's x/y extents
    model_w = model[0].max() - model[0].min()
    model_h = model[1].max() - model[1].min()
    scaling = ((width / model_w) + (height / model_h)) / 2.0
    glob = np.array([scaling, 0.0, 0.0, 0.0, (min_x + max_x) / 2.0, (min_y + max_y) / 2.0])
    loc = np.zeros(m)

    def project(shape3d: np.ndarray, g: np.ndarray) -> np.ndarray:
        r = euler_to_matrix(g[1:4])
        xy = g[0] * (r[:2] @ shape3d.reshape(3, n))
        return np.concatenate([xy[0] + g[4], xy[1] + g[5]])

    current_error = np.linalg.norm(project(mean + comp @ loc, glob) - target)
    reg = np.zeros(6 + m)
    reg[6:] = 1.0 / pdm.eigen_values
    regularisation = np.diag(reg)
    not_improved = 0
    for _ in range(MAX_ITERATIONS):
        shape3d = mean + comp @ loc
        residual = target - project(shape3d, glob)
        jac = _jacobian(shape3d.reshape(3, n), comp, glob)
        rhs = jac.T @ residual
        rhs[6:] -= reg[6:] * loc
        hessian = jac.T @ jac + regularisation
        step = DAMPING * _cholesky_solve(hessian, rhs)
        glob, loc = _update(glob, loc, step)
        error = np.linalg.norm(project(shape3d, glob) - target)
        if IMPROVEMENT * current_error < error:
            not_improved += 1
            if not_improved == PATIENCE:
                break
        current_error = error
    return glob, loc


def _jacobian(shape: np.ndarray, comp: np.ndarray, glob: np.ndarray) -> np.ndarray:
    """``PDM::ComputeJacobian`` (identity weights): rows x of every point, then y; columns scale, the three
    small-angle rotations, tx, ty, the modes."""
    n = shape.shape[1]
    s = glob[0]
    r = euler_to_matrix(glob[1:4])
    x, y, z = shape
    jac = np.zeros((2 * n, 6 + comp.shape[1]))
    for row, k in ((slice(0, n), 0), (slice(n, 2 * n), 1)):
        r1, r2, r3 = r[k]
        jac[row, 0] = x * r1 + y * r2 + z * r3
        jac[row, 1] = s * (y * r3 - z * r2)
        jac[row, 2] = -s * (x * r3 - z * r1)
        jac[row, 3] = s * (x * r2 - y * r1)
        jac[row, 4] = 1.0 if k == 0 else 0.0
        jac[row, 5] = 0.0 if k == 0 else 1.0
        vx, vy, vz = comp[:n], comp[n:2 * n], comp[2 * n:]
        jac[row, 6:] = s * (r1 * vx + r2 * vy + r3 * vz)
    return jac


def _cholesky_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``cv::solve(..., DECOMP_CHOLESKY)`` (the Hessian plus a positive regulariser is positive definite)."""
    lower = np.linalg.cholesky(a)
    return np.linalg.solve(lower.T, np.linalg.solve(lower, b))


def _update(glob: np.ndarray, loc: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``PDM::UpdateModelParameters``."""
    out = glob.copy()
    out[0] += step[0]
    out[4] += step[4]
    out[5] += step[5]
    r1 = euler_to_matrix(glob[1:4])
    wx, wy, wz = step[1:4]
    r2 = np.array([[1.0, -wz, wy], [wz, 1.0, -wx], [-wy, wx, 1.0]])
    euler = matrix_to_euler(r1 @ orthonormalise(r2))
    out[1:4] = 0.0 if np.isnan(euler).any() else euler
    return out, loc + step[6:]
