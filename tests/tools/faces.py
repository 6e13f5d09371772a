"""Real face crops for the model tests, cut at test time from ../shared media (the test skips where the
media is absent): the shared, trained RetinaFace finds the faces, then aud's own crop functions cut them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from daemon.core import crops, detection
from tests.conftest import require_shared

IMAGES = ("media/obama.jpg", "media/two_people.jpg")


def shared_images() -> list[np.ndarray]:
    shared = require_shared(*IMAGES, "models/openface3/retinaface.onnx")
    return [cv2.imread(str(shared / rel)) for rel in IMAGES]


def face_boxes(image: np.ndarray, detector_path: Path) -> list[np.ndarray]:
    session = ort.InferenceSession(str(detector_path), providers=["CPUExecutionProvider"])
    tensor, scale = detection.detector_input(image)
    loc, conf, _ = session.run(None, {session.get_inputs()[0].name: tensor})
    found = detection.detections(loc[0], conf[0], tensor.shape[2:], scale)
    return [d.box for d in found if d.score >= detection.FACE_THRESHOLD]


def real_crops() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(MTL inputs [N,3,224,224], STAR inputs [N,3,256,256], the images) for every face in the shared
    images (three faces)."""
    images = shared_images()
    detector = require_shared() / "models/openface3/retinaface.onnx"
    mtl, star = [], []
    for image in images:
        for box in face_boxes(image, detector):
            mtl.append(crops.mtl_input(image, box))
            star.append(crops.star_input(image, crops.star_matrix(box)))
    assert mtl, "the shared RetinaFace found no face in the shared images"
    return np.stack(mtl), np.stack(star), images


def detector_frames(image: np.ndarray) -> list[np.ndarray]:
    """The image at 640x360 and 1280x720, as detector inputs."""
    return [detection.detector_input(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA))[0].copy()
            for w, h in ((640, 360), (1280, 720))]
