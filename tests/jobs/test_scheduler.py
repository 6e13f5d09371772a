"""Which shard runs next: turns across jobs, retries first, reading on, lanes and work stealing."""

from __future__ import annotations

import heapq

import pytest

from daemon.core.video import READ_AHEAD
from daemon.jobs.plan import plan_shards
from daemon.jobs.scheduler import FairScheduler, pick


def shards(ranges):
    return dict(enumerate(ranges))


def test_jobs_take_turns_and_a_retry_runs_first():
    s = FairScheduler()
    s.add(1, "a", shards([(0, 4), (4, 8), (8, 12)]))
    s.add(2, "b", shards([(0, 4), (4, 8)]))
    assert s.next() == (1, 0)
    assert s.next() == (2, 0)
    s.retry(2, 0)
    s.finished(1, 0)
    assert s.next([("a", 4)]) == (1, 1)  # reading on
    assert s.next([("b", 4)]) == (2, 0)  # job 2's turn: its retried shard before reading on
    assert s.next() == (1, 2) and s.next() == (2, 1)
    assert s.next() is None and s.pending() == 0
    s.add(3, "c", shards([(4, 5)]))
    s.remove(3)
    assert s.next() is None


def test_retry_of_a_shard_not_handed_out_is_ignored():
    s = FairScheduler()
    s.add(1, "a", shards([(0, 4)]))
    s.retry(1, 0)  # never handed out: nothing changes
    s.retry(7, 0)  # an unknown job
    assert s.next() == (1, 0) and s.next() is None


def test_two_fresh_workers_start_at_the_two_lanes():
    ranges = plan_shards(275, 32, 2)
    s = FairScheduler()
    s.add(1, "v", shards(ranges))
    first, second = s.next(), s.next()
    assert ranges[first[1]][0] == 0
    assert ranges[second[1]][0] == 137  # the second lane's start, the frame that halves the work


@pytest.mark.parametrize("gap", [0, 1, READ_AHEAD - 1])
def test_an_idle_worker_reads_on_where_its_capture_stands(gap):
    ranges = [(0, 10), (10 + gap, 40), (40, 50), (50, 60)]
    s = FairScheduler()
    s.add(1, "v", shards(ranges))
    s.add(2, "other.mp4", shards([(0, 10)]))
    resume = [("other.mp4", 10), ("v", 10)]
    assert s.next(resume) == (1, 1)
    assert resume == [("other.mp4", 10)]  # the point used is spoken for


def test_a_resume_point_too_far_behind_is_not_read_on():
    ranges = [(0, 10), (10 + READ_AHEAD, 30), (30, 34), (34, 90)]
    s = FairScheduler()
    s.add(1, "v", shards(ranges))
    resume = [("v", 10)]
    assert s.next(resume) == (1, 1) and resume == [("v", 10)]  # the longest stretch, not as reading on
    assert s.next([("v", 30)]) == (1, 2)  # reading on beats the longer (34, 90)


def test_pick_prefers_a_stretch_nobody_reads_towards():
    pending = shards([(10, 20), (20, 30), (50, 60)])
    assert pick(pending, running=[(0, 10)]) == 1  # (10..30) is read from its front: split it...
    assert pick(pending, running=[(0, 10), (40, 50)]) == 1  # ...when (50, 60) is too, the larger half
    assert pick(shards([(10, 20), (50, 60), (60, 70)]), running=[(0, 10)]) == 1  # an unclaimed stretch


def test_pick_splits_the_work_left_to_a_reading_in_half():
    pending = shards([(32 * i, 32 * (i + 1)) for i in range(1, 8)])  # 32 .. 256 pending
    assert pending[pick(pending, running=[(0, 32)])] == (128, 160)  # the reader at ~16: halves at ~136


def simulate(frames: int, speeds: list[float], shard_frames: int = 32, seek: float = 0.5):
    """Workers of the given seconds per frame taking shards as they free up, each remembering where its
    reading stands, as the runner and a local pool do: (makespan, seeks)."""
    ranges = plan_shards(frames, shard_frames, len(speeds))
    s = FairScheduler()
    s.add(1, "v", shards(ranges))
    position: dict[int, int | None] = {w: None for w in range(len(speeds))}
    idle, running, now, seeks = list(range(len(speeds))), [], 0.0, 0
    while True:
        resume = [("v", position[w]) for w in idle if position[w] is not None]
        while idle and (picked := s.next(resume)) is not None:
            start, stop = ranges[picked[1]]
            reading = [w for w in idle if position[w] is not None and 0 <= start - position[w] < READ_AHEAD]
            worker = (reading or idle)[0]
            idle.remove(worker)
            seeks += not reading
            heapq.heappush(running, (now + (stop - start) * speeds[worker] + (0 if reading else seek),
                                     worker, picked[1]))
        if not running:
            return now, seeks
        now, worker, index = heapq.heappop(running)
        s.finished(1, index)
        position[worker] = ranges[index][1]
        idle.append(worker)


@pytest.mark.parametrize("frames", [275, 1000, 9000])
@pytest.mark.parametrize("speeds", [[1.0, 1.0], [1.0, 1.15], [1.0, 1.0, 1.0, 1.0], [1.0, 1.1, 1.2, 1.3]])
def test_workers_read_their_lanes_in_order_and_finish_together(frames, speeds):
    makespan, seeks = simulate(frames, speeds)
    ideal = frames / sum(1 / v for v in speeds)
    assert seeks <= 2 * len(speeds)  # a first seek each, and a few steals
    assert makespan < ideal * 1.05 + 2 * max(speeds) * 32 // 16  # balanced to within a small shard
