"""The official OpenFace 3.0 pipeline on a video, timed: the other side of ``bench/versus_official.py``.

Runs in a venv of its own, never the project's: PyPI's ``openface-test==0.1.26`` (the official classes
``FaceDetector``, ``LandmarkDetector``, ``MultitaskPredictor``) needs torchvision and timm, and PyPI's
torchvision does not load beside the CPU torch the project's export extra uses. On x86-64 (see
bench/README.md, "Against the official pipeline")::

    python3 -m venv ../benchvenv
    ../benchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 openface-test==0.1.26 onnx

``make-checkpoints`` writes the three official checkpoint files (``Alignment_RetinaFace.pth``,
``MTL_backbone.pth``, ``Landmark_98.pkl``, each in its official container) holding the weights of the
shared ONNX models, rebuilt into state dicts the way ``tests/tools/test_arch_official.py`` checks them:
both pipelines then compute the same networks, and only the pipelines differ. The STAR file holds the
network without the shared model's appended template (three element-wise ops on 196 numbers).

``run`` measures the primary face of every frame as OpenFace 3.0's own code does it, with one change: the
official ``FaceDetector`` reads each image from a path (``cv2.imread``); here it is handed the decoded
frame (``preprocess_image`` overridden, its body otherwise the same), so it is not charged for writing
and reading image files. Per frame: RetinaFace at full resolution with the official pre- and
post-processing, the best detection if it reaches 0.5, STAR's landmarks of that face
(``LandmarkDetector.detect_landmarks``; skipped with ``--no-landmarks``), MTL on its crop
(``MultitaskPredictor.predict``); a frame whose face crop is empty (a box off the frame's top or left
edge: the official code slices the frame with negative indices) is counted but not measured. PyTorch
runs on ``--threads`` intra-op threads (default: every core). It prints one JSON line: frames, faces,
the seconds of the frame loop (decoding included, model loading not), frames/s, and model loading.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
FILES = {"detector": "Alignment_RetinaFace.pth", "multitask": "MTL_backbone.pth", "landmarks": "Landmark_98.pkl"}


def make_checkpoints(models: Path, out: Path) -> None:
    """The shared ONNX models' weights as the official checkpoint files."""
    import numpy as np
    import torch

    sys.path.insert(0, str(PROJECT))
    from daemon.tools.checkpoints import Role, build, container_for, load_strict
    from tests.tools.onnx_weights import state_dict_from_onnx, unread_keys_of_running_modules

    out.mkdir(parents=True, exist_ok=True)
    for role, onnx_name, shape, prefix in ((Role.DETECTOR, "retinaface.onnx", (1, 3, 96, 128), ""),
                                           (Role.MULTITASK, "mtl.onnx", (1, 3, 224, 224), ""),
                                           (Role.LANDMARKS, "star.onnx", (1, 3, 256, 256), "n.")):
        model = build(role)
        example = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32))
        state, read = state_dict_from_onnx(models / onnx_name, model, example, prefix)
        load_strict(model, state, models / onnx_name)
        unread = unread_keys_of_running_modules(model, example, read)
        if unread:
            raise SystemExit(f"{onnx_name}: weights not in the file: {unread[:5]}")
        torch.save(container_for(role, model.state_dict()), out / FILES[role])
        print(f"{out / FILES[role]}: {len(read)} tensors from {onnx_name}")


def run(video: Path, checkpoints: Path, frames: int | None, threads: int, landmarks_on: bool = True) -> dict:
    import cv2
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    began = time.perf_counter()
    from openface.face_detection import FaceDetector, cfg_mnet
    from openface.landmark_detection import LandmarkDetector
    from openface.multitask_model import MultitaskPredictor

    class FrameDetector(FaceDetector):
        """The official detector, handed a decoded frame instead of an image path."""

        def preprocess_image(self, image, resize: float = 1.0):
            img_raw = image
            img = np.float32(img_raw)
            if resize != 1:
                img = cv2.resize(img, None, fx=resize, fy=resize, interpolation=cv2.INTER_LINEAR)
            img -= (104, 117, 123)
            img = img.transpose(2, 0, 1)
            img = torch.from_numpy(img).unsqueeze(0).to(self.device)
            return img, img_raw

    # the official RetinaFace first loads an ImageNet backbone from ./weights/ when 'pretrain' is set,
    # which the detector checkpoint then overwrites: skipped, the result is the same network
    cfg_mnet["pretrain"] = False
    quiet = io.StringIO()  # the official classes print every face and their configuration
    with contextlib.redirect_stdout(quiet):
        detector = FrameDetector(str(checkpoints / FILES["detector"]), device="cpu")
        landmarks = LandmarkDetector(str(checkpoints / FILES["landmarks"]), device="cpu") if landmarks_on else None
        multitask = MultitaskPredictor(str(checkpoints / FILES["multitask"]), device="cpu")
    loaded = time.perf_counter() - began
    cap = cv2.VideoCapture(str(video))
    done = faces = 0
    start = time.perf_counter()
    with contextlib.redirect_stdout(quiet):
        while frames is None or done < frames:
            ok, frame = cap.read()
            if not ok:
                break
            face, dets = detector.get_face(frame)
            if face is not None and face.size:
                if landmarks is not None:
                    landmarks.detect_landmarks(frame, dets[:1])
                multitask.predict(face)
                faces += 1
            done += 1
            quiet.seek(0)
            quiet.truncate()
    seconds = time.perf_counter() - start
    cap.release()
    return {"frames": done, "faces": faces, "seconds": round(seconds, 3), "fps": round(done / seconds, 3),
            "load_seconds": round(loaded, 3), "threads": threads, "landmarks": landmarks_on,
            "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make-checkpoints")
    mk.add_argument("out", type=Path)
    mk.add_argument("--models", type=Path, default=PROJECT.parent / "shared" / "models" / "openface3")
    rn = sub.add_parser("run")
    rn.add_argument("video", type=Path)
    rn.add_argument("--checkpoints", type=Path, required=True)
    rn.add_argument("--frames", type=int, default=None)
    rn.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    rn.add_argument("--no-landmarks", action="store_true", help="skip STAR (the like of aud's --no-au45)")
    args = ap.parse_args(argv)
    if args.command == "make-checkpoints":
        make_checkpoints(args.models, args.out)
    else:
        print(json.dumps(run(args.video, args.checkpoints, args.frames, args.threads, not args.no_landmarks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
