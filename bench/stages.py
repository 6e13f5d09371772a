"""Where one frame's time goes: the single-thread pipeline, stage by stage, in this process.

    .venv/bin/python bench/stages.py VIDEO [--frames 16] [--limit-threads] [--shared-arena] [--mirror]

Prints milliseconds per frame for decode, detector input, RetinaFace, box decoding, MTL crop, MTL, STAR
crop and STAR; with ``--mirror`` also the hemi-face stages: the midline and the two mirrored frames (one
warp, two seams), the two mirrored MTL crops, and MTL on them (one batch of 2). ``--limit-threads`` and
``--shared-arena`` set this process up as ``prepare_process`` sets up a worker (BLAS and OpenCV on one
thread; one ONNX Runtime arena for the three sessions). Start two at once to see what two workers on two
cores do to each other, e.g. with and without ``--limit-threads``:

    for i in 1 2; do .venv/bin/python bench/stages.py clip1080.mp4 & done; wait
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", type=Path)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--models", type=Path, default=PROJECT.parent / "shared" / "models" / "openface3")
    ap.add_argument("--limit-threads", action="store_true", help="BLAS and OpenCV on one thread, as in a worker")
    ap.add_argument("--shared-arena", action="store_true", help="one ONNX Runtime arena, as in a worker")
    ap.add_argument("--mirror", action="store_true", help="time the hemi-face stages too")
    args = ap.parse_args()

    import numpy as np

    from daemon.core import blink, crops, detection, mirror, providers, worker
    from daemon.core.pipeline import Pipeline, PipelineOptions
    from daemon.core.video import read_range

    if args.limit_threads:
        worker.limit_threads(1)
    if args.shared_arena:
        providers.share_cpu_arena()
    cores = os.cpu_count() or 1
    pipe = Pipeline(PipelineOptions(models_dir=args.models, provider="cpu", workers=cores))  # 1 thread
    spent: dict[str, float] = defaultdict(float)
    warm_up = 2
    buffer = detection.InputBuffer()
    frames = read_range(args.video, 0, args.frames + warm_up)
    for i in range(args.frames + warm_up):
        if i == warm_up:
            spent.clear()
        t = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal t
            now = time.perf_counter()
            spent[stage] += now - t
            t = now

        frame = next(frames)
        lap("decode")
        tensor, scale = detection.detector_input(frame.image, buffer=buffer)
        lap("detector input")
        boxes, scores, _ = pipe.models.outputs.detector
        loc, conf = pipe.sessions["detector"].run([boxes, scores], {pipe.models.input_name("detector"): tensor})
        lap("RetinaFace")
        face = detection.primary_face(detection.detections(loc[0], conf[0], tensor.shape[2:], scale))
        lap("boxes")
        if face is None:
            continue
        mtl = crops.mtl_input(frame.image, face.box)[None]
        lap("MTL crop")
        pipe.multitask(mtl)
        lap("MTL")
        matrix = crops.star_matrix(face.box)
        star = crops.star_input(frame.image, matrix)[None]
        lap("STAR crop")
        points = crops.star_points_to_frame(pipe.landmarks(star)[0], matrix)
        blink.openness(points[None])
        lap("STAR")
        if args.mirror:
            line = mirror.midline(points.astype("float64"))
            sides = mirror.mirrored_frames(frame.image, line)
            lap("mirror: midline + warp + seams")
            box = mirror.mirrored_box(face.box, line)
            batch = np.stack([crops.mtl_input(side, box) for side in sides])
            lap("mirror: 2 MTL crops")
            pipe.multitask(batch)
            lap("mirror: MTL x2")
    total = sum(spent.values())
    print(f"{args.video.name}, {args.frames} frames, ms/frame: "
          + ", ".join(f"{k} {1000 * v / args.frames:.1f}" for k, v in spent.items())
          + f"; total {1000 * total / args.frames:.1f}")


if __name__ == "__main__":
    main()
