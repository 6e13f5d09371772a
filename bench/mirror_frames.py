"""Time the mirror's per-face image work on one thread: ``mirror.mirrored_frames`` (one warp and the two
seams) and the two MTL crops of the mirrored faces (``crops.mtl_input``), at 640x360 and 1920x1080.

    .venv/bin/python bench/mirror_frames.py [--repeat 200]

The frame is random noise (the warp's cost does not depend on content) with a face of a third of the
frame's height, rolled by 10 degrees; OpenCV is held to one thread, as in a worker of a two-worker run.
"""

from __future__ import annotations

import argparse
import math
import time

import cv2
import numpy as np

from daemon.core import crops, mirror, wflw


def face(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (only the four the midline uses matter) and box of a face in the frame's middle."""
    size = height / 3
    centre = np.array([width / 2 + 0.37, height / 2 - 0.21])
    across = np.array([math.cos(math.radians(10)), math.sin(math.radians(10))])
    points = np.tile(centre, (wflw.N_POINTS, 1))
    points[wflw.RIGHT_PUPIL], points[wflw.LEFT_PUPIL] = centre - 0.2 * size * across, centre + 0.2 * size * across
    points[wflw.RIGHT_EYE_INNER] = centre - 0.07 * size * across
    points[wflw.LEFT_EYE_INNER] = centre + 0.07 * size * across
    box = np.array([centre[0] - size / 2, centre[1] - size / 2, centre[0] + size / 2, centre[1] + size / 2])
    return points, box


def median_ms(work, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def time_size(width: int, height: int, repeat: int, rng: np.random.Generator) -> str:
    """One table row: the medians at one frame size."""
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    points, box = face(width, height)
    line = mirror.midline(points)
    moved = mirror.mirrored_box(box, line)
    left, right = mirror.mirrored_frames(frame, line)
    warp = median_ms(lambda: mirror.mirrored_frames(frame, line), repeat)
    crop = median_ms(lambda: (crops.mtl_input(left, moved), crops.mtl_input(right, moved)), repeat)
    return f"| {width}x{height} | {warp:.2f} ms | {crop:.2f} ms | {box[2] - box[0]:.0f} px |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    print("| frame | mirrored_frames (1 warp + 2 seams) | 2 MTL crops of the mirrored faces | face box |")
    print("|---|---|---|---|")
    for width, height in ((640, 360), (1920, 1080)):
        print(time_size(width, height, args.repeat, rng))


if __name__ == "__main__":
    main()
