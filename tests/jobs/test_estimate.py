"""The time-left estimates (daemon/jobs/estimate.py)."""

from __future__ import annotations

from daemon.jobs.estimate import Basis, Rate, Running, job_rate, queue, recent_rate, seconds
from daemon.jobs.store import Job


def queued(frames: int | None) -> Job:
    return Job(1, "fp", "k", "/in/a.mp4", "", "a.mp4", "queued", None, frames, None, None, 0.0, 0.0, None, None)


def test_the_recent_rate_is_the_median_of_the_done_jobs_rates():
    assert recent_rate([10.0, 30.0, 20.0]) == 20.0
    assert recent_rate([10.0, 1000.0]) == 505.0 and recent_rate([]) is None and recent_rate([0.0]) is None


def test_a_job_rests_on_its_own_rate_once_it_has_committed_frames():
    assert job_rate(0, 3.0, 20.0) == Rate(20.0, Basis.RECENT_JOBS)  # its running shards' first frames: not yet
    assert job_rate(8, 3.0, 20.0) == Rate(3.0, Basis.JOB)
    assert job_rate(0, 3.0, None) == Rate(3.0, Basis.JOB)  # no job done yet: its running shards' rate
    assert job_rate(0, 0.0, None) is None
    assert seconds(100, Rate(20.0, Basis.JOB)) == 5.0 and seconds(100, None) is None and seconds(-3, 2.0) == 0.0


def test_the_queue_runs_its_running_jobs_together_then_the_queued_ones_in_turn():
    running = [Running(100, Rate(10.0, Basis.JOB)), Running(50, Rate(5.0, Basis.RECENT_JOBS))]
    # 150 frames left at 15 fps together (10 s), then 40 frames at 20 fps (2 s); one queued job not probed
    ahead = queue(running, [queued(40), queued(None)], 20.0)
    assert (ahead.eta_s, ahead.unknown) == (12.0, 1)
    assert queue([], [], None).eta_s == 0.0  # nothing left
    nothing = queue([Running(10, None)], [queued(None)], None)
    assert (nothing.eta_s, nothing.unknown) == (None, 2)
    assert queue([], [queued(40)], None).eta_s is None  # probed, but no rate known
