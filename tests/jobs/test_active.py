"""A started job checked, probed and planned (or its plan resumed) into an ActiveJob."""

from __future__ import annotations

import pytest

from daemon.core.schema import SHARD_FORMAT
from daemon.core.video import probe
from daemon.jobs.active import JobFailure, pending, prepare
from daemon.jobs.inputs import fingerprint
from daemon.jobs.plan import TimeSelection
from daemon.jobs.store import JobStore


@pytest.fixture
def started(tmp_path, synthetic_video):
    """(store, running job) for a 20-frame video."""
    video = synthetic_video(frames=20, width=32, height=32, name="a.mp4")
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        job, _ = store.add_job(fingerprint(video), video, "", "a.mp4", "k")
        yield store, store.start(job.id)


def test_a_job_is_planned_into_lanes_and_its_frames_counted(started):
    store, job = started
    active = prepare(store, job, TimeSelection(), 4, 2, probe)
    assert active.frames_total == 20 and active.frames_done == 0
    assert sorted(active.ranges) == pending(store, job.id) and active.ranges[0][0] == 0
    assert store.get(job.id).frames_total == 20  # the plan is in the store
    assert active.task(0).label == f"job {job.id} shard 0" and active.frames(0) == f"frames 1-{active.ranges[0][1]}"


def test_a_resumed_plan_counts_its_committed_frames_and_redoes_older_formats(started):
    store, job = started
    first = prepare(store, job, TimeSelection(), 4, 2, probe)
    store.shard_done(job.id, 0, b"rows", SHARD_FORMAT)
    store.shard_done(job.id, 1, b"rows of an older aud", SHARD_FORMAT - 1)
    again = prepare(store, store.get(job.id), TimeSelection(), 4, 2, probe)
    assert again.ranges == first.ranges
    assert again.frames_done == first.ranges[0][1] - first.ranges[0][0]  # shard 0 only: shard 1 is redone
    assert 1 in pending(store, job.id) and 0 not in pending(store, job.id)


def test_an_input_replaced_by_other_content_is_left_alone(started):
    store, job = started
    with open(job.source, "ab") as f:
        f.write(b"other content")
    with pytest.raises(JobFailure, match="replaced by different content") as caught:
        prepare(store, job, TimeSelection(), 4, 2, probe)
    assert caught.value.set_aside is False


def test_an_input_gone_or_without_selected_frames_fails_with_the_reason(started, tmp_path):
    store, job = started
    with pytest.raises(JobFailure, match="no frames selected"):
        prepare(store, job, TimeSelection(start_s=5.0), 4, 2, probe)
    (tmp_path / "a.mp4").unlink()
    with pytest.raises(JobFailure, match="was moved or deleted"):
        prepare(store, job, TimeSelection(), 4, 2, probe)
