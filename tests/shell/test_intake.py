"""Intake with an injected job-store fault (issue 22 item 3a): a settled file the store cannot take waits,
with the reason in ``waiting()`` (status), and is taken on a later rescan, never stranded."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from daemon import protocol as msg
from daemon.config import Settings
from daemon.jobs.store import JobStore, StoreError
from daemon.shell.intake import Intake
from daemon.shell.outbox import Outbox

TIMEOUT = 10.0


class FailingStore(JobStore):
    """A real store whose ``add_job`` raises StoreError (a full state disk) while ``failures`` lasts."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.calls = 0

    def add_job(self, *args, **kwargs):
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise StoreError("database or disk is full")
        return super().add_job(*args, **kwargs)


def settings(tmp_path: Path, **kw) -> Settings:
    s = Settings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", state=tmp_path / "state",
                 models=tmp_path / "models", settle_seconds=0.1, rescan_seconds=0.3, **kw)
    for d in (s.inbox, s.outbox, s.state):
        d.mkdir(parents=True, exist_ok=True)
    return s


def test_a_store_error_is_a_wait_with_its_reason_and_the_file_is_taken_on_a_rescan(tmp_path, caplog):
    s = settings(tmp_path, unopenable_grace_seconds=0)  # not a video: taken at once (what is tested: the hand-over)
    store = FailingStore(s.state / "jobs.sqlite3", failures=2)
    events: list[msg.Event] = []
    video = s.inbox / "clip\nforged INFO line.mp4"  # a newline in a name must not forge a log line
    video.write_bytes(b"not really a video, but takeable: the intake only hashes it")

    async def main() -> None:
        intake = Intake(s, store, Outbox(s), "key", events.append, lambda: None)
        watcher = intake.watch()
        task = asyncio.create_task(watcher.run())
        try:
            async with asyncio.timeout(TIMEOUT):
                while not intake.waiting() or "job store" not in intake.waiting()[0].reason:
                    await asyncio.sleep(0.02)  # polling status, as a user would
                (waiting,) = intake.waiting()
                assert waiting.file == str(video)
                assert "the job store cannot take it yet (database or disk is full)" in waiting.reason
                assert "tried again every 0.3 s" in waiting.reason
                while not store.jobs():
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert intake.waiting() == []

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    (job,) = store.jobs()
    assert job.name == video.name and store.calls == 3
    waits = [e for e in events if isinstance(e, msg.FileWaiting)]
    assert len(waits) == 1  # said once, not on every retry
    assert [e.file for e in events if isinstance(e, msg.JobQueued)] == [video.name]
    text = caplog.text
    assert "\nforged INFO line" not in text and repr(str(video)) in text
    store.close()


def test_submit_with_a_store_error_is_a_clear_refusal(tmp_path):
    from daemon.shell.errors import CommandError

    s = settings(tmp_path)
    store = FailingStore(s.state / "jobs.sqlite3", failures=1)
    outside = tmp_path / "elsewhere" / "v.mp4"
    outside.parent.mkdir()
    outside.write_bytes(b"content")

    async def main() -> None:
        intake = Intake(s, store, Outbox(s), "key", lambda e: None, lambda: None)
        with pytest.raises(CommandError, match="the job store cannot take it now"):
            await intake.submit(outside)
        job, outcome = await intake.submit(outside)
        assert outcome == "queued" and job.name == "v.mp4"

    asyncio.run(main())
    store.close()


def test_a_re_drop_of_a_cancelled_content_under_another_name_renames_the_job(tmp_path):
    """Issue 26 item 2: a job is named after the file it was made from (the re-drop), not the first one."""
    s = settings(tmp_path)
    store = JobStore(s.state / "jobs.sqlite3")
    first = tmp_path / "sub" / "ham_sub.mp4"
    first.parent.mkdir()
    first.write_bytes(b"same content")
    (s.inbox / "folder").mkdir()
    again = s.inbox / "folder" / "ham_inbox.mp4"
    again.write_bytes(b"same content")

    async def main() -> None:
        intake = Intake(s, store, Outbox(s), "key", lambda e: None, lambda: None)
        job, _ = await intake.submit(first)
        store.cancel(job.id)
        job2, outcome = await intake.accept(again)
        assert (job2.id, outcome) == (job.id, "requeued")
        assert (job2.name, job2.subdir, job2.source) == ("ham_inbox.mp4", "folder", str(again))

    asyncio.run(main())
    store.close()
