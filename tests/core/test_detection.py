"""RetinaFace pre/post-processing against literal ports of the upstream (Pytorch_Retinaface) code."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import product
from math import ceil

import cv2
import numpy as np
import pytest

from daemon.core import detection
from daemon.core.detection import Detection

CFG_MNET = {"min_sizes": [[16, 32], [64, 128], [256, 512]], "steps": [8, 16, 32], "clip": False,
            "variance": [0.1, 0.2]}


# --- upstream, ported literally (torch replaced by numpy) ----------------------------------------

def upstream_priors(image_size: tuple[int, int]) -> np.ndarray:
    """Pytorch_Retinaface/layers/functions/prior_box.py PriorBox.forward."""
    min_sizes_cfg, steps = CFG_MNET["min_sizes"], CFG_MNET["steps"]
    feature_maps = [[ceil(image_size[0] / step), ceil(image_size[1] / step)] for step in steps]
    anchors = []
    for k, f in enumerate(feature_maps):
        min_sizes = min_sizes_cfg[k]
        for i, j in product(range(f[0]), range(f[1])):
            for min_size in min_sizes:
                s_kx = min_size / image_size[1]
                s_ky = min_size / image_size[0]
                dense_cx = [x * steps[k] / image_size[1] for x in [j + 0.5]]
                dense_cy = [y * steps[k] / image_size[0] for y in [i + 0.5]]
                for cy, cx in product(dense_cy, dense_cx):
                    anchors += [cx, cy, s_kx, s_ky]
    output = np.array(anchors, dtype=np.float32).reshape(-1, 4)  # torch.Tensor(...) is float32
    if CFG_MNET["clip"]:
        output = output.clip(0, 1)
    return output


def upstream_decode(loc: np.ndarray, priors: np.ndarray, variances) -> np.ndarray:
    """Pytorch_Retinaface/utils/box_utils.py decode."""
    boxes = np.concatenate((
        priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
        priors[:, 2:] * np.exp(loc[:, 2:] * variances[1])), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def py_cpu_nms(dets, thresh):
    """Pytorch_Retinaface/utils/nms/py_cpu_nms.py, verbatim."""
    x1 = dets[:, 0]
    y1 = dets[:, 1]
    x2 = dets[:, 2]
    y2 = dets[:, 3]
    scores = dets[:, 4]

    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]

    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])

        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)

        inds = np.where(ovr <= thresh)[0]
        order = order[inds + 1]

    return keep


def upstream_detect(loc, conf, im_height, im_width, resize=1.0):
    """face_detection.py FaceDetector.detect_faces after the forward pass (boxes and scores)."""
    scale = np.array([im_width, im_height, im_width, im_height], dtype=np.float32)
    # upstream builds priors from the *raw* image size and the scale from the network input size;
    # they coincide at resize == 1
    priors = upstream_priors((im_height, im_width))
    boxes = upstream_decode(loc, priors, CFG_MNET["variance"])
    boxes = boxes * scale / resize
    scores = conf[:, 1]
    inds = np.where(scores > 0.02)[0]
    boxes, scores = boxes[inds], scores[inds]
    dets = np.hstack((boxes, scores[:, np.newaxis])).astype(np.float32, copy=False)
    keep = py_cpu_nms(dets, 0.4)
    return dets[keep]


# --- priors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(64, 64), (360, 640), (33, 47), (480, 270), (1, 1), (31, 33)])
def test_priors_match_upstream_prior_box(hw):
    ours = detection.priors(*hw)
    ref = upstream_priors(hw)
    assert ours.shape == ref.shape
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)


def test_prior_count_for_non_multiples():
    # 33x47: ceil -> 5x6, 3x3, 2x2 cells, two sizes each
    assert len(detection.priors(33, 47)) == (5 * 6 + 3 * 3 + 2 * 2) * 2
    assert len(detection.priors(360, 640)) == (45 * 80 + 23 * 40 + 12 * 20) * 2


def test_priors_are_read_only_cache():
    p = detection.priors(64, 64)
    with pytest.raises(ValueError):
        p[0, 0] = 1.0


# --- decode / nms -----------------------------------------------------------------------------------

def test_decode_matches_upstream():
    rng = np.random.default_rng(0)
    pri = detection.priors(33, 47)
    loc = rng.normal(0, 1.5, (len(pri), 4)).astype(np.float32)
    np.testing.assert_allclose(detection.decode_boxes(loc, pri), upstream_decode(loc, pri.copy(), (0.1, 0.2)),
                               rtol=1e-6, atol=1e-7)


def test_decode_zero_regression_is_the_prior():
    pri = detection.priors(64, 64)
    boxes = detection.decode_boxes(np.zeros((len(pri), 4), np.float32), pri)
    np.testing.assert_allclose(boxes[:, :2], pri[:, :2] - pri[:, 2:] / 2, atol=1e-7)
    np.testing.assert_allclose(boxes[:, 2:], pri[:, :2] + pri[:, 2:] / 2, atol=1e-7)


@pytest.mark.parametrize("seed", range(6))
def test_nms_matches_py_cpu_nms_on_random_boxes(seed):
    rng = np.random.default_rng(seed)
    n = 300
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(1, 60, (n, 2))
    boxes = np.hstack([xy, xy + wh]).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    dets = np.hstack([boxes, scores[:, None]]).astype(np.float32)
    assert detection.nms(boxes, scores) == [int(i) for i in py_cpu_nms(dets, 0.4)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("stop_below", [0.0, 0.5, 0.9, 1.1])
def test_nms_stopping_below_a_score_is_a_prefix_of_the_full_result(seed, stop_below):
    # ties included (scores rounded to 0.05): the order is the full argsort's either way
    rng = np.random.default_rng(seed)
    n = 300
    xy = rng.uniform(0, 200, (n, 2))
    boxes = np.hstack([xy, xy + rng.uniform(1, 60, (n, 2))]).astype(np.float32)
    scores = (np.round(rng.uniform(0, 1, n) * 20) / 20).astype(np.float32)
    full = detection.nms(boxes, scores)
    below = [k for k, i in enumerate(full) if scores[i] < stop_below]
    expected = full[:below[0] + 1] if below else full
    assert detection.nms(boxes, scores, stop_below=stop_below) == expected
    assert len(expected) >= 1 and all(scores[i] >= stop_below for i in expected[:-1])


def test_detections_stop_below_keep_every_face_and_the_best():
    hw = (64, 64)
    p = len(detection.priors(*hw))
    rng = np.random.default_rng(3)
    loc = rng.normal(0, 1, (p, 4)).astype(np.float32)
    face = rng.uniform(0, 1, p).astype(np.float32) ** 3
    conf = np.stack([1 - face, face], axis=1)
    full = detection.detections(loc, conf, hw, 1.0)
    short = detection.detections(loc, conf, hw, 1.0, stop_below=detection.FACE_THRESHOLD)
    faces = [d for d in full if d.score >= detection.FACE_THRESHOLD]
    assert 0 < len(faces) < len(short) < len(full)  # this input has faces and boxes below
    assert [d.score for d in short] == [d.score for d in full[:len(short)]]
    assert all(np.array_equal(a.box, b.box) for a, b in zip(short, full))
    assert short[-1].score < detection.FACE_THRESHOLD <= short[-2].score
    # no face at all: the best box still comes back (its score is the frame's confidence)
    weak = np.stack([1 - face * 0.4, face * 0.4], axis=1).astype(np.float32)
    (best,) = detection.detections(loc, weak, hw, 1.0, stop_below=detection.FACE_THRESHOLD)
    assert best.score == detection.detections(loc, weak, hw, 1.0)[0].score


def test_nms_plus_one_area_convention():
    # two 10x10 boxes (corner to corner 0..9 => 10 pixels each with the +1 convention), shifted by 4:
    # +1 overlap = 6*10 = 60, union = 100+100-60 = 140, IoU 0.43 > 0.4 => suppressed.
    # Without the +1 (9x9 areas, 5x9 overlap): 45/117 = 0.38 => both kept.
    boxes = np.array([[0, 0, 9, 9], [4, 0, 13, 9]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert detection.nms(boxes, scores) == [0]


def test_nms_keeps_a_box_at_exactly_the_iou_threshold():
    # B (4x10 = 40 pixels with +1) inside A (10x10 = 100): IoU = 40 / 100 = 0.4, not above 0.4 => kept
    boxes = np.array([[0, 0, 9, 9], [0, 0, 3, 9]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    dets = np.hstack([boxes, scores[:, None]])
    assert detection.nms(boxes, scores) == [int(i) for i in py_cpu_nms(dets, 0.4)] == [0, 1]


def test_nms_keeps_disjoint_boxes_best_first():
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [100, 0, 110, 10]], np.float32)
    scores = np.array([0.3, 0.9, 0.6], np.float32)
    assert detection.nms(boxes, scores) == [1, 2, 0]


# --- detections / primary face -----------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(64, 64), (33, 47), (120, 90)])
@pytest.mark.parametrize("seed", [0, 1])
def test_detections_match_upstream_pipeline(hw, seed):
    rng = np.random.default_rng(seed)
    p = len(detection.priors(*hw))
    loc = rng.normal(0, 1, (p, 4)).astype(np.float32)
    face = rng.uniform(0, 1, p).astype(np.float32) ** 3  # many below 0.02, some high
    conf = np.stack([1 - face, face], axis=1)
    ours = detection.detections(loc, conf, hw, 1.0)
    ref = upstream_detect(loc, conf, *hw)
    assert len(ours) == len(ref) > 0
    np.testing.assert_allclose(np.array([d.box for d in ours]), ref[:, :4], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.array([d.score for d in ours], np.float32), ref[:, 4])
    assert all(isinstance(d.box, np.ndarray) and d.box.dtype == np.float32 for d in ours)


def test_scores_threshold_is_strictly_greater_than_002():
    hw = (32, 32)
    p = len(detection.priors(*hw))
    conf = np.zeros((p, 2), np.float32)
    conf[0, 1] = np.float32(0.02)
    conf[5, 1] = np.float32(0.0201)
    found = detection.detections(np.zeros((p, 4), np.float32), conf, hw, 1.0)
    assert [round(d.score, 4) for d in found] == [0.0201]


def test_detections_scaled_input_back_to_frame_pixels():
    # detector ran on a half-size image: boxes come back in full-frame pixels
    hw = (32, 48)
    p = len(detection.priors(*hw))
    conf = np.zeros((p, 2), np.float32)
    conf[0, 1] = 0.9
    (d,) = detection.detections(np.zeros((p, 4), np.float32), conf, hw, 0.5)
    # prior 0: centre (4, 4), size 16 in the 48x32 input -> [-4, -4, 12, 12] -> x2 in the frame
    np.testing.assert_allclose(d.box, [-8, -8, 24, 24], atol=1e-4)


def test_detections_empty_when_nothing_passes():
    hw = (16, 16)
    p = len(detection.priors(*hw))
    conf = np.tile([0.99, 0.01], (p, 1)).astype(np.float32)
    assert detection.detections(np.zeros((p, 4), np.float32), conf, hw, 1.0) == []


def test_detector_input_is_bgr_minus_mean_nchw():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    tensor, scale = detection.detector_input(img)
    assert scale == 1.0 and tensor.shape == (1, 3, 2, 3) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor[0, 0], img[:, :, 0].astype(np.float32) - 104)
    np.testing.assert_array_equal(tensor[0, 2], img[:, :, 2].astype(np.float32) - 123)


@pytest.mark.parametrize("max_side", [0, 50])
def test_detector_input_is_contiguous_and_equals_convert_subtract_transpose(max_side):
    img = np.random.default_rng(3).integers(0, 256, (72, 96, 3), dtype=np.uint8)
    tensor, scale = detection.detector_input(img, max_side)
    assert tensor.flags.c_contiguous  # ONNX Runtime would copy a transposed view
    reference = np.float32(img)
    if scale != 1.0:
        reference = cv2.resize(reference, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(tensor, (reference - detection.BGR_MEAN).transpose(2, 0, 1)[np.newaxis])


def test_detector_input_buffer_is_reused_while_the_size_stays():
    rng = np.random.default_rng(5)
    first, second = (rng.integers(0, 256, (40, 60, 3), dtype=np.uint8) for _ in range(2))
    buffer = detection.InputBuffer()
    a, _ = detection.detector_input(first, buffer=buffer)
    b, _ = detection.detector_input(second, buffer=buffer)
    assert a is b  # one tensor, overwritten: no fresh 25 MB a frame at 1920x1080
    np.testing.assert_array_equal(b, detection.detector_input(second)[0])
    c, _ = detection.detector_input(rng.integers(0, 256, (30, 60, 3), dtype=np.uint8), buffer=buffer)
    assert c is not b and c.shape == (1, 3, 30, 60)
    d, _ = detection.detector_input(np.zeros((100, 200, 3), np.uint8), max_side=60, buffer=buffer)
    assert d.shape == (1, 3, 30, 60) and d is c  # the scaled frame's size


def test_detector_input_buffer_is_one_tensor_per_thread():
    buffer = detection.InputBuffer()
    mine = buffer.get(4, 6)
    with ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(buffer.get, 4, 6).result()
    assert theirs is not mine and buffer.get(4, 6) is mine


def test_detector_input_max_side_scales_down_only():
    img = np.zeros((100, 200, 3), np.uint8)
    tensor, scale = detection.detector_input(img, max_side=100)
    assert scale == 0.5 and tensor.shape == (1, 3, 50, 100)
    tensor, scale = detection.detector_input(img, max_side=400)
    assert scale == 1.0 and tensor.shape == (1, 3, 100, 200)


@pytest.mark.parametrize("score,expected", [(0.5, True), (0.49999, False), (0.9, True)])
def test_primary_face_threshold(score, expected):
    det = Detection(np.zeros(4, np.float32), score)
    assert (detection.primary_face([det]) is det) is expected


def test_primary_face_is_the_first_detection_only():
    best = Detection(np.zeros(4, np.float32), 0.4)
    other = Detection(np.ones(4, np.float32), 0.9)  # never first after NMS, but: only [0] counts
    assert detection.primary_face([best, other]) is None
    assert detection.primary_face([]) is None
