"""Tests for the durable job store (daemon/jobs/store.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from daemon.jobs.history import History
from daemon.jobs.store import SCHEMA_VERSION, Job, JobStore, Shard, StoreError

REPO_ROOT = Path(__file__).resolve().parents[2]
RANGES = [(0, 10), (10, 20), (20, 30), (30, 35)]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobs.sqlite3"


@pytest.fixture
def store(db_path: Path):
    s = JobStore(db_path)
    yield s
    s.close()


def _add(store: JobStore, fp: str = "fp-1", name: str = "clip.mp4") -> Job:
    job, created = store.add_job(fp, Path("/inbox/sub") / name, "sub", name)
    assert created
    return job


def _running(store: JobStore, fp: str = "fp-1") -> Job:
    job = _add(store, fp)
    store.set_plan(job.id, 35, '{"fps": 30}', RANGES)
    return store.start(job.id)


def pending(store: JobStore, job_id: int) -> list[Shard]:
    """The job's shards still to be computed, by index."""
    return [s for s in store.shards(job_id) if not s.done]


def _run_child(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


# -- schema ------------------------------------------------------------------------------------


def test_schema_created_with_wal_full_sync_and_version(db_path: Path) -> None:
    with JobStore(db_path) as store:
        conn = store._conn  # the store's own connection: synchronous is per connection
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"jobs", "shards"} <= tables
    finally:
        raw.close()


def test_reopen_keeps_data(db_path: Path) -> None:
    with JobStore(db_path) as store:
        job = _add(store)
    with JobStore(db_path) as store:
        assert store.get(job.id) == job
        assert History(store).counts() == {"queued": 1, "running": 0, "done": 0, "failed": 0, "cancelled": 0}


def test_newer_schema_version_is_refused(db_path: Path) -> None:
    JobStore(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer") as info:
        JobStore(db_path)
    assert str(db_path) in str(info.value)


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE jobs (x)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="not an aud job store"):
        JobStore(path)


def test_closed_store_raises_store_error(db_path: Path) -> None:
    store = JobStore(db_path)
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        store.jobs()


# -- jobs --------------------------------------------------------------------------------------


def test_duplicate_fingerprint_is_the_same_job(store: JobStore) -> None:
    job, created = store.add_job("abc", Path("/inbox/a.mp4"), "", "a.mp4")
    assert created
    again, created_again = store.add_job("abc", Path("/inbox/renamed.mp4"), "x", "renamed.mp4")
    assert not created_again
    assert again == job
    assert again.source == "/inbox/a.mp4" and again.name == "a.mp4"
    assert store.find("abc") == job and store.find("nope") is None
    assert len(store.jobs()) == 1


def test_duplicate_fingerprint_returns_job_whatever_its_state(store: JobStore) -> None:
    job = _add(store)
    store.fail(job.id, "decoder crashed")
    again, created = store.add_job("fp-1", Path("/inbox/b.mp4"), "", "b.mp4")
    assert not created and again.state == "failed" and again.id == job.id


def test_add_job_rejects_escaping_subdir(store: JobStore) -> None:
    with pytest.raises(ValueError, match="subdir"):
        store.add_job("fp", Path("/inbox/a.mp4"), "../outside", "a.mp4")
    with pytest.raises(ValueError, match="subdir"):
        store.add_job("fp", Path("/inbox/a.mp4"), "/abs", "a.mp4")
    assert store.jobs() == []


def test_full_lifecycle(store: JobStore) -> None:
    before = time.time()
    job = _add(store)
    assert (job.state, job.subdir, job.source) == ("queued", "sub", "/inbox/sub/clip.mp4")
    assert job.frames_total is None and job.started_at is None and job.created_at >= before

    store.set_plan(job.id, 35, '{"fps": 30}', RANGES)
    planned = store.get(job.id)
    assert planned.frames_total == 35 and planned.info_json == '{"fps": 30}'
    assert [(s.index, s.start, s.stop, s.state, s.attempts) for s in store.shards(job.id)] == [
        (i, a, b, "pending", 0) for i, (a, b) in enumerate(RANGES)
    ]

    running = store.start(job.id)
    assert running.state == "running" and running.started_at >= job.created_at
    for shard in pending(store, job.id):
        assert store.mark_dispatched(job.id, shard.index) == 1
        store.shard_done(job.id, shard.index, f"/tmp/part-{shard.index}.npy".encode(), 2)
    assert pending(store, job.id) == []
    assert store.shard_results(job.id) == [f"/tmp/part-{i}.npy".encode() for i in range(4)]
    assert [s.format for s in store.shards(job.id)] == [2] * 4

    done = store.finish(job.id, "/outbox/sub/clip.csv")
    assert done.state == "done" and done.csv_path == "/outbox/sub/clip.csv"
    assert done.finished_at >= done.started_at and done.updated_at >= running.updated_at
    assert store.jobs(["done"]) == [done]


def test_jobs_filter_by_state(store: JobStore) -> None:
    ids = [_add(store, f"fp-{i}", f"v{i}.mp4").id for i in range(5)]
    store.fail(ids[0], "no video stream")
    store.start(ids[1])
    store.fail(ids[1], "no face found")
    store.cancel(ids[2])
    store.start(ids[3])
    assert [j.id for j in store.jobs()] == ids
    assert [j.id for j in store.jobs(["failed", "cancelled"])] == ids[:3]
    assert [j.id for j in store.jobs("running")] == [ids[3]]
    with pytest.raises(ValueError, match="unknown job state"):
        store.jobs(["finished"])


# -- plan and shards ---------------------------------------------------------------------------


def test_set_plan_is_idempotent_and_keeps_done_shards(store: JobStore) -> None:
    job = _running(store)
    store.mark_dispatched(job.id, 1)
    store.shard_done(job.id, 1, b"/tmp/p1", 2)
    before = store.shards(job.id)
    store.set_plan(job.id, 35, '{"fps": 30}', RANGES)
    assert store.shards(job.id) == before
    assert before[1].state == "done" and before[1].attempts == 1
    assert [s.index for s in pending(store, job.id)] == [0, 2, 3]


def test_replan_with_other_ranges(store: JobStore) -> None:
    job = _add(store)
    store.set_plan(job.id, 35, "{}", RANGES)
    store.set_plan(job.id, 35, "{}", [(0, 20), (20, 35)])  # nothing done yet: replaced
    assert [(s.start, s.stop) for s in store.shards(job.id)] == [(0, 20), (20, 35)]
    store.start(job.id)
    store.shard_done(job.id, 0, b"/tmp/p0", 2)
    with pytest.raises(ValueError, match="already done"):
        store.set_plan(job.id, 35, "{}", RANGES)
    assert [(s.start, s.stop) for s in store.shards(job.id)] == [(0, 20), (20, 35)]


@pytest.mark.parametrize(
    "ranges",
    [[(0, 10), (5, 20)], [(10, 10)], [(0, 40)], [(-1, 5)], [(20, 30), (0, 10)]],
)
def test_set_plan_rejects_bad_ranges(store: JobStore, ranges) -> None:
    job = _add(store)
    with pytest.raises(ValueError, match="shard range"):
        store.set_plan(job.id, 35, "{}", ranges)
    assert store.shards(job.id) == [] and store.get(job.id).frames_total is None


def test_attempts_counting(store: JobStore) -> None:
    job = _running(store)
    assert [store.mark_dispatched(job.id, 2) for _ in range(3)] == [1, 2, 3]
    assert store.mark_dispatched(job.id, 0) == 1
    assert [s.attempts for s in store.shards(job.id)] == [1, 0, 3, 0]
    store.shard_done(job.id, 0, b"/tmp/p0", 2)
    with pytest.raises(ValueError, match="already done"):
        store.mark_dispatched(job.id, 0)
    # a crash-restart keeps the counts (a shard that kills the daemon shows up)
    store.recover()
    assert [s.attempts for s in store.shards(job.id)] == [1, 0, 3, 0]
    # a user resubmission gives pending shards a fresh budget; done shards keep theirs
    store.start(job.id)
    store.fail(job.id, "shard 2 failed 3 times")
    store.requeue(job.id)
    assert [(s.state, s.attempts) for s in store.shards(job.id)] == [
        ("done", 1), ("pending", 0), ("pending", 0), ("pending", 0)
    ]


def test_a_dispatch_that_ran_nothing_is_taken_back(store: JobStore) -> None:
    job = _running(store)
    assert [store.mark_dispatched(job.id, 1) for _ in range(2)] == [1, 2]
    assert store.undo_dispatch(job.id, 1) == 1
    assert store.undo_dispatch(job.id, 1) == 0
    assert store.undo_dispatch(job.id, 1) == 0  # never below 0
    assert [s.attempts for s in store.shards(job.id)] == [0, 0, 0, 0]
    store.mark_dispatched(job.id, 1)
    store.close()
    with JobStore(store.path) as again:  # durable
        assert [s.attempts for s in again.shards(job.id)] == [0, 1, 0, 0]


def test_shard_done_twice(store: JobStore) -> None:
    job = _running(store)
    store.shard_done(job.id, 0, b"rows", 2)
    with pytest.raises(ValueError, match="already done"):
        store.shard_done(job.id, 0, b"other rows", 2)
    assert store.shard_results(job.id) == [b"rows"]


def test_requeue_keeps_done_shards(store: JobStore) -> None:
    job = _running(store)
    store.shard_done(job.id, 0, b"/tmp/p0", 2)
    store.cancel(job.id)
    queued = store.requeue(job.id)
    assert queued.state == "queued" and queued.reason is None and queued.finished_at is None
    assert [s.index for s in pending(store, job.id)] == [1, 2, 3]


def test_cancel(store: JobStore) -> None:
    queued = _add(store, "a")
    running = _running(store, "b")
    c1 = store.cancel(queued.id)
    c2 = store.cancel(running.id, "video removed from inbox")
    assert (c1.state, c1.reason) == ("cancelled", "cancelled by user")
    assert (c2.state, c2.reason) == ("cancelled", "video removed from inbox")
    assert c2.finished_at is not None
    assert store.cancel(queued.id) == c1  # already cancelled: unchanged


# -- invalid transitions -----------------------------------------------------------------------


def _to_state(store: JobStore, state: str) -> Job:
    job = _add(store)
    if state == "queued":
        return job
    if state == "cancelled":
        return store.cancel(job.id)
    if state == "failed":
        return store.fail(job.id, "boom")
    job = _running(store, "fp-run")
    if state == "done":
        for shard in store.shards(job.id):
            store.shard_done(job.id, shard.index, f"/tmp/{shard.index}".encode(), 2)
        return store.finish(job.id, "/out.csv")
    return job


INVALID = [
    ("start", "running"), ("start", "done"), ("start", "failed"), ("start", "cancelled"),
    ("finish", "queued"), ("finish", "done"), ("finish", "failed"), ("finish", "cancelled"),
    ("fail", "done"), ("fail", "failed"), ("fail", "cancelled"),
    ("cancel", "done"), ("cancel", "failed"),
    ("requeue", "queued"), ("requeue", "running"), ("requeue", "done"),
    ("set_plan", "done"), ("set_plan", "failed"), ("set_plan", "cancelled"),
    ("mark_dispatched", "queued"), ("mark_dispatched", "cancelled"),
    ("shard_done", "queued"), ("shard_done", "failed"),
]


@pytest.mark.parametrize("action, state", INVALID)
def test_invalid_transitions_raise_value_error(store: JobStore, action: str, state: str) -> None:
    job = _to_state(store, state)
    calls = {
        "start": lambda: store.start(job.id),
        "finish": lambda: store.finish(job.id, "/out.csv"),
        "fail": lambda: store.fail(job.id, "x"),
        "cancel": lambda: store.cancel(job.id),
        "requeue": lambda: store.requeue(job.id),
        "set_plan": lambda: store.set_plan(job.id, 35, "{}", RANGES),
        "mark_dispatched": lambda: store.mark_dispatched(job.id, 0),
        "shard_done": lambda: store.shard_done(job.id, 0, b"/tmp/x", 2),
    }
    before = store.get(job.id)
    with pytest.raises(ValueError, match=f"job {job.id}.*it is {state}"):
        calls[action]()
    assert store.get(job.id) == before  # nothing half-applied


def test_finish_needs_every_shard_done_and_a_plan(store: JobStore) -> None:
    job = _running(store)
    store.shard_done(job.id, 0, b"/tmp/p0", 2)
    with pytest.raises(ValueError, match="3 shard"):
        store.finish(job.id, "/out.csv")
    unplanned = store.start(_add(store, "fp-2").id)
    with pytest.raises(ValueError, match="never planned"):
        store.finish(unplanned.id, "/out.csv")


def test_unknown_job_and_shard(store: JobStore) -> None:
    assert store.get(99) is None
    with pytest.raises(ValueError, match="no job with id 99"):
        store.start(99)
    job = _running(store)
    with pytest.raises(ValueError, match="no shard 7"):
        store.mark_dispatched(job.id, 7)


# -- crashes -----------------------------------------------------------------------------------

CHILD_SELF_KILL = """
    import os, signal, sys
    from pathlib import Path
    from daemon.jobs.store import JobStore
    store = JobStore(Path(sys.argv[1]))
    job, _ = store.add_job("fp-crash", Path("/inbox/c.mp4"), "", "c.mp4")
    store.set_plan(job.id, 40, "{}", [(0, 10), (10, 20), (20, 30), (30, 40)])
    store.start(job.id)
    other, _ = store.add_job("fp-other", Path("/inbox/o.mp4"), "", "o.mp4")
    for index in (0, 1, 2):
        store.mark_dispatched(job.id, index)
    store.shard_done(job.id, 0, "/tmp/r0".encode(), 2)
    store.shard_done(job.id, 2, "/tmp/r2".encode(), 2)
    os.kill(os.getpid(), signal.SIGKILL)   # no close(), no checkpoint, no atexit
    print("still alive")
"""


def test_recover_after_sigkill(db_path: Path) -> None:
    proc = _run_child(CHILD_SELF_KILL, str(db_path))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "still alive" not in proc.stdout

    with JobStore(db_path) as store:
        job = store.find("fp-crash")
        assert job.state == "running" and job.frames_total == 40
        shards = store.shards(job.id)
        assert [(s.state, s.attempts, s.format) for s in shards] == [
            ("done", 1, 2), ("pending", 1, None), ("done", 1, 2), ("pending", 0, None)
        ]
        assert store.shard_results(job.id) == [b"/tmp/r0", b"/tmp/r2"]
        requeued = store.recover()
        assert [j.id for j in requeued] == [job.id] and requeued[0].state == "queued"
        assert store.find("fp-other").state == "queued"
        assert store.recover() == []
        # resume: only the unfinished shards are redone
        store.start(job.id)
        assert [s.index for s in pending(store, job.id)] == [1, 3]
        for index in (1, 3):
            store.mark_dispatched(job.id, index)
            store.shard_done(job.id, index, f"/tmp/r{index}".encode(), 2)
        assert store.finish(job.id, "/outbox/c.csv").state == "done"
        assert [s.attempts for s in store.shards(job.id)] == [1, 2, 1, 1]


CHILD_LOOP = """
    import sys
    from pathlib import Path
    from daemon.jobs.store import JobStore
    store = JobStore(Path(sys.argv[1]))
    job, _ = store.add_job("fp-loop", Path("/inbox/l.mp4"), "", "l.mp4")
    n = 10_000
    store.set_plan(job.id, n, "{}", [(i, i + 1) for i in range(n)])
    store.start(job.id)
    for index in range(n):
        store.mark_dispatched(job.id, index)
        store.shard_done(job.id, index, f"/tmp/r{index}".encode(), 2)
        print(index, flush=True)   # only after the commit returned
"""


def test_kill_at_an_arbitrary_instant_loses_nothing_committed(db_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD_LOOP), str(db_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    reported: list[int] = []
    try:
        while len(reported) < 50:  # synchronise on the child's own reports, not on time
            line = proc.stdout.readline()
            assert line, "child exited early"
            reported.append(int(line))
        proc.kill()
        proc.wait(timeout=30)
        reported += [int(word) for word in proc.stdout.read().split()]
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert reported == list(range(len(reported)))

    with JobStore(db_path) as store:
        job = store.find("fp-loop")
        assert job.state == "running"
        left = pending(store, job.id)
        first_pending = left[0].index
        # every reported shard is durable; at most one more committed before its report
        assert first_pending in (len(reported), len(reported) + 1)
        done = store.shards(job.id)[:first_pending]
        assert all(s.state == "done" and s.attempts == 1 for s in done)
        assert store.shard_results(job.id) == [f"/tmp/r{s.index}".encode() for s in done]
        # the shard in flight is dispatched at most once and not half-done; the rest untouched
        assert left[0].attempts in (0, 1) and left[0].format is None
        assert all(s.attempts == 0 for s in left[1:])
        assert [j.id for j in store.recover()] == [job.id]
        assert pending(store, job.id)[0].index == first_pending


CHILD_OPEN_TRANSACTION = """
    import os, signal, sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE jobs SET state = 'done'")
    conn.execute("DELETE FROM shards")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_inside_a_transaction_leaves_nothing_half_done(db_path: Path) -> None:
    with JobStore(db_path) as store:
        job = _running(store)
        store.shard_done(job.id, 0, b"/tmp/p0", 2)
        before_job, before_shards = store.get(job.id), store.shards(job.id)
    proc = _run_child(CHILD_OPEN_TRANSACTION, str(db_path))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with JobStore(db_path, timeout=0.5) as store:  # the dead writer's lock is gone
        assert store.get(job.id) == before_job
        assert store.shards(job.id) == before_shards


# -- unusable files ----------------------------------------------------------------------------


def test_random_bytes_file_is_reported_as_corrupted(db_path: Path) -> None:
    with JobStore(db_path) as store:
        _add(store)
    db_path.write_bytes(os.urandom(db_path.stat().st_size))
    with pytest.raises(StoreError, match="corrupted") as info:
        JobStore(db_path)
    assert str(db_path) in str(info.value)
    assert "not a database" in str(info.value)


def test_damaged_page_fails_the_integrity_check(db_path: Path) -> None:
    with JobStore(db_path) as store:
        job = _add(store)
        store.set_plan(job.id, 3000, "{}", [(i, i + 1) for i in range(3000)])  # many pages
    page = 4096
    assert db_path.stat().st_size > 4 * page
    with open(db_path, "r+b") as f:  # keep the header page, trash a b-tree page
        f.seek(2 * page)
        f.write(os.urandom(page))
    with pytest.raises(StoreError, match="corrupted") as info:
        JobStore(db_path)
    assert str(db_path) in str(info.value)


@pytest.mark.parametrize("existing", ["job store", "plain sqlite file"])
def test_locked_database_raises_after_timeout(db_path: Path, existing: str) -> None:
    if existing == "job store":
        JobStore(db_path).close()
    else:
        db_path.parent.mkdir(parents=True)
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        if existing != "job store":
            holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="locked by another process") as info:
            JobStore(db_path, timeout=0.2)
        elapsed = time.monotonic() - t0
    finally:
        holder.rollback()
        holder.close()
    assert str(db_path) in str(info.value)
    assert 0.15 <= elapsed < 3.0  # honours the timeout, not the 5 s default
    if existing == "job store":
        JobStore(db_path, timeout=0.2).close()  # usable once released


# -- threads -----------------------------------------------------------------------------------


def test_concurrent_use_from_threads(store: JobStore) -> None:
    job = _running(store)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                store.add_job(f"t{n}-{i}", Path(f"/inbox/{n}-{i}.mp4"), "", "v.mp4")
                store.mark_dispatched(job.id, 3)
                store.jobs()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.shards(job.id)[3].attempts == 100
    assert len(store.jobs()) == 101


# --- a job is content and key ------------------------------------------------------------------------------------


def test_the_same_content_under_another_key_is_a_new_job(store: JobStore) -> None:
    a, created_a = store.add_job("fp", Path("/inbox/x.mp4"), "", "x.mp4", key="models-1")
    same, created_same = store.add_job("fp", Path("/inbox/x.mp4"), "", "x.mp4", key="models-1")
    b, created_b = store.add_job("fp", Path("/inbox/x.mp4"), "", "x.mp4", key="models-2")
    assert created_a and not created_same and created_b
    assert same.id == a.id and b.id == a.id + 1 and b.key == "models-2"
    assert store.find("fp", "models-1").id == a.id and store.find("fp", "models-2").id == b.id


def test_force_adds_a_new_job_and_find_returns_the_newest(store: JobStore) -> None:
    a, _ = store.add_job("fp", Path("/inbox/x.mp4"), "", "x.mp4", key="k")
    again, created = store.add_job("fp", Path("/inbox/x.mp4"), "", "x.mp4", key="k", force=True)
    assert created and again.id == a.id + 1
    assert store.find("fp", "k").id == again.id


def test_job_ids_do_not_skip_when_content_is_seen_again(store: JobStore) -> None:
    ids = []
    for fp in ("a", "a", "b", "a", "b", "c"):
        job, _ = store.add_job(fp, Path(f"/inbox/{fp}.mp4"), "", f"{fp}.mp4")
        ids.append(job.id)
    assert ids == [1, 1, 2, 1, 2, 3]


def test_results_by_value_redo_rekey_and_release(store: JobStore) -> None:
    job = _running(store)
    store.shard_done(job.id, 0, b"zero", 2)
    store.shard_done(job.id, 2, b"two", 2)
    store.redo_shards(job.id, [2])
    assert store.shard_results(job.id) == [b"zero"] and [s.index for s in pending(store, job.id)] == [1, 2, 3]
    store.fail(job.id, "a reason")
    store.release_results(job.id)  # a failed job keeps nothing: a re-drop computes every shard again
    assert store.shard_results(job.id) == [] and len(pending(store, job.id)) == 4
    store.requeue(job.id)
    store.rekey(job.id, "new-key")
    rekeyed = store.get(job.id)
    assert rekeyed.key == "new-key" and rekeyed.frames_total is None and store.shards(job.id) == []


def test_a_version_1_store_is_migrated(db_path: Path) -> None:
    """Version 1: jobs keyed by content alone, shard results as .npz paths. After migration the jobs are
    there with the empty key, their done shards pending again (their files are of an older format)."""
    db_path.parent.mkdir(parents=True)
    raw = sqlite3.connect(db_path)
    raw.executescript("""
        CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, fingerprint TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL, subdir TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, reason TEXT,
            frames_total INTEGER, info_json TEXT, csv_path TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
            started_at REAL, finished_at REAL);
        CREATE INDEX jobs_by_state ON jobs (state);
        CREATE TABLE shards (job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, idx INTEGER NOT NULL,
            start INTEGER NOT NULL, stop INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            result_path TEXT, PRIMARY KEY (job_id, idx)) WITHOUT ROWID;
        INSERT INTO jobs VALUES (1, 'fp-old', '/inbox/a.mp4', '', 'a.mp4', 'done', NULL, 10, '{}', '/out/a.csv',
            1, 2, 1, 2);
        INSERT INTO jobs VALUES (2, 'fp-run', '/inbox/b.mp4', '', 'b.mp4', 'running', NULL, 10, '{}', NULL,
            1, 2, 1, NULL);
        INSERT INTO shards VALUES (2, 0, 0, 5, 'done', 1, '/state/jobs/2/shard-0.npz');
        INSERT INTO shards VALUES (2, 1, 5, 10, 'pending', 1, NULL);
        PRAGMA user_version = 1;
    """)
    raw.close()
    with JobStore(db_path) as store:
        old, running = store.get(1), store.get(2)
        assert old.state == "done" and old.key == "" and old.csv_path == "/out/a.csv"
        assert running.state == "running" and [s.state for s in store.shards(2)] == ["pending", "pending"]
        again, created = store.add_job("fp-old", Path("/inbox/a.mp4"), "", "a.mp4", key="k")
        assert created and again.id == 3  # after the upgrade the same video is a new job
    raw = sqlite3.connect(db_path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def test_a_done_job_releases_its_results_and_stays_done(store: JobStore) -> None:
    job = _running(store)
    for shard in store.shards(job.id):
        store.shard_done(job.id, shard.index, b"rows", 2)
    store.finish(job.id, "/out/x.csv")
    store.release_results(job.id)
    assert store.shard_results(job.id) == [] and all(s.done for s in store.shards(job.id))


def test_a_version_2_store_gains_identity_and_rate_columns(db_path: Path) -> None:
    """Version 2 had neither the input's identity nor a done job's rate: the columns are added, empty,
    and the jobs are kept as they were (a job without an identity is hashed again at its start)."""
    db_path.parent.mkdir(parents=True)
    raw = sqlite3.connect(db_path)
    raw.executescript("""
        CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, fingerprint TEXT NOT NULL, key TEXT NOT NULL
            DEFAULT '', source TEXT NOT NULL, subdir TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL CHECK
            (state IN ('queued', 'running', 'done', 'failed', 'cancelled')), reason TEXT, frames_total INTEGER,
            info_json TEXT, csv_path TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL,
            finished_at REAL);
        CREATE INDEX jobs_by_state ON jobs (state);
        CREATE INDEX jobs_by_content ON jobs (fingerprint, key);
        CREATE TABLE shards (job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, idx INTEGER NOT NULL,
            start INTEGER NOT NULL CHECK (start >= 0), stop INTEGER NOT NULL CHECK (stop > start), state TEXT NOT
            NULL CHECK (state IN ('pending', 'done')), attempts INTEGER NOT NULL DEFAULT 0, format INTEGER,
            result BLOB, PRIMARY KEY (job_id, idx)) WITHOUT ROWID;
        INSERT INTO jobs VALUES (1, 'fp-old', 'k', '/inbox/a.mp4', '', 'a.mp4', 'done', NULL, 10, '{}', '/out/a.csv',
            1, 2, 1, 2);
        INSERT INTO jobs VALUES (2, 'fp-q', 'k', '/inbox/b.mp4', '', 'b.mp4', 'queued', NULL, NULL, NULL, NULL,
            1, 2, NULL, NULL);
        PRAGMA user_version = 2;
    """)
    raw.close()
    with JobStore(db_path) as store:
        old, queued = store.get(1), store.get(2)
        assert old.state == "done" and old.csv_path == "/out/a.csv" and old.identity is None and old.fps is None
        assert queued.state == "queued" and queued.key == "k" and queued.identity is None
        assert History(store).recent_rates(5) == []  # an old done job has no rate: it stands in for nothing
        assert store.find("fp-old", "k").id == 1
    raw = sqlite3.connect(db_path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def test_the_input_identity_is_kept_with_the_job(store: JobStore) -> None:
    job, _ = store.add_job("fp-1", Path("/inbox/a.mp4"), "", "a.mp4", identity="1:2:3:4")
    assert store.get(job.id).identity == "1:2:3:4"
    store.set_source(job.id, Path("/inbox/b.mp4"))  # moved by the daemon: the identity stays
    assert store.get(job.id).identity == "1:2:3:4"
    store.set_source(job.id, Path("/inbox/c.mp4"), identity="1:9:3:5")  # a re-drop, hashed: its identity
    assert store.get(job.id).identity == "1:9:3:5"
    store.set_identity(job.id, "1:9:3:6")
    assert store.get(job.id).identity == "1:9:3:6"
