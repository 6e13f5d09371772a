"""Tests for daemon.shell.watcher (plain functions driving asyncio.run)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from watchdog.observers.api import BaseObserver, EventEmitter

from daemon.shell.watcher import InboxWatcher, NotTaken, is_candidate

EXTS = ("mp4", "mov", "m4v", "avi", "mkv")
SETTLE = 0.3
TIMEOUT = 5.0  # generous: the machine is shared


# --------------------------------------------------------------------------- helpers


class _NullEmitter(EventEmitter):
    """An emitter that never sees anything (a network volume losing every event)."""

    def queue_events(self, timeout: float) -> None:
        time.sleep(timeout)


class NullObserver(BaseObserver):
    """Real watchdog observer plumbing (threads, stop/join) with a blind emitter."""

    instances: list[NullObserver] = []

    def __init__(self) -> None:
        super().__init__(_NullEmitter, timeout=0.05)
        NullObserver.instances.append(self)


class Recorder:
    """on_ready that records (path, size at delivery, time) into an asyncio.Queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Path, int, float]] = asyncio.Queue()
        self.paths: list[Path] = []

    async def __call__(self, path: Path) -> None:
        self.paths.append(path)
        await self.queue.put((path, path.stat().st_size, time.monotonic()))

    async def next(self, timeout: float = TIMEOUT) -> tuple[Path, int, float]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def next_path(self, timeout: float = TIMEOUT) -> Path:
        return (await self.next(timeout))[0]

    async def assert_quiet(self, seconds: float) -> None:
        """Nothing more is delivered within ``seconds`` (a negative check, not a sync)."""
        with pytest.raises(TimeoutError):
            await self.next(seconds)


def make_watcher(inbox: Path, on_ready, **kw) -> InboxWatcher:
    kw.setdefault("extensions", EXTS)
    kw.setdefault("settle_seconds", SETTLE)
    kw.setdefault("rescan_seconds", 60.0)
    return InboxWatcher(inbox, on_ready, **kw)


@contextlib.asynccontextmanager
async def running(watcher: InboxWatcher) -> AsyncIterator[asyncio.Task[None]]:
    """Run the watcher for the body, then cancel it and check it stopped cleanly."""
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(0)  # let run() start the observer
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)
    assert not watcher.settling


async def wait_for_scans(watcher: InboxWatcher, count: int) -> None:
    """Wait (bounded) until the watcher has completed ``count`` scans."""
    async with asyncio.timeout(TIMEOUT):
        while watcher.scan_count < count:
            await asyncio.sleep(0.01)


def write(path: Path, data: bytes = b"x" * 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture()
def inbox(tmp_path: Path) -> Path:
    box = tmp_path / "inbox"
    box.mkdir()
    return box.resolve()


# --------------------------------------------------------------------------- is_candidate


def test_is_candidate_table(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    outside = write(tmp_path / "elsewhere" / "out.mp4")
    inside = write(inbox / "a.mp4")
    write(inbox / "b.MOV")
    write(inbox / "sub" / "deeper" / "c.mkv")
    write(inbox / "notes.txt")
    write(inbox / "noext")
    (inbox / "dir.mp4").mkdir()
    for name in (".hidden.mp4", "._a.mp4", ".DS_Store", "x.mp4.part", "x.mp4.crdownload",
                 "x.mp4.download", "x.mp4.TMP", "~x.mp4", ".done/d.mp4", ".failed/f.mp4",
                 "sub/.cache/h.mp4"):
        write(inbox / name)
    (inbox / "link_in.mp4").symlink_to(inside)
    (inbox / "link_out.mp4").symlink_to(outside)
    (inbox / "link_dir.mp4").symlink_to(inbox / "dir.mp4")
    (inbox / "dangling.mp4").symlink_to(inbox / "missing.mp4")
    (inbox / "linked_sub").symlink_to(outside.parent)

    cases = {
        "a.mp4": (True, True),
        "b.MOV": (True, True),
        "sub/deeper/c.mkv": (True, True),
        "notes.txt": (False, False),
        "noext": (False, False),
        "dir.mp4": (False, False),
        ".hidden.mp4": (False, False),
        "._a.mp4": (False, False),
        ".DS_Store": (False, False),
        "x.mp4.part": (False, False),
        "x.mp4.crdownload": (False, False),
        "x.mp4.download": (False, False),
        "x.mp4.TMP": (False, False),
        "~x.mp4": (False, False),
        ".done/d.mp4": (False, False),
        ".failed/f.mp4": (False, False),
        "sub/.cache/h.mp4": (False, False),
        "missing.mp4": (False, False),
        "link_in.mp4": (False, True),
        "link_out.mp4": (False, True),
        "link_dir.mp4": (False, False),
        "dangling.mp4": (False, False),
        "linked_sub/out.mp4": (False, True),
    }
    for rel, (plain, followed) in cases.items():
        path = inbox / rel
        assert is_candidate(path, inbox, EXTS, False) is plain, rel
        assert is_candidate(path, inbox, EXTS, True) is followed, rel
    # outside the inbox, the inbox itself, and extensions given with dots / upper case
    assert not is_candidate(outside, inbox, EXTS, True)
    assert not is_candidate(inbox, inbox, EXTS, True)
    assert is_candidate(inbox / "a.mp4", inbox, (".MP4",), False)
    assert not is_candidate(inbox / "a.mp4", inbox, ("mov",), False)


# --------------------------------------------------------------------------- settling


def test_growing_file_delivered_once_after_it_stops(inbox: Path) -> None:
    settle, chunk_gap, chunks = 0.5, 0.05, 12

    async def main() -> None:
        rec = Recorder()
        watcher = make_watcher(inbox, rec, settle_seconds=settle)
        async with running(watcher):
            await wait_for_scans(watcher, 1)
            path = inbox / "growing.mp4"
            with path.open("wb") as fh:
                for _ in range(chunks):
                    fh.write(b"y" * 1000)
                    fh.flush()
                    await asyncio.sleep(chunk_gap)  # drives the growth, not a sync
            last_write = time.monotonic()
            got, size, at = await rec.next()
            assert got == path
            assert size == chunks * 1000
            assert at - last_write >= settle - 0.1
            await rec.assert_quiet(2 * settle)
        assert rec.paths == [path]
        assert watcher.delivered_count == 1

    asyncio.run(main())


def test_renamed_into_place_is_delivered(inbox: Path) -> None:
    async def main() -> None:
        rec = Recorder()
        watcher = make_watcher(inbox, rec)
        async with running(watcher):
            await wait_for_scans(watcher, 1)
            temp = write(inbox / "clip.mp4.part")
            final = inbox / "clip.mp4"
            temp.rename(final)
            assert await rec.next_path() == final

    asyncio.run(main())


def test_startup_scan_finds_files_in_subfolders_and_skips_hidden(inbox: Path) -> None:
    expected = {write(inbox / "a.mp4"), write(inbox / "x" / "y" / "b.MKV")}
    write(inbox / ".done" / "old.mp4")
    write(inbox / ".failed" / "bad.mp4")
    write(inbox / "x" / "notes.txt")

    async def main() -> None:
        rec = Recorder()
        watcher = make_watcher(inbox, rec, observer_factory=NullObserver)
        async with running(watcher):
            got = {await rec.next_path(), await rec.next_path()}
            assert got == expected
            await rec.assert_quiet(2 * SETTLE)

    asyncio.run(main())


def test_done_folder_events_are_ignored(inbox: Path) -> None:
    async def main() -> None:
        rec = Recorder()
        watcher = make_watcher(inbox, rec)
        async with running(watcher):
            await wait_for_scans(watcher, 1)
            write(inbox / ".done" / "finished.mp4")
            write(inbox / ".failed" / "broken.mp4")
            write(inbox / "clip.mp4.crdownload")
            (inbox / "dir.mp4").mkdir()
            barrier = write(inbox / "barrier.mp4")  # settles after the others would have
            assert await rec.next_path() == barrier
        assert rec.paths == [barrier]

    asyncio.run(main())


def test_rescan_finds_files_the_observer_missed_and_delivers_each_version_once(
    inbox: Path,
) -> None:
    first = write(inbox / "first.mp4")

    async def main() -> None:
        rec = Recorder()
        watcher = make_watcher(inbox, rec, rescan_seconds=0.2, observer_factory=NullObserver)
        async with running(watcher):
            assert await rec.next_path() == first  # start-up scan
            second = write(inbox / "sub" / "second.mp4")
            assert await rec.next_path() == second  # only a rescan can find it
            scans = watcher.scan_count
            await wait_for_scans(watcher, scans + 2)
            assert rec.paths == [first, second]  # unchanged files not re-delivered
            with first.open("ab") as fh:
                fh.write(b"more")
            assert await rec.next_path() == first  # a new version is delivered again
        assert rec.paths == [first, second, first]

    asyncio.run(main())


def test_vanished_file_is_not_delivered(inbox: Path) -> None:
    async def main() -> None:
        rec = Recorder()
        watcher = make_watcher(inbox, rec)
        async with running(watcher):
            await wait_for_scans(watcher, 1)
            ghost = write(inbox / "ghost.mp4")
            async with asyncio.timeout(TIMEOUT):  # wait until the watcher noticed it
                while ghost not in watcher.settling:
                    await asyncio.sleep(0.01)
            ghost.unlink()
            barrier = write(inbox / "barrier.mp4")
            assert await rec.next_path() == barrier
        assert rec.paths == [barrier]

    asyncio.run(main())


def test_unopenable_file_rechecked_after_modification_without_spinning(inbox: Path) -> None:
    calls: list[Path] = []
    lock = threading.Lock()

    def can_open(path: Path) -> bool:
        with lock:
            calls.append(path)
        return path.read_bytes().startswith(b"OK")

    async def main() -> None:
        rec = Recorder()
        watcher = make_watcher(inbox, rec, can_open=can_open)
        async with running(watcher):
            await wait_for_scans(watcher, 1)
            path = write(inbox / "copying.mp4", b"partial")
            async with asyncio.timeout(TIMEOUT):
                while path not in watcher.unopenable:
                    await asyncio.sleep(0.01)
            refused = len(calls)
            os.chmod(path, 0o600)  # an event, but the same (size, mtime_ns)
            await rec.assert_quiet(3 * SETTLE)
            assert len(calls) == refused  # no re-check without a change
            write(path, b"OK complete")
            assert await rec.next_path() == path
            assert path not in watcher.unopenable
        assert rec.paths == [path]

    asyncio.run(main())


def test_unopenable_file_rechecked_at_rescan(inbox: Path) -> None:
    openable = threading.Event()
    path = write(inbox / "slow.mov")

    async def main() -> None:
        rec = Recorder()
        watcher = make_watcher(
            inbox, rec, rescan_seconds=0.2, observer_factory=NullObserver,
            can_open=lambda p: openable.is_set(),
        )
        async with running(watcher):
            async with asyncio.timeout(TIMEOUT):
                while path not in watcher.unopenable:
                    await asyncio.sleep(0.01)
            openable.set()
            assert await rec.next_path() == path

    asyncio.run(main())


def test_change_during_can_open_settles_again(inbox: Path) -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def can_open(path: Path) -> bool:
        calls.append(path.stat().st_size)
        entered.set()
        return release.wait(TIMEOUT)

    async def main() -> None:
        rec = Recorder()
        watcher = make_watcher(inbox, rec, can_open=can_open)
        async with running(watcher):
            await wait_for_scans(watcher, 1)
            path = write(inbox / "racy.mp4", b"a" * 10)
            assert await asyncio.to_thread(entered.wait, TIMEOUT)
            with path.open("ab") as fh:
                fh.write(b"b" * 10)
            release.set()
            _, size, _ = await rec.next()
            assert size == 20
            await rec.assert_quiet(2 * SETTLE)
        assert rec.paths == [path]  # one delivery, of the final version
        assert calls == [10, 20]

    asyncio.run(main())


def test_change_during_on_ready_is_delivered_again(inbox: Path) -> None:
    async def main() -> None:
        rec, release = Recorder(), asyncio.Event()

        async def on_ready(path: Path) -> None:
            await rec(path)
            await release.wait()

        watcher = make_watcher(inbox, on_ready, observer_factory=NullObserver)
        async with running(watcher):
            path = write(inbox / "busy.mp4", b"a" * 10)
            watcher.poke(path)
            assert (await rec.next())[1] == 10
            with path.open("ab") as fh:
                fh.write(b"b" * 10)
            watcher.poke(path)  # arrives while on_ready is still running
            release.set()
            assert (await rec.next())[1] == 20
        assert rec.paths == [path, path]

    asyncio.run(main())


def test_raising_on_ready_and_can_open_do_not_stop_the_watcher(
    inbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def can_open(path: Path) -> bool:
        if path.name == "explodes.mp4":
            raise RuntimeError("decoder crashed")
        return True

    bad = inbox / "bad.mp4"

    async def main() -> None:
        rec = Recorder()

        async def on_ready(path: Path) -> None:
            await rec(path)
            if path.name == "bad.mp4":
                raise ValueError("boom")

        watcher = make_watcher(inbox, on_ready, can_open=can_open)
        async with running(watcher) as task:
            await wait_for_scans(watcher, 1)
            write(bad)
            write(inbox / "explodes.mp4")
            assert await rec.next_path() == bad
            good = write(inbox / "good.mp4")
            assert await rec.next_path() == good
            assert not task.done()
        assert rec.paths == [bad, good]

    with caplog.at_level(logging.INFO, logger="aud.watcher"):
        asyncio.run(main())
    failures = [r.getMessage() for r in caplog.records if r.name == "aud.watcher" and r.exc_info]
    assert [m for m in failures if m.startswith("on_ready failed")] == [
        f"on_ready failed for {str(bad)!r}; it is considered again on the next rescan"]
    assert [m for m in failures if m.startswith("can_open raised")], failures


@pytest.mark.parametrize("raised", [NotTaken, RuntimeError])
def test_a_file_whose_on_ready_raised_is_delivered_again_on_the_next_rescan(
    inbox: Path, raised: type[Exception]
) -> None:
    """Issue 22 item 3(a): the watcher used to mark a file delivered before ``on_ready`` took it, so a
    file whose hand-over failed (the job store raising) was never looked at again until a restart."""
    bad = write(inbox / "store_down.mp4")

    async def main() -> None:
        rec = Recorder()
        failures = [raised("the job store cannot write")]

        async def on_ready(path: Path) -> None:
            await rec(path)
            if failures:
                raise failures.pop()

        watcher = make_watcher(inbox, on_ready, rescan_seconds=0.2)
        async with running(watcher):
            assert await rec.next_path() == bad  # refused
            assert await rec.next_path() == bad  # and offered again by a rescan, unchanged
            await rec.assert_quiet(3 * 0.2 + SETTLE)  # taken: not offered a third time
        assert rec.paths == [bad, bad]

    asyncio.run(main())


# --------------------------------------------------------------------------- lifecycle


def test_poke_considers_a_path_now(inbox: Path, tmp_path: Path) -> None:
    async def main() -> None:
        rec = Recorder()
        watcher = make_watcher(inbox, rec, observer_factory=NullObserver)
        early = write(inbox / "early.mp4")
        watcher.poke(early)  # before run(): kept for start-up
        async with running(watcher):
            assert await rec.next_path() == early
            path = write(inbox / "submitted.mp4")
            watcher.poke(path)
            watcher.poke(write(tmp_path / "outside.mp4"))  # ignored
            assert await rec.next_path() == path
            await rec.assert_quiet(2 * SETTLE)
        assert rec.paths == [early, path]

    asyncio.run(main())


def test_cancellation_stops_observer_and_settle_tasks(inbox: Path) -> None:
    NullObserver.instances.clear()

    async def main() -> None:
        rec = Recorder()
        watcher = make_watcher(inbox, rec, settle_seconds=30.0, observer_factory=NullObserver)
        write(inbox / "pending.mp4")
        async with running(watcher) as task:
            await wait_for_scans(watcher, 1)
            assert watcher.settling == {inbox / "pending.mp4"}
            observer = NullObserver.instances[-1]
            assert observer.is_alive()
        assert task.cancelled()
        assert not observer.is_alive()
        assert rec.paths == []

    asyncio.run(main())


def test_missing_inbox_raises(tmp_path: Path) -> None:
    async def main() -> None:
        watcher = make_watcher(tmp_path / "nope", Recorder())
        with pytest.raises(FileNotFoundError, match="inbox"):
            await watcher.run()

    asyncio.run(main())
