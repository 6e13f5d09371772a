"""The results writer alone: a finished job's rows become its files, or say why they cannot yet."""

from __future__ import annotations

import asyncio
import errno
import json
from pathlib import Path

import pytest

from daemon.core.results import ShardFormatError
from daemon.core.video import probe
from daemon.jobs.active import ActiveJob, JobFailure, prepare
from daemon.jobs.inputs import fingerprint
from daemon.jobs.patient import PatientStore, inline
from daemon.jobs.plan import TimeSelection
from daemon.jobs.retry import Waits
from daemon.jobs.store import JobStore
from daemon.jobs.tasks import Tasks
from daemon.jobs.writer import ResultsWriter, Unwritable
from daemon.output import OutputOptions, read_csv
from daemon.output import files as output_files
from tests.fakeshards import fake_rows
from tests.jobs.test_runner import FRAMES, Destination


@pytest.fixture
def finished(tmp_path, synthetic_video):
    """A job whose shards are all computed: (active job, its shards' stored results, destination)."""
    video = synthetic_video(frames=FRAMES, width=32, height=32, name="a.mp4")
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        job, _ = store.add_job(fingerprint(video), video, "", "a.mp4", "k")
        store.start(job.id)
        active = prepare(store, job, TimeSelection(), 8, 2, probe)
    parts = [fake_rows(active.task(i)).to_bytes() for i in sorted(active.ranges)]
    destination = Destination(tmp_path / "out")
    destination.folder.mkdir()
    return active, parts, destination


def write(writer: ResultsWriter, active: ActiveJob, parts) -> Path:
    async def main():
        try:
            return await writer.write(active, parts)
        finally:
            writer.close()
    return asyncio.run(main())


def test_the_rows_become_the_csv_and_its_sidecar(finished):
    active, parts, destination = finished
    csv = write(ResultsWriter(destination, OutputOptions(plots=False), {"models": "m"}), active, parts)
    assert csv == destination.folder / "a.csv"
    assert [float(r["AU01_r"]) for r in read_csv(csv)] == list(range(FRAMES))
    sidecar = json.loads(csv.with_suffix(".json").read_text())
    assert (sidecar["frames"], sidecar["rows"], sidecar["faces"], sidecar["models"]) == (FRAMES, FRAMES, 1, "m")
    assert sidecar["video"] == active.job.source and sidecar["job"] == active.job.id


def test_a_folder_that_cannot_be_made_is_unwritable_with_the_filesystems_reason(finished):
    active, parts, destination = finished

    def full(job):
        raise OSError(errno.ENOSPC, "No space left on device")

    destination.csv_path = full
    with pytest.raises(Unwritable, match="cannot make the result's folder: No space left") as caught:
        write(ResultsWriter(destination, OutputOptions(plots=False), {}), active, parts)
    assert caught.value.cause.errno == errno.ENOSPC


@pytest.mark.parametrize("error,expected", [(OSError(errno.ENOSPC, "No space left on device"), Unwritable),
                                            (KeyError("a column"), KeyError)])
def test_a_write_that_fails_half_way_leaves_no_part_of_the_result(finished, monkeypatch, error, expected):
    active, parts, destination = finished

    def fails(table, style, hemi=False):  # the CSV's first piece, then the error: while its file is written
        yield "frame\n"
        raise error

    monkeypatch.setattr(output_files, "table_chunks", fails)  # after the sidecar, half-way through the CSV
    with pytest.raises(expected):
        write(ResultsWriter(destination, OutputOptions(plots=False), {}), active, parts)
    assert list(destination.folder.iterdir()) == []


def test_an_input_changed_while_the_job_ran_discards_the_result_and_keeps_the_input(finished):
    active, parts, destination = finished
    with open(active.path, "ab") as f:
        f.write(b"more")
    with pytest.raises(JobFailure, match="changed while it was being processed") as caught:
        write(ResultsWriter(destination, OutputOptions(plots=False), {}), active, parts)
    assert caught.value.set_aside is False and list(destination.folder.iterdir()) == []


def test_an_unreadable_stored_shard_asks_for_the_shards_again(finished):
    active, parts, destination = finished
    with pytest.raises(ShardFormatError):
        old = [b"an npz of the old format"] + parts[1:]
        write(ResultsWriter(destination, OutputOptions(plots=False), {}), active, old)


def test_deliver_waits_while_the_destination_is_full_and_shows_why(finished):
    """The daemon: a full disk is a wait (the reason on the job), then the result is written."""
    active, parts, destination = finished
    make = destination.csv_path
    tries, shown = [], []

    def full_twice(job):
        shown.append(active.waiting)
        tries.append(job.id)
        if len(tries) <= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return make(job)

    destination.csv_path = full_twice
    writer = ResultsWriter(destination, OutputOptions(plots=False), {})
    patient = PatientStore(Waits(retry_s=0.01), Tasks(), lambda a: True, inline)

    async def read():
        return parts

    async def main():
        try:
            return await writer.deliver(active, read, patient)
        finally:
            writer.close()

    assert asyncio.run(main()) == destination.folder / "a.csv"
    full = "cannot make the result's folder: No space left on device"
    assert shown == [None, full, full]  # what status showed at each try
    assert active.waiting is None


def test_deliver_without_a_retry_period_fails_the_job(finished):
    active, parts, destination = finished

    def full(job):
        raise OSError(errno.ENOSPC, "No space left on device")

    destination.csv_path = full
    writer = ResultsWriter(destination, OutputOptions(plots=False), {})

    async def read():
        return parts

    async def main():
        try:
            return await writer.deliver(active, read, PatientStore(Waits(), Tasks(), lambda a: True, inline))
        finally:
            writer.close()

    with pytest.raises(JobFailure, match="No space left on device"):
        asyncio.run(main())
