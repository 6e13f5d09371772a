"""The job runner on the in-process executor: no subprocess, no real model.

Shards are computed by a fake ``compute`` that makes rows from the task alone (so the CSV is known),
and can be told to kill its worker, hang, or fail. Videos are tiny synthetic files (the runner probes
them and checks their content), the store is a real SQLite file in tmp_path.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from daemon import protocol as msg
from daemon.core.shard import ShardResult, ShardTask
from daemon.core.video import VideoError, probe
from daemon.jobs import inputs
from daemon.jobs.executor import ExecutorUnavailable, WorkerDied
from daemon.jobs.inline import InlineExecutor
from daemon.jobs.inputs import fingerprint
from daemon.jobs.plan import TimeSelection
from daemon.jobs.runner import Runner, RunnerConfig, inline
from daemon.jobs.store import JobState, JobStore, StoreError
from daemon.output import OutputOptions, read_csv
from tests.conftest import frame_pattern
from tests.fakeshards import fake_compute, fake_rows

FRAMES = 20


compute = fake_compute


class Destination:
    def __init__(self, folder: Path):
        self.folder = folder
        self.done_jobs: list[int] = []
        self.failures: dict[int, str] = {}

    def csv_path(self, job) -> Path:
        return self.folder / f"{Path(job.name).stem}.csv"

    def input_after(self, job) -> Path:
        return Path(job.source)

    def done(self, job, csv) -> None:
        self.done_jobs.append(job.id)

    def failed(self, job, reason, set_aside) -> None:
        self.failures[job.id] = reason


class FaultyStore(JobStore):
    """A job store whose named methods raise the given exceptions, one a call, before they work again
    (a full state disk: ``StoreError``); ``before(name)`` runs before each call of a faulty method."""

    def __init__(self, path: Path, faults: dict[str, list[Exception]], before=lambda name: None):
        super().__init__(path)
        self.faults = {name: list(excs) for name, excs in faults.items()}
        self.before = before
        for name in faults:
            setattr(self, name, self._faulty(name, getattr(self, name)))

    def _faulty(self, name, method):
        def call(*args):
            self.before(name)
            if self.faults[name]:
                raise self.faults[name].pop(0)
            return method(*args)
        return call


FULL = "job store jobs.sqlite3 cannot be used: database or disk is full"


class Harness:
    def __init__(self, tmp_path: Path, synthetic_video, compute=compute, capacity: int = 2, faults=None,
                 executor=None, probe_video=probe, **config):
        self.tmp_path = tmp_path
        self.seen_waiting: list[str] = []  # what status showed whenever a faulty store method was called
        self.store = FaultyStore(tmp_path / "jobs.sqlite3", faults or {}, self._note)
        self.executor = executor or InlineExecutor(compute, capacity)
        self.destination = Destination(tmp_path / "out")
        self.destination.folder.mkdir()
        self.events: list[msg.Event] = []
        defaults = dict(output=OutputOptions(plots=False), key="k", sidecar={}, shard_frames=4, shard_retries=1,
                        store_pause_seconds=0.01)
        self.config = RunnerConfig(**{**defaults, **config})
        # store calls inline: they end in the order they start, so every run takes the same course
        self.runner = Runner(self.store, self.executor, self.config, self.destination, self.events.append,
                             probe_video=probe_video, offload=inline)
        self.synthetic_video = synthetic_video

    def _note(self, name: str) -> None:
        shown = [self.runner.waiting] + [a.waiting for a in self.runner.active.values()]
        self.seen_waiting += [w for w in shown if w]

    def add(self, name: str, frames: int = FRAMES, identified: bool = False):
        """A video of its own content (the pattern is shifted by the name's length and first letter);
        ``identified``: its identity recorded as it was hashed (as intake and ``aud extract`` add jobs)."""
        shift = len(name) * 7 + ord(name[0])
        video = self.synthetic_video(frames=frames, width=32, height=32, name=name,
                                     pattern=lambda i, w, h: frame_pattern(i + shift, w, h))
        identity = inputs.identity_text(inputs.identity(video)) if identified else None
        job, _ = self.store.add_job(fingerprint(video), video, "", name, "k", identity=identity)
        return job

    def run(self, timeout: float = 30):
        asyncio.run(asyncio.wait_for(self.runner.run(until_idle=True), timeout))

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def harness(tmp_path, synthetic_video):
    made = []

    def make(**kw) -> Harness:
        h = Harness(tmp_path, synthetic_video, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.store.close()


def au01(csv: Path) -> list[float]:
    return [float(r["AU01_r"]) for r in read_csv(csv)]


def test_a_job_runs_to_a_csv_in_frame_order(harness):
    h = harness()
    job = h.add("a.mp4")
    h.run()
    assert h.store.get(job.id).state == JobState.DONE
    csv = h.destination.folder / "a.csv"
    assert au01(csv) == list(range(FRAMES))  # shards assembled in frame order
    assert [int(r["frame"]) for r in read_csv(csv)] == list(range(1, FRAMES + 1))
    assert json.loads(csv.with_suffix(".json").read_text())["frames"] == FRAMES
    assert len(h.executor.runs) == len(h.store.shards(job.id)) > 2
    assert h.destination.done_jobs == [job.id]
    assert h.of(msg.JobProgress)[-1].frames_done == FRAMES and len(h.of(msg.JobDone)) == 1


def test_the_next_job_starts_while_the_last_shards_of_the_previous_run(harness):
    """Queued jobs start as soon as the running ones leave a worker without a shard to take: the
    workers never idle between videos, and the first video is not slowed by the second. a's last
    shard waits (up to 5 s) for one of b's to start beside it."""
    b_started = asyncio.Event()
    together = []

    async def tracked(task, progress):
        if "b.mp4" in task.video:
            b_started.set()
        elif task.stop == FRAMES:
            try:
                await asyncio.wait_for(b_started.wait(), 5)
                together.append(task.start)
            except TimeoutError:
                pass
        return compute(task, progress)

    h = harness(compute=tracked)
    a, b = h.add("a.mp4"), h.add("b.mp4")
    h.run()
    order = [Path(t.video).name for t in h.executor.runs]
    assert order.index("b.mp4") > 0 and order[:order.index("b.mp4")] == ["a.mp4"] * order.index("b.mp4")
    assert together, "b did not start while a's last shard ran"
    assert {h.store.get(a.id).state, h.store.get(b.id).state} == {JobState.DONE}


async def slow_enough_to_overlap(task: ShardTask, progress) -> ShardResult:
    await asyncio.sleep(0)  # yield once, so the other slot's shard runs beside this one
    return compute(task, progress)


def test_two_workers_each_read_a_lane_in_order(harness):
    """Shards go to the worker whose reading they continue: each of the two lanes is started once (a
    seek, in a local worker), every other shard reads on, and the CSV is in frame order."""
    h = harness(compute=slow_enough_to_overlap)
    job = h.add("a.mp4", frames=40)
    h.run()
    assert h.store.get(job.id).state == JobState.DONE
    assert [t.start for t in h.executor.fresh] == [0, 20]
    assert len(h.executor.runs) == len(h.store.shards(job.id)) > 8
    assert au01(h.destination.folder / "a.csv") == list(range(40))


def test_a_shard_that_kills_its_worker_fails_its_job_and_only_its_job(harness):
    """The shard of "bad.mp4" starting at frame 5 kills its worker every time; "good.mp4"'s shards run
    beside it, are not blamed and are not run alone (the executor says which shard's worker died)."""
    attempts = []
    pair = asyncio.Event()  # set while two shards run at once

    async def deadly(task, progress):
        if h.executor.concurrent >= 2:
            pair.set()
        if "bad" in task.video and task.start == 5:
            attempts.append(task.start)
            raise WorkerDied("worker 1234 was killed by SIGKILL", "inline:1234")
        try:  # give the other worker's shard the chance to start beside this one
            await asyncio.wait_for(pair.wait(), 0.5)
        except TimeoutError:
            pass
        return compute(task, progress)

    h = harness(compute=deadly, shard_retries=2)
    bad, good = h.add("bad.mp4"), h.add("good.mp4")
    h.run()
    assert len(attempts) == 3  # first run + 2 retries
    bad_job = h.store.get(bad.id)
    assert bad_job.state == JobState.FAILED and "frames 6-8 lost its worker 3 times" in bad_job.reason
    assert h.store.get(good.id).state == JobState.DONE
    good_runs = [t for t in h.executor.runs if "good" in t.video]
    assert len(good_runs) == len(h.store.shards(good.id))  # each innocent shard ran exactly once
    assert h.executor.max_concurrent == 2  # nothing was serialised
    assert au01(h.destination.folder / "good.csv") == list(range(FRAMES))
    assert h.destination.failures[bad.id] == bad_job.reason


def test_a_worker_death_is_retried_and_the_job_completes(harness):
    deaths = []

    def once(task, progress):
        if task.start == 10 and not deaths:  # the second lane's first shard
            deaths.append(task)
            raise WorkerDied("killed", "inline")
        return compute(task, progress)

    h = harness(compute=once)
    job = h.add("a.mp4")
    h.run()
    assert h.store.get(job.id).state == JobState.DONE and len(deaths) == 1
    assert au01(h.destination.folder / "a.csv") == list(range(FRAMES))


def test_a_shard_that_hangs_times_out_is_retried_then_fails_with_a_reason(harness):
    never = asyncio.Event

    async def hang(task, progress):
        if task.start == 0:
            await never().wait()  # a decode that never returns
        return compute(task, progress)

    h = harness(compute=hang, shard_timeout_seconds=0.2, shard_retries=1)
    job = h.add("a.mp4")
    h.run()
    failed = h.store.get(job.id)
    assert failed.state == JobState.FAILED
    assert "frames 1-1 timed out 2 times" in failed.reason and "longer than 0.2 s" in failed.reason
    assert sum(t.start == 0 for t in h.executor.runs) == 2


def test_a_bad_video_fails_without_retries_with_its_reason(harness):
    def broken(task, progress):
        raise VideoError(f"{task.video}: the video stream ends at frame {task.start}")

    h = harness(compute=broken)
    job = h.add("a.mp4")
    h.run()
    failed = h.store.get(job.id)
    assert failed.state == JobState.FAILED and "the video stream ends" in failed.reason
    assert len(h.executor.runs) <= 2  # the shards in flight, none retried


def test_an_internal_error_is_logged_with_its_traceback_and_named_as_such(harness, caplog):
    def bug(task, progress):
        raise KeyError("oops")

    h = harness(compute=bug)
    job = h.add("a.mp4")
    h.run()
    failed = h.store.get(job.id)
    assert failed.state == JobState.FAILED and failed.reason.startswith("internal error on frames")
    assert any("Traceback" in r.getMessage() and "KeyError" in r.getMessage() for r in caplog.records)


def test_cancelling_a_running_job_drops_its_results_and_ends_it(harness):
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(task, progress):
        started.set()
        await release.wait()
        return compute(task, progress)

    h = harness(compute=slow)
    job = h.add("a.mp4")

    async def main():
        run = asyncio.create_task(h.runner.run(until_idle=True))
        await asyncio.wait_for(started.wait(), 10)
        await h.runner.cancel(job.id)
        release.set()
        await asyncio.wait_for(run, 10)

    asyncio.run(main())
    assert h.store.get(job.id).state == JobState.CANCELLED
    assert not (h.destination.folder / "a.csv").exists()
    assert len(h.of(msg.JobCancelled)) == 1 and "cancelled" in h.destination.failures[job.id]
    assert all(s.state == "pending" for s in h.store.shards(job.id))  # the late results were not committed


def planned(h: Harness, job) -> tuple:
    """The job started and planned as the runner plans it: (video info, shard ranges)."""
    from daemon.jobs.plan import plan_shards

    info = probe(Path(job.source))
    ranges = plan_shards(FRAMES, 4, 2)
    h.store.start(job.id)
    h.store.set_plan(job.id, info.frames, "{}", ranges)
    return info, ranges


def test_a_resumed_job_does_not_redo_committed_shards(harness, tmp_path):
    from daemon.core.schema import SHARD_FORMAT

    h = harness()
    job = h.add("a.mp4")
    info, ranges = planned(h, job)
    first = ShardTask.of(info, *ranges[0])
    h.store.shard_done(job.id, 0, fake_rows(first).to_bytes(), SHARD_FORMAT)
    h.store.recover()  # as after a crash: back to queued, shard 0 stays done
    h.run()
    assert h.store.get(job.id).state == JobState.DONE
    assert [t.start for t in h.executor.runs if t.start == ranges[0][0]] == []
    assert au01(h.destination.folder / "a.csv") == list(range(FRAMES))


def test_stored_shards_of_an_older_format_are_computed_again(harness):
    h = harness()
    job = h.add("a.mp4")
    _, ranges = planned(h, job)
    h.store.shard_done(job.id, 0, b"an npz of the old format", 1)
    h.store.recover()
    h.run()
    assert h.store.get(job.id).state == JobState.DONE
    assert sum(t.start == ranges[0][0] for t in h.executor.runs) == 1
    assert au01(h.destination.folder / "a.csv") == list(range(FRAMES))


def test_an_unavailable_executor_costs_no_attempt_and_the_job_resumes(harness):
    calls = []

    async def flaky(task, progress):
        calls.append(task.start)
        if len(calls) == 2:
            h.executor.available.clear()
            asyncio.get_running_loop().call_later(0.05, h.executor.available.set)
            raise ExecutorUnavailable("the scheduler at tcp://127.0.0.1:1 went away")
        return compute(task, progress)

    h = harness(compute=flaky, shard_retries=0)
    job = h.add("a.mp4")
    h.run()
    assert h.store.get(job.id).state == JobState.DONE  # no retries allowed, yet nothing failed
    assert len(h.of(msg.ExecutorUnavailable)) == 1 and len(h.of(msg.ExecutorAvailable)) == 1
    assert au01(h.destination.folder / "a.csv") == list(range(FRAMES))


def test_every_nth_frame_and_a_time_window(harness):
    h = harness(selection=TimeSelection(start_s=0.2, end_s=0.7, every=2))  # 25 fps: frames 5 .. 17
    job = h.add("a.mp4")
    h.run()
    rows = read_csv(h.destination.folder / "a.csv")
    assert [int(r["frame"]) for r in rows] == [6, 8, 10, 12, 14, 16, 18]
    assert h.store.get(job.id).state == JobState.DONE


def test_progress_is_reported_while_a_shard_runs(harness):
    async def stepwise(task, progress):
        for done in range(1, task.frames + 1):
            progress(done)
            await asyncio.sleep(0)
        return compute(task, progress)

    h = harness(compute=stepwise, shard_frames=8)
    h.add("a.mp4")
    h.run()
    seen = [e.frames_done for e in h.of(msg.JobProgress)]
    assert seen == sorted(seen) or max(seen) == FRAMES
    assert len(set(seen)) >= FRAMES // 2  # not only when shards end


def test_a_destination_that_cannot_take_the_result_fails_the_job(harness):
    h = harness()
    h.destination.folder.rmdir()
    (h.tmp_path / "out").write_text("a file where the folder should be")
    job = h.add("a.mp4")
    h.run()
    failed = h.store.get(job.id)
    assert failed.state == JobState.FAILED and "cannot write the result" in failed.reason


# --- the try budget is durable ----------------------------------------------------------------------

def test_a_shard_that_keeps_killing_its_worker_fails_its_job_after_its_tries_even_across_a_restart(harness):
    """The store counts each run of a shard: the daemon stopping (and starting again) after two of the
    three runs allowed leaves one run, not three."""
    deaths = []

    def deadly(task, progress):
        if task.start == 0:
            deaths.append(task)
            if len(deaths) == 2:
                h.runner.stop()  # the daemon stops here, and the next runner starts on the same store
            raise WorkerDied("worker 1234 was killed by SIGKILL", "inline:1234")
        return compute(task, progress)

    h = harness(compute=deadly, shard_retries=2)
    job = h.add("a.mp4")
    h.run()
    assert len(deaths) == 2 and h.store.get(job.id).state == JobState.RUNNING
    assert h.store.shards(job.id)[0].attempts == 2
    h.store.close()
    with JobStore(h.tmp_path / "jobs.sqlite3") as store:
        again = Runner(store, InlineExecutor(deadly, 2), h.config, h.destination, h.events.append, offload=inline)
        asyncio.run(asyncio.wait_for(again.run(until_idle=True), 30))
        failed = store.get(job.id)
    assert len(deaths) == 3  # one run after the restart: the budget was not reset
    assert failed.state == JobState.FAILED and "frames 1-1 lost its worker 3 times" in failed.reason


def test_a_shard_stopped_by_the_runner_is_not_counted_against_it(harness):
    started, never = asyncio.Event(), asyncio.Event()

    async def hang(task, progress):
        started.set()
        await never.wait()

    h = harness(compute=hang)
    job = h.add("a.mp4")

    async def main():
        run = asyncio.create_task(h.runner.run())
        await asyncio.wait_for(started.wait(), 10)
        h.runner.stop()
        assert await h.runner.drain(0) is False  # the shards in flight were cancelled
        await run

    asyncio.run(main())
    assert [s.attempts for s in h.store.shards(job.id)] == [0] * len(h.store.shards(job.id))


# --- nothing strands: faults of the job store, the writer and the executor --------------------------

def test_a_result_the_store_cannot_commit_waits_with_its_reason_and_is_committed_after(harness):
    """The daemon (a retry period set): the shard's rows wait in memory, the job shows why, and they
    are committed once the store can take them."""
    h = harness(output_retry_seconds=0.01, faults={"shard_done": [StoreError(FULL), StoreError(FULL)]})
    job = h.add("a.mp4")
    h.run()
    assert h.store.get(job.id).state == JobState.DONE
    assert au01(h.destination.folder / "a.csv") == list(range(FRAMES))
    assert any(w.startswith("the job store cannot store the result of frames") and FULL in w for w in h.seen_waiting)
    assert len(h.executor.runs) == len(h.store.shards(job.id))  # nothing computed twice


def test_aud_extract_gives_the_store_a_few_tries(harness):
    h = harness(faults={"shard_done": [StoreError(FULL)]})  # no retry period: aud extract
    job = h.add("a.mp4")
    h.run()
    assert h.store.get(job.id).state == JobState.DONE


def test_aud_extract_fails_a_job_the_store_cannot_take_with_the_reason_and_returns(harness):
    h = harness(faults={"shard_done": [StoreError(FULL)] * 1000})
    job = h.add("a.mp4")
    h.run()  # returns: the job ended
    failed = h.store.get(job.id)
    assert failed.state == JobState.FAILED and FULL in failed.reason
    assert h.destination.failures[job.id] == failed.reason and h.of(msg.JobFailed)


def test_a_store_error_while_starting_a_job_waits_then_the_job_runs(harness):
    h = harness(output_retry_seconds=0.01, faults={"start": [StoreError(FULL)]})
    job = h.add("a.mp4")
    h.run()
    assert h.store.get(job.id).state == JobState.DONE
    assert f"the job store cannot start job {job.id}: {FULL}" in h.seen_waiting and h.runner.waiting is None


def test_an_unexpected_error_committing_a_result_fails_the_job_with_its_reason(harness):
    h = harness(faults={"shard_done": [RuntimeError("the result is not bytes")]})
    bad, good = h.add("a.mp4"), h.add("bb.mp4")
    h.run()
    failed = h.store.get(bad.id)
    assert failed.state == JobState.FAILED
    assert failed.reason == "internal error: RuntimeError: the result is not bytes"
    assert h.store.get(good.id).state == JobState.DONE  # the next job was not held up


def test_an_error_writing_the_result_fails_the_job_and_leaves_no_part_of_it(harness, monkeypatch):
    """e.g. a table a CSV style cannot write (issue 26: --mirror --csv-style openface2): the job ends
    with the reason instead of staying "running" at 100 % (and ``aud extract`` returns)."""
    from daemon.output import files as output_files
    from daemon.output.openface2 import TableError

    def cannot(table, style, hemi=False):
        raise TableError("openface2: the table has no column 'pose_Tx'")

    monkeypatch.setattr(output_files, "table_chunks", cannot)
    h = harness()
    job = h.add("a.mp4")
    h.run()
    failed = h.store.get(job.id)
    assert failed.state == JobState.FAILED
    assert failed.reason == "internal error: TableError: openface2: the table has no column 'pose_Tx'"
    assert list(h.destination.folder.iterdir()) == []  # the sidecar written before the CSV went again
    assert h.destination.failures[job.id] == failed.reason


def test_an_unexpected_error_while_starting_a_job_fails_it_and_the_next_runs(harness):
    def probe_or_bug(path):
        if path.name == "a.mp4":
            raise RuntimeError("probe bug")
        return probe(path)

    h = harness(probe_video=probe_or_bug)
    bad, good = h.add("a.mp4"), h.add("bb.mp4")
    h.run()
    assert h.store.get(bad.id).reason == "internal error: RuntimeError: probe bug"
    assert h.store.get(good.id).state == JobState.DONE


class BrokenExecutor(InlineExecutor):
    """An executor with a bug of its own: ``run`` raises outside the port's errors for one video."""

    async def run(self, task, *, timeout=None, progress=None):
        if "a.mp4" in task.video:
            raise RuntimeError("the pipe to the worker is closed")
        return await super().run(task, timeout=timeout, progress=progress)


def test_an_executors_own_error_fails_the_job_named_as_internal(harness):
    h = harness(executor=BrokenExecutor(compute, 2))
    bad, good = h.add("a.mp4"), h.add("bb.mp4")
    h.run()
    failed = h.store.get(bad.id)
    assert failed.state == JobState.FAILED
    assert failed.reason.startswith("internal error on frames")
    assert failed.reason.endswith("RuntimeError: the pipe to the worker is closed")
    assert h.store.get(good.id).state == JobState.DONE


def test_a_job_whose_end_the_store_cannot_record_yet_waits_then_is_done(harness):
    h = harness(output_retry_seconds=0.01, faults={"finish": [StoreError(FULL)], "release_results": [StoreError(FULL)]})
    job = h.add("a.mp4")
    h.run()
    assert h.store.get(job.id).state == JobState.DONE and len(h.of(msg.JobDone)) == 1
    assert f"the job store cannot record job {job.id} as done: {FULL}" in h.seen_waiting
    assert h.store.shard_results(job.id) == []  # dropped once the store could


def count_hashes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = inputs.fingerprint
    monkeypatch.setattr(inputs, "fingerprint", lambda path, *a: calls.append(str(path)) or real(path, *a))
    return calls


def test_an_input_hashed_when_added_is_not_hashed_again_when_its_job_runs(harness, monkeypatch):
    h = harness()
    job = h.add("a.mp4", identified=True)
    hashes = count_hashes(monkeypatch)
    h.run()
    assert h.store.get(job.id).state == JobState.DONE and hashes == []


def test_an_input_rewritten_under_the_same_name_after_it_was_added_is_caught(harness, monkeypatch):
    h = harness()
    job = h.add("a.mp4", identified=True)
    h.synthetic_video(frames=FRAMES + 3, width=32, height=32, name="a.mp4")  # other content, same name
    hashes = count_hashes(monkeypatch)
    h.run()
    ended = h.store.get(job.id)
    assert ended.state == JobState.FAILED and "replaced by different content" in ended.reason
    assert hashes == [job.source]


def done_job(store: JobStore, name: str, fps: float) -> None:
    """A job done before, at ``fps``: what the recent jobs' rate is made of."""
    job, _ = store.add_job(f"fp-{name}", Path(f"/gone/{name}"), "", name, "k")
    store.set_plan(job.id, 8, "{}", [(0, 8)])
    store.start(job.id)
    store.shard_done(job.id, 0, b"rows", 1)
    store.finish(job.id, f"/out/{name}.csv", fps)


def test_the_estimate_comes_with_the_start_from_the_recent_jobs_then_from_the_jobs_own_rate(harness):
    """What ``aud tail --json`` shows (the progress events): before the job's first shard is committed its
    time left at the recent jobs' median rate, the queue's too; after it, at the job's own rate."""
    gates = {0: asyncio.Event(), 4: asyncio.Event()}
    started, committed = asyncio.Event(), asyncio.Event()

    async def gated(task, progress):
        if task.start in gates:
            await gates[task.start].wait()
        return compute(task, progress)

    h = harness(compute=gated, capacity=1)
    for name, fps in (("x", 30.0), ("y", 40.0), ("z", 1000.0)):
        done_job(h.store, name, fps)
    job = h.add("a.mp4")
    later = h.add("b.mp4", frames=10)
    h.store.set_plan(later.id, 10, "{}", [(0, 10)])  # probed before (a resumed job): its frames are known
    events: list[msg.Event] = h.events

    def publish(event: msg.Event) -> None:
        events.append(event)
        if isinstance(event, msg.JobProgress):
            (committed if event.frames_saved else started).set()

    h.runner.publish = publish

    async def main():
        run = asyncio.create_task(h.runner.run(until_idle=True))
        await asyncio.wait_for(started.wait(), 10)
        first = h.of(msg.JobProgress)[0]
        assert (first.job, first.frames_done, first.frames_total) == (job.id, 0, FRAMES)
        assert (first.eta_s, first.eta_basis) == (FRAMES / 40.0, "recent_jobs")  # the median of 30, 40, 1000
        assert first.queue_eta_s == pytest.approx(FRAMES / 40.0 + 10 / 40.0, abs=0.06)  # then the queued job
        assert h.runner.active[job.id].eta_s == FRAMES / 40.0  # what status shows
        gates[0].set()
        await asyncio.wait_for(committed.wait(), 10)
        own = [e for e in h.of(msg.JobProgress) if e.frames_saved][0]
        assert own.eta_basis == "job" and own.eta_s == pytest.approx((FRAMES - 4) / own.fps, abs=0.06)
        assert own.queue_eta_s == pytest.approx(own.eta_s + 10 / 40.0, abs=0.06)
        gates[4].set()
        await asyncio.wait_for(run, 30)

    asyncio.run(main())
    assert h.store.get(job.id).state == JobState.DONE and h.store.get(job.id).fps > 0
