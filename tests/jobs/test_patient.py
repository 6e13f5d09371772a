"""Store calls that wait while the job store cannot commit, with the reason where status shows it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from daemon.jobs.patient import PatientStore, inline
from daemon.jobs.retry import Waits
from daemon.jobs.store import StoreError
from daemon.jobs.tasks import Dropped, Tasks


class Flaky:
    """Raises StoreError the first ``failures`` times, noting what the job showed at each try."""

    def __init__(self, failures: int, active=None):
        self.failures = failures
        self.active = active
        self.seen: list[str | None] = []

    def __call__(self, value):
        self.seen.append(self.active.waiting if self.active else None)
        if self.failures:
            self.failures -= 1
            raise StoreError("job store /x/jobs.sqlite3 cannot be used: database or disk is full")
        return value


def job(id=7):
    return SimpleNamespace(job=SimpleNamespace(id=id, name="a.mp4"), waiting=None)


def patient(waits: Waits, wanted=lambda active: True) -> PatientStore:
    return PatientStore(waits, Tasks(), wanted, inline)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_a_store_error_is_a_wait_with_its_reason_shown_then_the_call_goes_through(caplog):
    active = job()
    call = Flaky(2, active)
    store = patient(Waits(retry_s=0.01))
    assert run(store(active, "store the result of frames 1-4", call, "ok")) == "ok"
    assert call.seen[0] is None
    assert call.seen[1] == call.seen[2] == ("the job store cannot store the result of frames 1-4: job store "
                                            "/x/jobs.sqlite3 cannot be used: database or disk is full")
    assert active.waiting is None  # it went on
    assert sum("trying again every 0.01 s" in r.getMessage() for r in caplog.records) == 1  # said once


def test_outside_a_job_the_runner_shows_the_wait():
    store = patient(Waits(retry_s=0.01))
    seen = []

    def read_queue():
        seen.append(store.waiting)
        if len(seen) == 1:
            raise StoreError("disk I/O error")
        return []

    assert run(store(None, "read the queue", read_queue)) == []
    assert seen == [None, "the job store cannot read the queue: disk I/O error"] and store.waiting is None


def test_without_a_retry_period_the_store_gets_a_few_tries_then_the_error_goes_up():
    call = Flaky(10)
    with pytest.raises(StoreError, match="disk is full"):
        run(patient(Waits(store_tries=3, store_pause_s=0.01))(job(), "store a result", call, 1))
    assert len(call.seen) == 3


def test_a_job_that_ended_meanwhile_drops_the_call():
    with pytest.raises(Dropped):
        run(patient(Waits(retry_s=0.01), wanted=lambda active: False)(job(), "store a result", Flaky(1), 1))


def test_a_stop_drops_the_waiting_call():
    async def main():
        store = patient(Waits(retry_s=3600))
        waiting = asyncio.create_task(store(job(), "store a result", Flaky(1), 1))
        await asyncio.sleep(0)
        store.tasks.stop()
        await waiting

    with pytest.raises(Dropped):
        run(main())
