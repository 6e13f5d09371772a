"""Inspection videos on a short synthetic video: frame count and rate, pass-through of face-less frames,
the mirrored and annotated frames, and nothing left behind on failure.

The outputs are mp4v (lossy): decoded outputs are compared with what the functions compute from the
decoded input, by mean absolute difference per frame. Measured codec noise on these frames: at most 2.9
grey levels on average (single pixels up to 74 at the blob's sharp edge), while the wrong picture (the
unmirrored input, or the other side) is 13 or more away; the bound of 5 separates the two on any CPU,
as the encoder's noise depends on the content and quantiser, not on the instruction set.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from daemon.core import mirror, mirror_video
from daemon.core.video import VideoError, read_range

W, H, N, FPS = 128, 96, 6, 25.0
CODEC_NOISE = 5.0  # mean absolute grey levels (measured at most 2.9)


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """Smooth gradients and a red blob left of centre that moves: clearly asymmetric."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = np.clip(60 + 100 * xs / width + 20 * np.sin(ys / 9 + index), 0, 255)
    image[..., 1] = np.clip(200 - 120 * ys / height, 0, 255)
    image[..., 2] = np.where((xs - 30 - index) ** 2 + (ys - 40) ** 2 < 300, 190, 40)
    return image


def face(roll: float) -> mirror.FaceGeometry:
    centre = np.array([64.3, 40.0])
    across = np.array([math.cos(roll), math.sin(roll)])
    points = centre + np.random.default_rng(0).uniform(-20, 20, (98, 2))
    points[96], points[97] = centre - 20 * across, centre + 20 * across
    points[64], points[68] = centre - 7 * across, centre + 7 * across
    return mirror.FaceGeometry(landmarks=points, box=np.array([34.0, 10.0, 94.0, 80.0]))


FACES = [face(0.1 * i) if i % 2 == 0 else None for i in range(N)]


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def decoded(path) -> list[np.ndarray]:
    return [f.image for f in read_range(path, 0, N)]


@pytest.fixture
def rendered(synthetic_video, tmp_path):
    video = synthetic_video(frames=N, width=W, height=H, fps=FPS, pattern=pattern)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    paths = mirror_video.render_inspection_videos(video, FACES, out_dir, "clip", FPS)
    return video, out_dir, paths


def test_three_videos_with_the_inputs_frame_count_and_rate(rendered):
    _, out_dir, paths = rendered
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "clip.left_mirrored.mp4", "clip.midline.mp4", "clip.right_mirrored.mp4"]  # no temp files left
    for path in (paths.left_mirrored, paths.right_mirrored, paths.midline):
        cap = cv2.VideoCapture(str(path))
        try:
            assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
            assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (W, H)
            count = 0
            while cap.grab():
                count += 1
        finally:
            cap.release()
        assert count == N, path.name


def test_frames_without_a_face_pass_through(rendered):
    video, _, paths = rendered
    source = decoded(video)
    for path in (paths.left_mirrored, paths.right_mirrored, paths.midline):
        for index, picture in enumerate(decoded(path)):
            if FACES[index] is None:
                assert mean_diff(picture, source[index]) < CODEC_NOISE, (path.name, index)


def test_face_frames_are_the_mirrored_frames_and_symmetric(rendered):
    video, _, paths = rendered
    source = decoded(video)
    outputs = {"left": decoded(paths.left_mirrored), "right": decoded(paths.right_mirrored)}
    for index, geometry in enumerate(FACES):
        if geometry is None:
            continue
        line = mirror.midline(geometry.landmarks)
        expected = dict(zip(("left", "right"), mirror.mirrored_frames(source[index], line)))
        for side, other in (("left", "right"), ("right", "left")):
            picture = outputs[side][index]
            assert mean_diff(picture, expected[side]) < CODEC_NOISE, (side, index)
            assert mean_diff(picture, expected[other]) > 2 * CODEC_NOISE, (side, index)
            assert mean_diff(picture, source[index]) > 2 * CODEC_NOISE, (side, index)
            # symmetric about the midline: its own reflection, while the input is far from its own
            assert mean_diff(mirror.reflected_frame(picture, line), picture) < CODEC_NOISE, (side, index)
            assert mean_diff(mirror.reflected_frame(source[index], line), source[index]) > 4 * CODEC_NOISE


def test_midline_video_shows_the_annotations(rendered):
    video, _, paths = rendered
    source = decoded(video)
    for index, picture in enumerate(decoded(paths.midline)):
        geometry = FACES[index]
        if geometry is None:
            continue
        line = mirror.midline(geometry.landmarks)
        drawn = mirror_video.annotate(source[index], geometry, line)
        changed = np.abs(drawn.astype(int) - source[index].astype(int)).max(axis=2) > 60
        assert changed.mean() > 0.02  # the drawing covers a visible part of the frame
        # where something was drawn, the video shows the drawing, not the input
        assert mean_diff(picture[changed], drawn[changed]) < mean_diff(picture[changed], source[index][changed]) / 3


@pytest.mark.parametrize("roll", [0.0, 0.3])
def test_annotate_draws_the_midline_where_it_crosses_the_frame(roll):
    """Far below the face (only the midline is drawn there) the drawn pixels sit on the midline's x at
    that height, in the midline's colour (antialiased: scaled, so blue stays 0)."""
    frame = np.zeros((H, W, 3), np.uint8)
    geometry = face(roll)
    line = mirror.midline(geometry.landmarks)
    drawn = mirror_video.annotate(frame, geometry, line)
    row = drawn[H - 3].astype(int)
    columns = np.flatnonzero(row.max(axis=1))
    assert 0 < len(columns) <= 3
    assert np.abs(columns - line.x_at(H - 3)).max() < 1.6
    assert (row[columns, 0] == 0).all() and (row[columns, 1] == row[columns, 2]).all()
    assert row[:, 1].max() > 200
    assert frame.max() == 0  # the input is not drawn on


def test_a_video_shorter_than_the_faces_fails_and_leaves_nothing(synthetic_video, tmp_path):
    video = synthetic_video(frames=3, width=W, height=H, fps=FPS, pattern=pattern)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(VideoError, match="ends at frame 3"):
        mirror_video.render_inspection_videos(video, FACES, out_dir, "clip", FPS)
    assert list(out_dir.iterdir()) == []


def test_bad_arguments_are_named(synthetic_video, tmp_path):
    video = synthetic_video(frames=2, width=W, height=H, fps=FPS, pattern=pattern)
    with pytest.raises(ValueError, match="faces is empty"):
        mirror_video.render_inspection_videos(video, [], tmp_path, "clip", FPS)
    with pytest.raises(ValueError, match="frame rate"):
        mirror_video.render_inspection_videos(video, [None, None], tmp_path, "clip", 0.0)
