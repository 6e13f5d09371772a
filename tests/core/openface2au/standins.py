"""Stand-in OpenFace 2.2 model files in the official formats, generated here: a PDM over a face-shaped
template of our own with random orthonormal modes, a Delaunay triangulation of it, random linear SVR/SVM
models, and an ``AU_all_best.txt`` listing them. Never the official files (their licence forbids shipping them).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from scipy.spatial import Delaunay

from daemon.core.openface2au import files
from daemon.core.openface2au.formats import RegressorType
from daemon.core.openface2au.predict import AUS_C, AUS_R

N_MODES = 34
FEATURES = 4464 + 204 + N_MODES
DYNAMIC_R = {"AU01", "AU02", "AU05", "AU09", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45"}
DYNAMIC_C = {"AU01", "AU02", "AU09", "AU15", "AU17", "AU20", "AU25", "AU26", "AU45"}


def template_68() -> np.ndarray:
    """(68, 3) a face-shaped point set in the iBUG order (x right, y down, z towards the camera), ~140 wide."""
    pts = []
    for t in np.linspace(-0.95 * np.pi / 2 - 0.35, 0.95 * np.pi / 2 + 0.35, 17):  # contour 0-16
        pts.append((70 * np.sin(t), 67.5 * np.cos(t), -30 * abs(np.sin(t))))
    for side in (-1, 1):  # brows 17-21 (subject's right = image left), 22-26
        xs = np.linspace(-58, -14, 5) if side == -1 else np.linspace(14, 58, 5)
        for x in xs:
            pts.append((x, -38 - 6 * np.cos((abs(x) - 36) / 22 * np.pi / 2), 8))
    for y in np.linspace(-25, 8, 4):  # nose bridge 27-30
        pts.append((0.0, y, 15 + 0.6 * (y + 25)))
    for x in np.linspace(-14, 14, 5):  # nose base 31-35
        pts.append((x, 15 - 0.05 * x * x / 2, 20 - abs(x) * 0.5))
    for cx in (-32, 32):  # eyes 36-41, 42-47
        for ang in (180, 135, 45, 0, -45, -135):
            a = np.radians(ang)
            pts.append((cx + 13 * np.cos(a), -20 - 5 * np.sin(a), 5.0))
    for ang in np.linspace(180, -150, 12):  # outer lip 48-59
        a = np.radians(ang)
        pts.append((26 * np.cos(a), 38 - 10 * np.sin(a), 10 - 4 * abs(np.cos(a))))
    for ang in (180, 120, 90, 60, 0, -60, -90, -120):  # inner lip 60-67
        a = np.radians(ang)
        pts.append((20 * np.cos(a), 38 - 4 * np.sin(a), 10.0))
    out = np.array(pts, np.float64)
    assert out.shape == (68, 3), out.shape
    return out


def pdm_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = template_68()
    mean = np.concatenate([t[:, 0], t[:, 1], t[:, 2]])
    q, _ = np.linalg.qr(rng.standard_normal((204, N_MODES)))
    eig = np.geomspace(300.0, 0.5, N_MODES)
    return mean, q, eig


def _text_matrix(m: np.ndarray, code: int) -> str:
    m = np.atleast_2d(m)
    rows = "\n".join(" ".join(repr(float(v)) if code == 6 else str(int(v)) for v in row) for row in m)
    return f"{m.shape[0]}\n{m.shape[1]}\n{code}\n{rows}\n"


def write_pdm(path: Path, seed: int = 0) -> None:
    mean, comp, eig = pdm_arrays(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# The mean values of the components (in mm)\n" + _text_matrix(mean[:, None], 6)
                    + "# The principal components (eigenvectors)\n"
                    + _text_matrix(comp, 6)
                    + "# The variances of the components (eigenvalues)\n"
                    + _text_matrix(eig[None], 6))


def triangles() -> np.ndarray:
    return Delaunay(template_68()[:, :2]).simplices.astype(np.int64)


def write_triangulation(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_text_matrix(triangles(), 4))


def _mat_bin(m: np.ndarray) -> bytes:
    m = np.atleast_2d(np.asarray(m, "<f8"))
    return struct.pack("<iii", m.shape[0], m.shape[1], 6) + m.tobytes()


def model_bytes(kind: RegressorType, rng: np.random.Generator, cutoff: float = -1.0) -> bytes:
    means = rng.normal(0.0, 0.01, (1, FEATURES))
    weights = rng.normal(0.0, 0.02, (FEATURES, 1))
    out = struct.pack("<i", int(kind))
    if kind == RegressorType.SVR_DYNAMIC:
        out += struct.pack("<d", cutoff)
    out += _mat_bin(means) + _mat_bin(weights) + struct.pack("<d", float(rng.normal(0.5, 0.3)))
    if kind in (RegressorType.SVM_STATIC, RegressorType.SVM_DYNAMIC):
        out += struct.pack("<dd", 1.0, 0.0)
    return out


def write_models(root: Path, seed: int = 1) -> None:
    """AU_all_best.txt and its svr_combined/ and svm_combined/ files under ``root`` (= <models>/openface2)."""
    rng = np.random.default_rng(seed)
    folder = root / Path(files.AU_LIST_PATH).parent
    lines = []
    for au in AUS_R:
        dyn = au in DYNAMIC_R
        name = f"svr_combined/AU_{int(au[2:])}_{'dynamic' if dyn else 'static'}_intensity_comb.dat"
        kind = RegressorType.SVR_DYNAMIC if dyn else RegressorType.SVR_STATIC
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(model_bytes(kind, rng, cutoff=float(rng.uniform(0.1, 0.8)) if dyn else -1.0))
        lines.append(f"{name} {au}")
    for au in AUS_C:
        dyn = au in DYNAMIC_C
        name = f"svm_combined/AU_{int(au[2:])}_{'dynamic' if dyn else 'static'}.dat"
        kind = RegressorType.SVM_DYNAMIC if dyn else RegressorType.SVM_STATIC
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(model_bytes(kind, rng))
        lines.append(f"{name} {au}")
    (root / files.AU_LIST_PATH).write_text("\n".join(lines) + "\n")


def make_model_set(models_dir: Path) -> Path:
    """A full stand-in OpenFace 2.2 set under ``models_dir/openface2``; returns that folder."""
    root = models_dir / files.SUBDIR
    write_pdm(root / files.PDM_PATH)
    write_triangulation(root / files.TRIANGULATION_PATH)
    write_models(root)
    return root


def face_image(landmarks: np.ndarray, size: tuple[int, int] = (360, 640), seed: int = 3) -> np.ndarray:
    """A textured BGR frame with the landmarks' face drawn on it (so FHOG has edges to measure)."""
    import cv2

    rng = np.random.default_rng(seed)
    image = (rng.random((*size, 3)) * 60 + 90).astype(np.uint8)
    image = cv2.GaussianBlur(image, (5, 5), 0)
    pts = np.round(landmarks).astype(np.int32)
    cv2.fillConvexPoly(image, cv2.convexHull(pts), (120, 150, 190))
    for a, b in ((17, 22), (22, 27), (36, 42), (42, 48), (48, 60), (27, 36)):
        cv2.polylines(image, [pts[a:b]], False, (40, 40, 60), 2)
    return image
