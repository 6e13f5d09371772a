"""The runner's background tasks: an unhandled exception reaches its job, stop cuts pauses short."""

from __future__ import annotations

import asyncio

from daemon.jobs.tasks import Dropped, Tasks


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def failures_of(raise_: Exception) -> tuple[list[Exception], bool]:
    """Spawn a task that raises; what its ``failed`` callback received, and whether work is left."""
    async def main():
        failures, ended = [], asyncio.Event()
        tasks = Tasks(ended=ended.set)

        async def work():
            raise raise_

        async def failed(exc):
            failures.append(exc)

        tasks.spawn(work(), failed)
        await ended.wait()
        return failures, tasks.busy

    return run(main())


def test_an_exception_nobody_handled_is_logged_and_handed_to_its_failed_callback(caplog):
    failures, busy = failures_of(KeyError("oops"))
    assert [type(e) for e in failures] == [KeyError] and not busy
    assert any("internal error in the runner" in r.getMessage() and r.exc_info for r in caplog.records)


def test_dropped_work_is_no_failure(caplog):
    assert failures_of(Dropped("store the result")) == ([], False) and not caplog.records


def test_stop_cuts_a_pause_short():
    async def main():
        tasks = Tasks()
        assert await tasks.pause(0)  # a pause that ran its course
        pausing = asyncio.create_task(tasks.pause(3600))
        await asyncio.sleep(0)
        tasks.stop()
        return await pausing

    assert run(main()) is False


def test_drain_cancels_waits_lets_work_finish_and_cancels_what_outlasts_the_timeout():
    async def main():
        tasks = Tasks()
        release, forever = asyncio.Event(), asyncio.Event()
        finished, cancelled = [], []

        async def work():
            await release.wait()
            finished.append("work")

        async def wait():
            try:
                await forever.wait()
            except asyncio.CancelledError:
                cancelled.append("wait")
                raise

        tasks.spawn(work())
        tasks.spawn(wait(), wait=True)
        await asyncio.sleep(0)  # both started
        asyncio.get_running_loop().call_soon(release.set)
        drained = await tasks.drain(timeout=5)
        tasks.spawn(forever.wait())
        await asyncio.sleep(0)
        outlasted = await tasks.drain(timeout=0)
        return drained, outlasted, finished, cancelled, tasks.busy

    assert run(main()) == (True, False, ["work"], ["wait"], False)
