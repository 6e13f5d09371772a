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


def counted_hashes(monkeypatch) -> list[str]:
    """Every content hash from now on (``inputs.fingerprint``), by path."""
    from daemon.jobs import inputs

    calls: list[str] = []
    real = inputs.fingerprint
    monkeypatch.setattr(inputs, "fingerprint", lambda path, *a: calls.append(str(path)) or real(path, *a))
    return calls


@pytest.fixture
def identified(tmp_path, synthetic_video):
    """(store, running job) whose input's identity was recorded when it was hashed."""
    from daemon.jobs import inputs

    video = synthetic_video(frames=20, width=32, height=32, name="a.mp4")
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        identity = inputs.identity_text(inputs.identity(video))
        job, _ = store.add_job(fingerprint(video), video, "", "a.mp4", "k", identity=identity)
        yield store, store.start(job.id)


def test_an_unchanged_input_is_not_hashed_again_at_its_start(identified, monkeypatch):
    store, job = identified
    hashes = counted_hashes(monkeypatch)
    active = prepare(store, job, TimeSelection(), 4, 2, probe)
    assert hashes == [] and active.frames_total == 20


def test_an_input_rewritten_in_place_under_the_same_name_is_hashed_and_caught(identified, monkeypatch):
    """Same name, same inode, same size: only the content (and so the mtime) differs."""
    import os

    store, job = identified
    st = os.stat(job.source)
    with open(job.source, "r+b") as f:
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(job.source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a coarse clock may not move
    assert os.stat(job.source).st_ino == st.st_ino and os.stat(job.source).st_size == st.st_size
    hashes = counted_hashes(monkeypatch)
    with pytest.raises(JobFailure, match="replaced by different content"):
        prepare(store, job, TimeSelection(), 4, 2, probe)
    assert hashes == [job.source]


def test_an_input_without_a_recorded_identity_is_hashed_once_then_known(started, monkeypatch):
    """A job of an older store (no identity): hashed at its start as before, its identity recorded then."""
    store, job = started
    assert job.identity is None
    hashes = counted_hashes(monkeypatch)
    prepare(store, job, TimeSelection(), 4, 2, probe)
    assert hashes == [job.source] and store.get(job.id).identity is not None
    prepare(store, store.get(job.id), TimeSelection(), 4, 2, probe)  # a resumed start: not hashed again
    assert hashes == [job.source]


def test_a_job_estimates_from_the_recent_jobs_until_a_shard_of_its_own_is_committed(started):
    store, job = started
    first = prepare(store, job, TimeSelection(), 4, 2, probe)
    assert first.recent_fps is None and first.eta_s is None and first.eta_basis is None  # nothing to go on
    first.recent_fps = 40.0
    assert (first.eta_s, first.eta_basis) == (0.5, "recent_jobs")  # 20 frames at 40 fps
    first.in_flight[0] = 2  # its running shard's frames: the recent jobs' rate still stands
    assert (first.eta_s, first.eta_basis) == (round(18 / 40.0, 1), "recent_jobs")
    first.committed(0, 4)
    assert first.eta_basis == "job" and first.eta_s == pytest.approx(16 / first.fps, abs=0.06)
