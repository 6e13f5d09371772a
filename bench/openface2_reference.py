"""An independent reference for aud's OpenFace 2.2 AU stages: pyfaceau 1.4.1 (PyPI, CC BY-NC 4.0) and pyfhog, run
in a venv of their own, on stand-in model files (never the official ones), given landmarks and frames.

Three steps (the committed result, tests/core/openface2au/reference/pyfaceau.npz, is what CI checks against,
without pyfaceau: tests/core/openface2au/test_parity.py)::

    python bench/openface2_reference.py setup                # /tmp/of2ref-venv: pyfaceau (no deps), OpenCV 4, …
    PYTHONPATH=. .venv/bin/python bench/openface2_reference.py inputs --out /tmp/of2ref/inputs.npz
    /tmp/of2ref-venv/bin/python bench/openface2_reference.py run --inputs /tmp/of2ref/inputs.npz \\
        --out tests/core/openface2au/reference/pyfaceau.npz

``inputs`` (the project's venv) writes the stand-in model set (tests/core/openface2au/standins.py, fixed seeds)
under ``--models`` and picks ``--frames`` frames of the shared clip with 68 landmarks of our own (the stand-in PDM
at known poses and shapes on the frame, plus pixel noise): the clip's frames are not copied anywhere, only
their indexes are kept. ``run`` (the reference venv; it imports pyfaceau, never aud) reads the same model files
and decoded frames and records, per frame, pyfaceau's ``CalcParams`` (PDM::CalcParams), ``OpenFace22FaceAligner``
(AlignFaceMask, masked), pyfhog's FHOG, ``PDMParser.extract_geometric_features`` and ``OF22ModelParser``'s
median-free SVR scores ``(x - means) . w + bias``, with the sha256 of every model file it read; and OpenCV 4's
``cv2.warpAffine`` of a seeded noise image under 12 similarity warps (``warp_cases``).

pyfaceau's own pipeline takes the PDM parameters from its CLNF tracker; here they come from its ``CalcParams``
on the given landmarks, as OpenFace's ``FaceAnalyser::AddNextFrame`` does (``pdm.CalcParams(params_global,
params_local, detected_landmarks)``).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
VENV = Path("/tmp/of2ref-venv")
PINS = ("numpy<2.3", "opencv-python>=4.5,<5", "scipy", "numba", "llvmlite", "pyfhog==0.1.5")
CLIP = PROJECT.parent / "shared" / "media" / "hamilton_clip.mp4"
MODELS = Path("/tmp/of2ref/models")


def setup(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, *PINS], check=True)
    subprocess.run([*pip, "--no-deps", "pyfaceau==1.4.1"], check=True)  # its CLNF, MTCNN, torch: not needed


def poses(n: int, seed: int = 11):
    """(global, local) PDM parameters of ``n`` frames: a face of ~200 px near the clip's centre, turning a
    little, with shapes within a standard deviation."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        g = np.array([rng.uniform(1.2, 1.6), rng.uniform(-0.2, 0.2), rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.2),
                      rng.uniform(280, 360), rng.uniform(150, 210)])
        out.append((g, rng.normal(0, 0.6, 34)))
    return out


def make_inputs(out: Path, models: Path, frames: int) -> None:
    import numpy as np

    sys.path.insert(0, str(PROJECT))
    from daemon.core.openface2au.analyser import Analyser
    from tests.core.openface2au import standins

    standins.make_model_set(models)
    pdm = Analyser.load(models).pdm
    rng = np.random.default_rng(12)
    indexes = np.linspace(0, 270, frames).astype(int)
    landmarks = []
    for g, p in poses(frames):
        landmarks.append(pdm.shape_2d(g, p * np.sqrt(pdm.eigen_values)) + rng.normal(0, 0.7, (68, 2)))
    np.savez(out, frames=indexes, landmarks=np.array(landmarks), clip=str(CLIP), models=str(models))
    print(f"{out}: {frames} frames {indexes.tolist()}")


def warp_cases(seed: int = 21):
    """A noise image and float32 similarity warps (some reaching past its edges), for OpenCV 4's warpAffine."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    matrices = []
    for _ in range(12):
        a, th = rng.uniform(0.3, 1.5), rng.uniform(-0.6, 0.6)
        matrices.append([[a * np.cos(th), -a * np.sin(th), rng.uniform(-60, 20)],
                         [a * np.sin(th), a * np.cos(th), rng.uniform(-50, 20)]])
    return image, np.array(matrices, np.float32)


def model_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run(inputs: Path, out: Path) -> None:
    import cv2
    import numpy as np
    import pyfhog
    from pyfaceau.alignment.calc_params import CalcParams
    from pyfaceau.alignment.face_aligner import OpenFace22FaceAligner
    from pyfaceau.features.pdm import PDMParser
    from pyfaceau.features.triangulation import TriangulationParser
    from pyfaceau.prediction.model_parser import OF22ModelParser

    data = np.load(inputs)
    root = Path(str(data["models"])) / "openface2"
    pdm_file = root / "lib/local/LandmarkDetector/model/pdms/In-the-wild_aligned_PDM_68.txt"
    predictors = root / "lib/local/FaceAnalyser/AU_predictors"
    pdm = PDMParser(str(pdm_file))
    fit = CalcParams(pdm)
    aligner = OpenFace22FaceAligner(str(pdm_file))
    tris = TriangulationParser(str(predictors / "tris_68_full.txt"))
    parser = OF22ModelParser(str(predictors))
    models = parser.load_all_models()
    names = sorted(models)
    capture = cv2.VideoCapture(str(data["clip"]))
    record: dict[str, list] = {k: [] for k in ("params_global", "params_local", "aligned", "hog", "geom", "svr",
                                               "frame_sha256")}
    for index, points in zip(data["frames"].tolist(), data["landmarks"]):
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if not ok:
            raise SystemExit(f"frame {index} of {data['clip']} unreadable")
        record["frame_sha256"].append(hashlib.sha256(frame.tobytes()).hexdigest())
        g, p = fit.calc_params(points.astype(np.float32))
        face = aligner.align_face(frame, points, float(g[4]), float(g[5]), float(g[3]), apply_mask=True,
                                  triangulation=tris)
        hog = pyfhog.extract_fhog_features(face, cell_size=8)
        geom = pdm.extract_geometric_features(np.asarray(p, np.float64))
        x = np.concatenate([hog, geom])
        record["params_global"].append(g)
        record["params_local"].append(p)
        record["aligned"].append(face)
        record["hog"].append(hog)
        record["geom"].append(geom)
        record["svr"].append([parser.predict_au(x, models[n]) for n in names])
    warp_image, warp_matrices = warp_cases()
    warps = np.array([cv2.warpAffine(warp_image, m, (48, 48), flags=cv2.INTER_LINEAR) for m in warp_matrices])
    hashes = model_hashes(root)
    np.savez_compressed(out, frames=data["frames"], landmarks=data["landmarks"], svr_names=np.array(names),
                        model_files=np.array(list(hashes)), model_sha256=np.array(list(hashes.values())),
                        opencv=cv2.__version__, numpy=np.__version__, warp_matrices=warp_matrices, warps=warps,
                        **{k: np.array(v) for k, v in record.items()})
    print(f"{out}: {len(data['frames'])} frames, OpenCV {cv2.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--venv", type=Path, default=VENV)
    i = sub.add_parser("inputs")
    i.add_argument("--out", type=Path, required=True)
    i.add_argument("--models", type=Path, default=MODELS)
    i.add_argument("--frames", type=int, default=6)
    r = sub.add_parser("run")
    r.add_argument("--inputs", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.command == "setup":
        setup(args.venv)
    elif args.command == "inputs":
        make_inputs(args.out, args.models, args.frames)
    else:
        run(args.inputs, args.out)


if __name__ == "__main__":
    main()
