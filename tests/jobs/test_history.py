"""Tests for the store's read-only history (daemon/jobs/history.py): counts, failures, rates, known files."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.jobs.history import History
from daemon.jobs.store import JOB_STATES, Job, JobStore

RANGES = [(0, 10), (10, 20), (20, 30), (30, 35)]


@pytest.fixture
def store(tmp_path: Path):
    s = JobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def _add(store: JobStore, fp: str, name: str = "clip.mp4", identity: str | None = None) -> Job:
    job, created = store.add_job(fp, Path("/inbox") / name, "", name, identity=identity)
    assert created
    return job


def _running(store: JobStore, fp: str) -> Job:
    job = _add(store, fp)
    store.set_plan(job.id, 35, '{"fps": 30}', RANGES)
    return store.start(job.id)


def test_counts_have_every_state_and_failures_come_most_recent_first(store: JobStore) -> None:
    history = History(store)
    assert history.counts() == dict.fromkeys(JOB_STATES, 0)
    ids = [_add(store, f"fp-{i}", f"v{i}.mp4").id for i in range(5)]
    store.cancel(ids[2])
    for running in (ids[1], ids[3]):
        store.start(running)
    store.fail(ids[0], "no video stream")  # queued, then failed (a file that does not decode)
    store.fail(ids[1], "no face found")  # failed while running, after ids[0]
    assert history.counts() == {"queued": 1, "running": 1, "done": 0, "failed": 2, "cancelled": 1}
    failures = history.recent_failures()
    assert [j.id for j in failures] == [ids[1], ids[0]]
    assert failures[0].reason == "no face found"
    assert [j.id for j in history.recent_failures(limit=1)] == [ids[1]]


def test_recent_rates_are_the_last_done_jobs_measured_rates(store: JobStore) -> None:
    for i, fps in enumerate([5.0, None, 7.0, 9.0]):
        job = _running(store, f"fp-{i}")
        for shard in store.shards(job.id):
            store.shard_done(job.id, shard.index, b"rows", 2)
        assert store.finish(job.id, f"/out/{i}.csv", fps).fps == fps
    failed = _running(store, "fp-failed")
    store.fail(failed.id, "bad")
    history = History(store)
    assert history.recent_rates(5) == [9.0, 7.0, 5.0]  # most recent first; no rate and not done: left out
    assert history.recent_rates(2) == [9.0, 7.0]


def test_a_known_identity_gives_the_newest_content_recorded_with_it(store: JobStore) -> None:
    history = History(store)
    assert history.fingerprint_of("1:2:3:4") is None
    _add(store, "fp-old", "a.mp4", identity="1:2:3:4")
    _add(store, "fp-other", "b.mp4", identity="1:5:3:4")
    assert history.fingerprint_of("1:2:3:4") == "fp-old"
    newer = _add(store, "fp-new", "c.mp4")
    store.set_identity(newer.id, "1:2:3:4")  # the same file, rewritten and hashed again
    assert history.fingerprint_of("1:2:3:4") == "fp-new"
