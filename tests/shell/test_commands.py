"""``shell/commands.py`` in process: the socket's commands on a real store, runner (in-process
executor, not running) and intake; no daemon, no socket."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import msgspec
import pytest

from daemon import protocol as msg
from daemon.core.models import load_model_set
from daemon.jobs import spec
from daemon.jobs.history import History
from daemon.jobs.inline import InlineExecutor
from daemon.jobs.inputs import fingerprint
from daemon.jobs.runner import Runner
from daemon.jobs.spec import runner_config
from daemon.jobs.store import JobState, JobStore
from daemon.shell import intake as intake_module
from daemon.shell.commands import Commands
from daemon.shell.errors import CommandError
from daemon.shell.intake import Intake
from daemon.shell.outbox import Outbox
from tests.conftest import frame_pattern
from tests.shell.daemonkit import fake_compute, settings_for

pytestmark = pytest.mark.usefixtures("isolated_config")


class Setup:
    def __init__(self, tmp_path: Path, models: Path):
        self.settings = s = settings_for(tmp_path, models)
        for folder in (s.inbox, s.outbox, s.state):
            folder.mkdir(parents=True)
        self.store = JobStore(s.database_path)
        self.events: list[msg.Event] = []
        config = runner_config(s, load_model_set(models, signatures=False), {"detector": "CPUExecutionProvider"})
        self.key = config.key
        self.executor = InlineExecutor(fake_compute)
        self.outbox = Outbox(s)
        self.runner = Runner(self.store, self.executor, config, self.outbox, publish=self.events.append)
        self.runner.providers = {"detector": "CPUExecutionProvider"}
        self.intake = Intake(s, self.store, self.outbox, config.key, self.events.append, self.runner.wake)
        self.commands = Commands(s, self.runner, self.intake, self.executor, lambda: 3)

    def ask(self, command: msg.Command):
        return asyncio.run(self.commands.handle(command))


@pytest.fixture
def setup(tmp_path, tiny_models):
    made = Setup(tmp_path, tiny_models)
    yield made
    made.runner.close()
    made.store.close()


def video(synthetic_video, name: str, shift: int = 0) -> Path:
    return synthetic_video(frames=4, width=32, height=32, name=name,
                           pattern=lambda i, w, h: frame_pattern(i + shift, w, h))


def test_status_reports_the_store_the_runner_and_the_workers(setup, synthetic_video):
    a = video(synthetic_video, "a.mp4")
    queued, _ = setup.store.add_job(fingerprint(a), a, "", "a.mp4", setup.key)
    b = video(synthetic_video, "b.mp4", 9)
    failed, _ = setup.store.add_job(fingerprint(b), b, "", "b.mp4", setup.key)
    setup.store.start(failed.id)
    setup.store.fail(failed.id, "cannot decode")
    setup.runner.paused = True
    data = setup.ask(msg.Status())
    assert data["state"] == "ready" and data["paused"] is True
    assert data["queued"] == [{"job": queued.id, "file": "a.mp4", "frames_total": None, "eta_s": None}]
    assert data["queue_eta_s"] is None and data["queue_eta_unknown"] == 1  # not probed, and no job done yet
    assert data["recent_failures"] == [{"job": failed.id, "file": "b.mp4", "reason": "cannot decode"}]
    assert data["counts"]["queued"] == 1 and data["counts"]["failed"] == 1
    assert data["workers"]["restarts"] == 3 and data["workers"]["state"] == "ok"
    assert data["workers"]["provider"] == "CPUExecutionProvider"
    assert data["versions"] == spec.package_versions() and "numpy" in data["versions"]
    assert data["inbox"] == str(setup.settings.inbox)
    assert msgspec.convert(data, msg.StatusReply).workers.count == 1  # the typed reply, whole


def test_status_when_idle_says_why_no_worker_can_run(setup):
    """No job running, the executor unable to run anything (a pool whose workers cannot start): status
    says so and why, instead of "ok"; it says "ok" again once the executor can run shards."""
    setup.executor.available.clear()
    workers = setup.ask(msg.Status())["workers"]
    assert setup.runner.active == {}
    assert workers["state"] == "executor_unavailable"
    assert workers["reason"] == "the in-process executor is marked unavailable"
    setup.executor.available.set()
    workers = setup.ask(msg.Status())["workers"]
    assert workers["state"] == "ok" and workers["reason"] is None


def test_status_says_why_the_runner_waits_outside_any_job(setup):
    """The job store cannot commit a call the runner makes outside any job (it waits and tries again):
    status says so; the reason goes once the call goes through."""
    assert setup.ask(msg.Status())["runner_waiting"] is None
    setup.runner.call.note(None, "the job store cannot list the queued jobs: disk I/O error", 1.0)
    assert setup.ask(msg.Status())["runner_waiting"] == "the job store cannot list the queued jobs: disk I/O error"
    setup.runner.call.note(None, None)
    assert setup.ask(msg.Status())["runner_waiting"] is None


def test_status_reads_the_store_off_the_event_loop(setup, monkeypatch):
    loop_thread = threading.current_thread()
    threads: dict[str, threading.Thread] = {}
    for owner, name in ((setup.store, "jobs"), (History, "recent_failures"), (History, "counts"),
                        (History, "recent_rates")):
        real = getattr(owner, name)

        def recorded(*args, _real=real, _name=name, **kwargs):
            threads[_name] = threading.current_thread()
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, recorded)
    setup.ask(msg.Status())
    assert set(threads) == {"jobs", "recent_failures", "counts", "recent_rates"}
    assert all(t is not loop_thread for t in threads.values())


def test_package_versions_are_looked_up_once(monkeypatch):
    spec._installed_versions.cache_clear()
    calls = []
    real = spec.metadata.version
    monkeypatch.setattr(spec.metadata, "version", lambda name: calls.append(name) or real(name))
    first = spec.package_versions()
    first["numpy"] = "changed by a caller"
    assert spec.package_versions()["numpy"] != "changed by a caller"  # each call gets its own dict
    assert len(calls) == len(spec.PACKAGES)  # the second call looked nothing up
    spec._installed_versions.cache_clear()


def test_submit_queues_then_reports_a_duplicate(setup, synthetic_video):
    a = video(synthetic_video, "a.mp4")
    first = setup.ask(msg.Submit(path=str(a)))
    assert first["outcome"] == "queued" and first["file"] == "a.mp4" and first["state"] == "queued"
    copy = a.with_name("copy.mp4")
    copy.write_bytes(a.read_bytes())
    again = setup.ask(msg.Submit(path=str(copy)))
    assert again["outcome"] == "duplicate" and again["job"] == first["job"]
    forced = setup.ask(msg.Submit(path=str(copy), force=True))
    assert forced["outcome"] == "queued" and forced["job"] != first["job"]


def test_submit_of_no_file_is_a_refusal(setup, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        setup.ask(msg.Submit(path=str(tmp_path / "absent.mp4")))


def test_cancel_refuses_unknown_and_finished_jobs_and_cancels_a_queued_one(setup, synthetic_video):
    with pytest.raises(CommandError, match="no job 99"):
        setup.ask(msg.Cancel(job=99))
    a = video(synthetic_video, "a.mp4")
    job, _ = setup.store.add_job(fingerprint(a), a, "", "a.mp4", setup.key)
    assert setup.ask(msg.Cancel(job=job.id)) == {"job": job.id, "state": "cancelled"}
    assert setup.ask(msg.Cancel(job=job.id)) == {"job": job.id, "state": "cancelled"}  # idempotent
    b = video(synthetic_video, "b.mp4", 5)
    done, _ = setup.store.add_job(fingerprint(b), b, "", "b.mp4", setup.key)
    setup.store.start(done.id)
    setup.store.fail(done.id, "x")
    with pytest.raises(CommandError, match="is failed; only queued or running jobs can be cancelled"):
        setup.ask(msg.Cancel(job=done.id))
    assert setup.store.get(job.id).state == JobState.CANCELLED


def test_pause_and_resume(setup):
    assert setup.ask(msg.Pause()) == {"paused": True} and setup.runner.paused
    assert setup.ask(msg.Resume()) == {"paused": False} and not setup.runner.paused


def test_an_unknown_command_is_a_refusal(setup):
    with pytest.raises(CommandError, match="unsupported command Subscribe"):
        setup.ask(msg.Subscribe())


def test_a_submitted_job_is_hashed_once_and_status_estimates_it_from_its_start(setup, synthetic_video, monkeypatch):
    """``aud submit`` hashes the file; its job's start does not hash it again (its identity is unchanged).
    Before its first shard is committed, ``status`` estimates its time left (and the queue's) at the recent
    jobs' median rate; after it, at its own."""
    from daemon.jobs import inputs

    hashes: list[str] = []
    real = inputs.fingerprint_async

    async def counted(path, *args):
        hashes.append(str(path))
        return await real(path, *args)

    monkeypatch.setattr("daemon.shell.intake.fingerprint_async", counted)
    sync_hashes: list[str] = []
    real_sync = inputs.fingerprint
    monkeypatch.setattr(inputs, "fingerprint", lambda path, *a: sync_hashes.append(str(path)) or real_sync(path, *a))
    for i, fps in enumerate((30.0, 40.0, 1000.0)):
        job, _ = setup.store.add_job(f"fp-{i}", Path(f"/gone/{i}.mp4"), "", f"{i}.mp4", setup.key)
        setup.store.set_plan(job.id, 8, "{}", [(0, 8)])
        setup.store.start(job.id)
        setup.store.shard_done(job.id, 0, b"rows", 1)
        setup.store.finish(job.id, f"/out/{i}.csv", fps)
    gates = [asyncio.Event(), asyncio.Event()]
    running = asyncio.Event()
    calls = []

    async def gated(task, progress):
        calls.append(task)
        running.set()
        await gates[min(len(calls) - 1, 1)].wait()  # the first shard waits for gates[0], the others for gates[1]
        return fake_compute(task, progress)

    setup.executor.compute = gated
    path = synthetic_video(frames=12, width=32, height=32, name="a.mp4")
    committed = asyncio.Event()
    setup.runner.publish = lambda e: (setup.events.append(e),
                                      isinstance(e, msg.JobProgress) and e.frames_saved and committed.set())

    async def main():
        submitted = await setup.commands.handle(msg.Submit(path=str(path)))
        run = asyncio.create_task(setup.runner.run(until_idle=True))
        await asyncio.wait_for(running.wait(), 10)
        before = await setup.commands.handle(msg.Status())
        (job,) = before["running"]
        assert job["job"] == submitted["job"] and job["frames_done"] == 0 and job["frames_total"] == 12
        assert (job["eta_s"], job["eta_basis"]) == (round(12 / 40.0, 1), "recent_jobs")  # median of 30, 40, 1000
        assert before["queue_eta_s"] == job["eta_s"] and before["queue_eta_unknown"] == 0
        assert before["recent_fps"] == 40.0
        gates[0].set()
        await asyncio.wait_for(committed.wait(), 10)
        after = await setup.commands.handle(msg.Status())
        (job,) = after["running"]
        assert job["eta_basis"] == "job" and job["eta_s"] is not None
        assert msgspec.convert(after, msg.StatusReply).running[0].eta_basis == "job"
        gates[1].set()
        await asyncio.wait_for(run, 30)

    asyncio.run(main())
    assert hashes == [str(path)] and sync_hashes == []  # hashed once, when it was submitted
    assert setup.store.get(submitted_id(setup)).state == JobState.DONE


def submitted_id(setup) -> int:
    return max(j.id for j in setup.store.jobs())


def test_a_resubmitted_unchanged_file_is_not_hashed_again_a_changed_one_is(setup, synthetic_video, monkeypatch):
    hashes: list[str] = []
    real = intake_module.fingerprint_async

    async def counted(path, *args):
        hashes.append(str(path))
        return await real(path, *args)

    monkeypatch.setattr(intake_module, "fingerprint_async", counted)
    a = video(synthetic_video, "a.mp4")
    first = setup.ask(msg.Submit(path=str(a)))
    again = setup.ask(msg.Submit(path=str(a)))  # its job is queued: the same file seen again
    assert (again["job"], again["outcome"]) == (first["job"], "queued") and hashes == [str(a)]
    forced = setup.ask(msg.Submit(path=str(a), force=True))  # a new job of the same content, still not hashed
    assert forced["job"] != first["job"] and hashes == [str(a)]
    video(synthetic_video, "a.mp4", shift=5)  # other content under the same name: its identity changed
    changed = setup.ask(msg.Submit(path=str(a)))
    assert hashes == [str(a), str(a)] and changed["job"] not in (first["job"], forced["job"])
    assert setup.store.get(changed["job"]).fingerprint == fingerprint(a)
