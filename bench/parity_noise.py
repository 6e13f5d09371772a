"""The noise floor of the parity test: how far float rounding alone moves each output on the shared clip.

    .venv/bin/python bench/parity_noise.py [--every 5] [--seed 0]

Runs the pipeline's own pieces (detector input, crops, the three models through ONNX Runtime, one thread)
on every ``--every``-th frame of ../shared/media/hamilton_clip.mp4 and again with each model's input
perturbed the way another CPU's rounding would perturb it:

- ``1 ulp on 1 %``: one float32 ulp, random sign, on 1 % of the input values (one rounding step
  somewhere upstream, e.g. a resize or colour conversion done by another SIMD width);
- ``1 ulp on all``: the same on every value;
- ``noise 1e-6``: Gaussian noise of standard deviation 1e-6 on every value (MTL and STAR inputs live in
  [-2.2, 2.7] and [-1, 1]; for the detector, whose input is pixel minus mean, this is below one ulp of
  most values and rounds away, so it is not run there).

Prints, per perturbation, the largest and the median change of: the primary box (frame px) and its score;
the per-frame largest change of AUs, gaze and emotion probabilities (softmax of the logits); landmarks
in frame pixels (each point's distance; the largest, and the median of every frame's median), eye openness (the
README's formula) — each against the unperturbed
run. The detector is fed the frame's own input (boxes, scores); MTL and STAR get the crops of the
unperturbed box, so each model's own sensitivity is measured, not a chain of them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"


def perturb(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if kind == "1 ulp on 1 %":
        mask = rng.random(x.shape) < 0.01
    elif kind == "1 ulp on all":
        mask = np.ones(x.shape, bool)
    else:  # noise 1e-6
        return (x + rng.normal(0, 1e-6, x.shape)).astype(np.float32)
    towards = np.where(rng.random(x.shape) < 0.5, -np.inf, np.inf).astype(np.float32)
    return np.where(mask, np.nextafter(x, towards), x).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def openness(points: np.ndarray) -> np.ndarray:
    def dist(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1)

    right = np.mean([dist(61, 67), dist(62, 66), dist(63, 65)], axis=0) / dist(60, 64)
    left = np.mean([dist(69, 75), dist(70, 74), dist(71, 73)], axis=0) / dist(68, 72)
    return np.stack([right, left], -1)


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {"max": float(a.max()), "median": float(np.median(a))} if a.size else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=SHARED / "media" / "hamilton_clip.mp4")
    ap.add_argument("--models", type=Path, default=SHARED / "models" / "openface3")
    ap.add_argument("--every", type=int, default=5, help="measure every Nth frame")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import cv2
    import onnxruntime as ort

    from daemon.core import crops, detection
    from daemon.core.models import load_model_set
    from daemon.core.video import read_range

    models = load_model_set(args.models)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    sess = {r: ort.InferenceSession(str(models.path(r)), opts, providers=["CPUExecutionProvider"])
            for r in ("detector", "multitask", "landmarks")}
    det_out = list(models.outputs.detector[:2])
    mtl_out = list(models.outputs.multitask)

    def detect(tensor, scale):
        loc, conf = sess["detector"].run(det_out, {models.input_name("detector"): tensor})
        found = detection.detections(loc[0], conf[0], tensor.shape[2:], scale)
        return detection.primary_face(found)

    def mtl(x):
        emotion, gaze, au = sess["multitask"].run(mtl_out, {models.input_name("multitask"): x[None]})
        return np.concatenate([au[0], gaze[0], softmax(emotion[0])])

    def star(x, matrix):
        (pts,) = sess["landmarks"].run([models.outputs.landmarks], {models.input_name("landmarks"): x[None]})
        return crops.star_points_to_frame(pts[0], matrix)

    kinds = ("1 ulp on 1 %", "1 ulp on all", "noise 1e-6")
    rng = np.random.default_rng(args.seed)
    diffs: dict[str, dict[str, list[float]]] = {k: {} for k in kinds}
    frames = 0
    capture = cv2.VideoCapture(str(args.video))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    for frame in read_range(args.video, 0, count):
        if frame.index % args.every:
            continue
        tensor, scale = detection.detector_input(frame.image)
        tensor = tensor.copy()
        face = detect(tensor, scale)
        if face is None:
            continue
        frames += 1
        mtl_x = crops.mtl_input(frame.image, face.box)
        matrix = crops.star_matrix(face.box)
        star_x = crops.star_input(frame.image, matrix)
        base_mtl, base_pts = mtl(mtl_x), star(star_x, matrix)
        for kind in kinds:
            d = diffs[kind]
            if kind != "noise 1e-6":
                other = detect(perturb(tensor, kind, rng), scale)
                if other is not None:
                    d.setdefault("box px", []).append(float(np.abs(other.box - face.box).max()))
                    d.setdefault("score", []).append(abs(other.score - face.score))
            d.setdefault("AU/gaze/emotion", []).append(float(np.abs(mtl(perturb(mtl_x, kind, rng)) - base_mtl).max()))
            pts = star(perturb(star_x, kind, rng), matrix)
            moved = np.linalg.norm(pts.astype(np.float64) - base_pts, axis=-1)  # [98] px
            d.setdefault("landmark px (point distance)", []).extend(moved.tolist())
            d.setdefault("frame median landmark px", []).append(float(np.median(moved)))
            d.setdefault("eye openness", []).extend(
                np.abs(openness(pts.astype(np.float64)) - openness(base_pts.astype(np.float64))).tolist())
    report = {"frames": frames, "every": args.every}
    report.update({kind: {name: stats(v) for name, v in d.items()} for kind, d in diffs.items()})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
