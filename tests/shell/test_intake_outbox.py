"""``shell/intake.py`` and ``shell/outbox.py`` in process: a real store and real folders, no watcher
thread, no runner loop. (Behaviour only: the files where inputs and reports go are the outbox's.)"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from daemon import protocol as msg
from daemon.jobs.inputs import fingerprint
from daemon.jobs.store import JobState, JobStore
from daemon.shell import files
from daemon.shell.intake import Intake
from daemon.shell.outbox import Outbox
from tests.conftest import frame_pattern
from tests.shell.daemonkit import settings_for

pytestmark = pytest.mark.usefixtures("isolated_config")


class Setup:
    def __init__(self, tmp_path: Path, models: Path, **overrides):
        self.settings = s = settings_for(tmp_path, models, **overrides)
        for folder in (s.inbox, s.outbox, s.state):
            folder.mkdir(parents=True)
        self.store = JobStore(s.database_path)
        self.events: list[msg.Event] = []
        self.forgotten: list[Path] = []
        self.wakes = 0
        self.outbox = Outbox(s, forget=self.forgotten.append)
        self.intake = Intake(s, self.store, self.outbox, "k", self.events.append, self._wake)

    def _wake(self) -> None:
        self.wakes += 1

    def accept(self, path: Path, force: bool = False):
        return asyncio.run(self.intake.accept(path, force=force))


@pytest.fixture
def setup(tmp_path, tiny_models):
    made = Setup(tmp_path, tiny_models)
    yield made
    made.store.close()


def drop(setup: Setup, synthetic_video, name: str, shift: int = 0, subdir: str = "") -> Path:
    made = synthetic_video(frames=4, width=32, height=32, name=f"src/{name}",
                           pattern=lambda i, w, h: frame_pattern(i + shift, w, h))
    target = setup.settings.inbox / subdir / name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(made, target)
    return target


# --- intake ---------------------------------------------------------------------------------------

def test_a_new_file_becomes_a_queued_job_with_its_inbox_subfolder(setup, synthetic_video):
    path = drop(setup, synthetic_video, "a.mp4", subdir="study/p01")
    job, outcome = setup.accept(path)
    assert outcome == "queued" and job.state == JobState.QUEUED
    assert job.subdir == "study/p01" and job.name == "a.mp4" and job.fingerprint == fingerprint(path)
    assert [type(e) for e in setup.events] == [msg.JobQueued] and setup.wakes == 1


def test_the_same_file_seen_again_while_queued_is_the_same_job(setup, synthetic_video):
    path = drop(setup, synthetic_video, "a.mp4")
    first, _ = setup.accept(path)
    again, outcome = setup.accept(path)
    assert (again.id, outcome) == (first.id, "queued") and len(setup.events) == 1


def test_a_copy_under_another_name_is_set_aside_as_a_duplicate(setup, synthetic_video):
    path = drop(setup, synthetic_video, "a.mp4")
    job, _ = setup.accept(path)
    copy = setup.settings.inbox / "copy.mp4"
    copy.write_bytes(path.read_bytes())
    same, outcome = setup.accept(copy)
    assert outcome == "duplicate" and same.id == job.id
    moved = setup.settings.inbox / files.DONE_DIR / "copy.mp4"
    assert moved.is_file() and not copy.exists()
    assert setup.forgotten == [copy]  # the watcher is told: a file put back there later is new
    duplicate = setup.events[-1]
    assert isinstance(duplicate, msg.FileDuplicate) and duplicate.moved_to == str(moved)
    assert list(setup.intake.duplicates) == [duplicate]


def test_the_content_of_a_failed_job_dropped_again_queues_that_job_again(setup, synthetic_video):
    path = drop(setup, synthetic_video, "a.mp4")
    job, _ = setup.accept(path)
    setup.store.start(job.id)
    setup.store.fail(job.id, "broken")
    again, outcome = setup.accept(path)
    assert (again.id, outcome, again.state) == (job.id, "requeued", JobState.QUEUED)


def test_force_makes_a_new_job_for_known_content(setup, synthetic_video):
    path = drop(setup, synthetic_video, "a.mp4")
    job, _ = setup.accept(path)
    forced, outcome = setup.accept(path, force=True)
    assert outcome == "queued" and forced.id != job.id


def test_waiting_lists_nothing_without_a_watcher(setup):
    assert setup.intake.waiting() == []


def test_takeable_waits_for_an_unopenable_file_then_takes_it(tmp_path, tiny_models):
    setup = Setup(tmp_path, tiny_models, unopenable_grace_seconds=3600)
    junk = setup.settings.inbox / "junk.mp4"
    junk.write_bytes(b"not a video")
    assert not setup.intake.takeable(junk)  # still arriving, perhaps
    old = junk.stat().st_mtime - 7200
    os.utime(junk, (old, old))
    assert setup.intake.takeable(junk)  # unchanged for longer than the grace: taken, to fail with a reason
    setup.store.close()


# --- outbox ---------------------------------------------------------------------------------------

def test_csv_names_mirror_the_inbox_and_two_jobs_never_share_one(setup, synthetic_video):
    a = drop(setup, synthetic_video, "a.mp4", subdir="study")
    b = drop(setup, synthetic_video, "a.mp4", shift=9, subdir="other")
    (b.parent / "x").mkdir()
    b2 = b.parent / "x" / "a.mp4"
    os.replace(b, b2)
    ja, _ = setup.accept(a)
    jb, _ = setup.accept(b2)
    csv_a = setup.outbox.csv_path(ja)
    assert csv_a == setup.settings.outbox / "study" / "a.csv"
    assert setup.outbox.csv_path(ja) == csv_a  # reserved: asked again, the same name
    assert setup.outbox.csv_path(jb) == setup.settings.outbox / "other" / "x" / "a.csv"


def test_done_moves_the_input_into_done_and_tells_the_watcher(setup, synthetic_video):
    path = drop(setup, synthetic_video, "a.mp4", subdir="s")
    job, _ = setup.accept(path)
    expected = setup.outbox.input_after(job)
    assert expected == setup.settings.inbox / files.DONE_DIR / "s" / "a.mp4"
    setup.outbox.done(job, setup.outbox.csv_path(job))
    assert expected.is_file() and not path.exists()
    assert setup.forgotten == [path]


def test_failed_keeps_the_input_in_failed_with_the_reason_beside_it(setup, synthetic_video):
    path = drop(setup, synthetic_video, "a.mp4")
    job, _ = setup.accept(path)
    setup.outbox.failed(job, "cannot decode frame 3", set_aside=True)
    kept = setup.settings.inbox / files.FAILED_DIR / "a.mp4"
    assert kept.is_file() and not path.exists()
    reports = [p for p in kept.parent.iterdir() if p != kept]
    assert len(reports) == 1 and "cannot decode frame 3" in reports[0].read_text()


def test_inputs_outside_the_inbox_never_move(setup, synthetic_video, tmp_path):
    outside = synthetic_video(frames=4, width=32, height=32, name="elsewhere/a.mp4")
    job, _ = setup.accept(outside)
    assert not setup.outbox.movable(outside)
    assert setup.outbox.input_after(job) == outside
    setup.outbox.done(job, setup.outbox.csv_path(job))
    assert outside.is_file() and setup.forgotten == []


def test_after_done_keep_leaves_inputs_in_place(tmp_path, tiny_models, synthetic_video):
    setup = Setup(tmp_path, tiny_models, after_done="keep")
    path = drop(setup, synthetic_video, "a.mp4")
    job, _ = setup.accept(path)
    setup.outbox.done(job, setup.outbox.csv_path(job))
    assert path.is_file() and setup.outbox.input_after(job) == path
    setup.store.close()
