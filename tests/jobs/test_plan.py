"""Planning a video into shards."""

from __future__ import annotations

from itertools import product

import pytest

from daemon.jobs.plan import FrameSelection, plan_selection, plan_shards

GRID = list(product([1, 2, 3, 5, 9, 10, 47, 48, 49, 96, 97, 275, 1000], [1, 7, 48], [1, 2, 3, 4, 8]))


def check_cover(ranges, frames, shard_frames):
    covered = [i for start, stop in ranges for i in range(start, stop)]
    assert covered == list(range(frames))  # every frame exactly once, in order
    assert all(0 < stop - start <= shard_frames for start, stop in ranges)


@pytest.mark.parametrize("frames,shard_frames,workers", GRID)
def test_plan_covers_every_frame_once(frames, shard_frames, workers):
    check_cover(plan_shards(frames, shard_frames, workers), frames, shard_frames)


@pytest.mark.parametrize("frames", [0, -3])
def test_plan_of_nothing(frames):
    assert plan_shards(frames, 48, 4) == []


@pytest.mark.parametrize("frames,workers", [(1, 1), (2, 2), (10, 4), (12, 4), (30, 8), (100, 8), (96, 2), (8, 8)])
def test_plan_gives_every_worker_a_shard(frames, workers):
    assert len(plan_shards(frames, 48, workers)) >= workers


def lanes(ranges, frames, workers):
    """The plan's ranges split at the lane starts (k * frames // workers)."""
    starts = {k * frames // workers for k in range(workers)}
    out: list[list[tuple[int, int]]] = []
    for r in ranges:
        if r[0] in starts:
            out.append([])
        out[-1].append(r)
    return out


@pytest.mark.parametrize("frames,shard_frames,workers", [(1000, 48, 2), (1000, 48, 3), (275, 32, 2), (5000, 32, 8)])
def test_plan_shards_are_lanes_that_shrink_towards_their_ends(frames, shard_frames, workers):
    ranges = plan_shards(frames, shard_frames, workers)
    check_cover(ranges, frames, shard_frames)
    parts = lanes(ranges, frames, workers)
    assert len(parts) == workers  # one lane per worker, equal to within a frame
    assert max(p[-1][1] - p[0][0] for p in parts) - min(p[-1][1] - p[0][0] for p in parts) <= 1
    for k, part in enumerate(parts):
        sizes = [stop - start for start, stop in part]
        if k == 0:  # the video opens with a smallest shard: its first result within a few frames
            assert sizes[0] == max(1, shard_frames // 16)
            sizes = sizes[1:]
        full = max(0, (part[-1][1] - part[0][0] - 4 * workers * shard_frames) // shard_frames)  # plenty left
        assert sizes[:full] == [shard_frames] * full
        assert sizes == sorted(sizes, reverse=True)  # shrinking
        assert sizes[-1] <= shard_frames // 16  # each lane ends with a small shard
    assert len(ranges) < frames / shard_frames + 5 * workers * workers  # not many more than equal shards


def test_plan_shards_guided_sizes():
    sizes = [b - a for a, b in plan_shards(275, 32, 2)]
    assert sizes == [2, 32, 32, 32, 20, 10, 5, 2, 2] + [32, 32, 32, 21, 11, 5, 3, 2]  # the first lane opens small


def test_plan_fewer_frames_than_workers():
    assert plan_shards(3, 48, 8) == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize("frames,workers", [(9, 4), (5, 4), (20, 8)])
def test_plan_gives_every_worker_a_shard_for_any_short_video(frames, workers):
    ranges = plan_shards(frames, 48, workers)
    check_cover(ranges, frames, 48)
    assert len(ranges) >= workers


@pytest.mark.parametrize("total,selection", [(275, FrameSelection(0, None, 3)), (100, FrameSelection(10, 50, 1)),
                                             (100, FrameSelection(7, 93, 5)), (10, FrameSelection(0, 1000, 4))])
def test_plan_of_a_selection_covers_exactly_the_selected_frames(total, selection):
    ranges = plan_selection(total, selection, 16, 2)
    measured = [i for start, stop in ranges for i in range(start, stop, selection.step)]
    assert measured == list(selection.frames(total))
    assert all(start in selection.frames(total) for start, _ in ranges)  # each shard starts on a selected frame
    assert all(len(range(start, stop, selection.step)) <= 16 for start, stop in ranges)


def test_a_time_selection_becomes_frames_of_the_video():
    from types import SimpleNamespace

    from daemon.jobs.plan import TimeSelection

    info = SimpleNamespace(timestamps=[i / 25 for i in range(50)])  # 25 fps, 2 s
    assert TimeSelection().frames(info) == FrameSelection(0, None, 1)
    # frames 5 .. 17: from the first at or after 0.2 s to the last before 0.7 s
    assert TimeSelection(start_s=0.2, end_s=0.7, every=2).frames(info) == FrameSelection(5, 18, 2)
    assert TimeSelection(start_s=0.21).frames(info).start == 6  # the first frame at or after the time
    assert TimeSelection(end_s=9.0).frames(info).stop == 50
