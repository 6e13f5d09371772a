"""Following faces between detections (``follow.py``): the landmark-box rule and each way following is lost,
on synthetic boxes, landmarks and images."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.core.follow import (
    LANDMARK_BOX,
    Bounds,
    BoxMap,
    Followed,
    Follower,
    Lost,
    drift,
    left_frame,
    merged,
    scene_changed,
    thumbnail,
)

W, H = 320, 240
BOUNDS = Bounds()


def points_for(box, box_map: BoxMap = LANDMARK_BOX, seed: int = 0) -> np.ndarray:
    """98 landmarks whose landmark box is ``box``: the extent the map turns into it, corners included,
    the other points scattered inside."""
    x1, y1, x2, y2 = box
    w, h = (x2 - x1) / box_map.sw, (y2 - y1) / box_map.sh
    cx, cy = (x1 + x2) / 2 - box_map.dx * w, (y1 + y2) / 2 - box_map.dy * h
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(cx - w / 2, cx + w / 2, 98), rng.uniform(cy - h / 2, cy + h / 2, 98)])
    pts[0], pts[1] = (cx - w / 2, cy - h / 2), (cx + w / 2, cy + h / 2)
    return pts.astype(np.float32)


def image(level: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(level + rng.normal(0, 5, (H, W, 3)), 0, 255).astype(np.uint8)


# --- the landmark box ---------------------------------------------------------------------------------

def test_landmark_box_maps_the_extent_by_centre_offset_and_size_scale():
    m = BoxMap(dx=0.1, dy=-0.2, sw=1.5, sh=2.0)
    pts = np.array([[10.0, 20.0], [30.0, 60.0], [20.0, 40.0]])  # extent x 10..30, y 20..60: centre (20, 40)
    # centre (20 + 0.1*20, 40 - 0.2*40) = (22, 32); size (1.5*20, 2*40) = (30, 80)
    np.testing.assert_allclose(m.box(pts), [7.0, -8.0, 37.0, 72.0], atol=1e-5)


def test_landmark_box_ignores_points_inside_the_extent_and_scales_with_the_face():
    box = np.array([100.0, 50.0, 180.0, 150.0])
    np.testing.assert_allclose(LANDMARK_BOX.box(points_for(box)), box, atol=1e-3)
    np.testing.assert_allclose(LANDMARK_BOX.box(points_for(box, seed=3)), box, atol=1e-3)
    np.testing.assert_allclose(LANDMARK_BOX.box(points_for(box * 2)), box * 2, atol=1e-3)


# --- the loss conditions ------------------------------------------------------------------------------

def test_a_landmark_box_close_to_its_crop_holds():
    crop = np.array([100.0, 100.0, 180.0, 200.0])
    assert drift(crop, crop, BOUNDS) is None
    assert drift(crop, crop + [8, 10, 8, 10], BOUNDS) is None  # IoU 0.71
    assert drift(crop, np.array([104.0, 105.0, 176.0, 195.0]), BOUNDS) is None  # 0.9 of the size


def test_a_landmark_box_that_moved_or_resized_too_far_is_lost():
    crop = np.array([100.0, 100.0, 180.0, 200.0])
    assert drift(crop, crop + [30, 0, 30, 0], BOUNDS) is Lost.MOVED  # IoU 0.45
    assert drift(crop, crop + [200, 0, 200, 0], BOUNDS) is Lost.MOVED  # elsewhere
    centre = np.array([140.0, 150.0, 140.0, 150.0])
    bigger = centre + 1.3 * (crop - centre)  # IoU 1/1.69 = 0.59 holds, the size ratio 1.3 does not
    assert drift(crop, bigger, BOUNDS) is Lost.RESIZED
    smaller = centre + 0.75 * (crop - centre)  # IoU 0.5625, ratio 0.75
    assert drift(crop, smaller, BOUNDS) is Lost.RESIZED
    assert drift(crop, np.array([140.0, 150.0, 140.0, 150.0]), BOUNDS) is Lost.MOVED  # degenerate


@pytest.mark.parametrize("box, out", [
    ([10, 10, 110, 110], False),
    ([-9, 10, 91, 110], False),  # 9 % of the width outside on the left: within the 10 % margin
    ([-11, 10, 89, 110], True),
    ([W - 91, 10, W + 11, 110], True),  # right
    ([10, -12, 110, 88], True),  # top
    ([10, H - 88, 110, H + 12], True),  # bottom
    ([400, 300, 500, 400], True),  # wholly outside
])
def test_a_box_leaving_the_frame_by_more_than_the_margin_is_lost(box, out):
    assert left_frame(np.array(box, np.float32), W, H, BOUNDS) is out


def test_two_followed_boxes_merging_are_lost():
    a = np.array([10.0, 10.0, 110.0, 110.0])
    assert not merged([a], BOUNDS)
    assert not merged([a, a + 200], BOUNDS)
    assert not merged([a, a + [60, 0, 60, 0]], BOUNDS)  # IoU 0.25: side by side
    assert merged([a, a + [30, 0, 30, 0]], BOUNDS)  # IoU 0.54, more than the detector's NMS (0.4) keeps


def test_scene_change_is_a_large_mean_grey_difference():
    a, b = thumbnail(image(100, seed=1)), thumbnail(image(100, seed=2))
    assert thumbnail(image()).shape == (36, 64)
    assert not scene_changed(a, b, BOUNDS)  # noise only
    assert not scene_changed(a, thumbnail(image(115)), BOUNDS)  # 15 grey levels brighter
    assert scene_changed(a, thumbnail(image(125)), BOUNDS)
    other = image(100)
    other[:, : W // 2] = 10  # half the picture changed by 90 levels: a mean of 45
    assert scene_changed(a, thumbnail(other), BOUNDS)


# --- the follower: which frames are detected ------------------------------------------------------------

def detect_frame(follower: Follower, img: np.ndarray, boxes: list, score: float = 0.9) -> None:
    """What the pipeline does on a detected frame: the faces found, with landmarks that put each
    face's next box where its box is now."""
    follower.found([Followed(np.array(b, np.float32), score) for b in boxes], [points_for(b) for b in boxes])


def test_detect_every_1_detects_every_frame():
    f = Follower(1)
    for _ in range(4):
        assert f.plan(image()) is None and f.lost is None
        detect_frame(f, image(), [[10, 10, 110, 110]])
    assert f.previous_thumbnail is None  # no thumbnails made


def test_every_nth_frame_is_detected_and_faces_are_followed_between():
    f = Follower(3)
    box = [100.0, 60.0, 180.0, 160.0]
    plans = []
    for i in range(7):
        plan = f.plan(image(seed=i))
        plans.append(plan is not None)
        if plan is None:
            detect_frame(f, image(), [box], score=0.8)
        else:
            assert len(plan) == 1 and plan[0].score == 0.8  # the last detection's score
            np.testing.assert_allclose(plan[0].box, box, atol=1e-3)  # the previous frame's landmark box
            moved = np.array(box) + [2, 1, 2, 1]
            assert f.drifted(plan, [points_for(moved)]) is None
            f.found(plan, [points_for(moved)])
            box = list(moved)
    assert plans == [False, True, True, False, True, True, False]


def test_nothing_to_follow_is_detected():
    f = Follower(5)
    f.plan(image())
    f.found([], [])
    assert f.plan(image()) is None and f.lost is None


def test_a_scene_change_is_detected():
    f = Follower(5)
    f.plan(image(100))
    detect_frame(f, image(100), [[10, 10, 110, 110]])
    assert f.plan(image(100, seed=1)) is not None
    assert f.plan(image(160)) is None and f.lost is Lost.SCENE_CHANGE


def test_a_face_is_never_followed_out_of_the_frame():
    f = Follower(5)
    f.plan(image())
    detect_frame(f, image(), [[W - 100, 10, W + 5, 110]])  # 5 % outside: still followed
    assert f.plan(image()) is not None
    f.found([Followed(np.array([W - 100, 10, W + 5, 110], np.float32), 0.9)], [points_for([W - 90, 10, W + 20, 110])])
    assert f.plan(image()) is None and f.lost is Lost.LEFT_FRAME


def test_all_faces_one_lost_face_detects_the_frame():
    f = Follower(5)
    f.plan(image())
    detect_frame(f, image(), [[10, 10, 90, 110], [200, 10, 280, 110]])
    plan = f.plan(image())
    assert plan is not None and len(plan) == 2
    landmarks = [points_for([10, 10, 90, 110]), points_for([240, 10, 320, 110])]  # the second moved away
    assert f.drifted(plan, landmarks) is Lost.MOVED
    detect_frame(f, image(), [[12, 10, 92, 110]])
    f.found([Followed(np.array([10, 10, 90, 110], np.float32), 0.9)] * 2,
            [points_for([10, 10, 90, 110]), points_for([30, 10, 110, 110])])  # two faces onto one
    assert f.plan(image()) is None and f.lost is Lost.MERGED


def test_landmarks_without_a_value_end_that_face():
    f = Follower(5)
    f.plan(image())
    bad = points_for([10, 10, 90, 110])
    bad[5] = np.nan
    f.found([Followed(np.array([10, 10, 90, 110], np.float32), 0.9)], [bad])
    assert f.plan(image()) is None  # nothing left to follow


def test_detect_every_must_be_positive():
    with pytest.raises(ValueError, match="detect_every must be 1 or more"):
        Follower(0)
