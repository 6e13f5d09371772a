"""What becomes of inputs when a job ends (issue 22 item 4, issue 26 item 6): aud writes only inside its
own folders; a cancel is not a failure; a re-run from ``.failed`` or ``.cancelled`` cleans up after itself."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from daemon.config import Settings
from daemon.jobs.store import Job, JobStore
from daemon.shell import files
from daemon.shell.outbox import Outbox


def setup(tmp_path: Path) -> tuple[Settings, JobStore, Outbox]:
    s = Settings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", state=tmp_path / "state",
                 models=tmp_path / "models")
    for d in (s.inbox, s.outbox, s.state):
        d.mkdir(parents=True)
    return s, JobStore(s.state / "jobs.sqlite3"), Outbox(s)


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())


def add_video(store: JobStore, video: Path, key: str, folder: str = "") -> Job:
    """Writes ``video`` and adds its job (hash ``key * 64``, inbox subfolder ``folder``)."""
    video.write_bytes(b"video")
    job, _ = store.add_job(key * 64, video, folder, video.name)
    return job


def test_a_failed_outside_file_gets_nothing_beside_it_and_its_report_in_the_outbox(tmp_path):
    s, store, outbox = setup(tmp_path)
    user = tmp_path / "user"
    user.mkdir()
    video = user / "v.mp4"
    job = add_video(store, video, "f")
    own = user / "v.mp4.error.txt"
    own.write_text("the user's own notes\n")  # used to be overwritten by aud's report
    outbox.failed(store.fail(job.id, "no decodable frame"), "no decodable frame", True)
    assert own.read_text() == "the user's own notes\n" and listing(user) == ["v.mp4", "v.mp4.error.txt"]
    report = s.outbox / ".failed" / f"v.mp4.job{job.id}.error.txt"
    assert listing(s.outbox) == [f".failed/v.mp4.job{job.id}.error.txt"]
    assert "no decodable frame" in report.read_text() and str(video) in report.read_text()
    # a later success of the same job removes its stale report
    outbox.done(store.requeue(job.id), s.outbox / "v.csv")  # (the runner calls it once the result is recorded)
    assert listing(s.outbox) == [] and listing(user) == ["v.mp4", "v.mp4.error.txt"]
    store.close()


def test_a_cancelled_inbox_file_goes_to_cancelled_with_a_plain_note(tmp_path):
    s, store, outbox = setup(tmp_path)
    video = s.inbox / "c.mp4"
    job = add_video(store, video, "c")
    outbox.failed(store.cancel(job.id, "cancelled by the user"), "cancelled by the user", True)
    assert listing(s.inbox) == [".cancelled/c.mp4", ".cancelled/c.mp4.cancelled.txt"]
    note = (s.inbox / ".cancelled" / "c.mp4.cancelled.txt").read_text()
    assert "cancelled by the user" in note and "could not process" not in note and "Fix the cause" not in note


def test_a_cancelled_outside_file_is_left_alone(tmp_path):
    s, store, outbox = setup(tmp_path)
    video = tmp_path / "v.mp4"
    job = add_video(store, video, "d")
    outbox.failed(store.cancel(job.id), "cancelled by the user", True)
    assert video.read_bytes() == b"video" and not (tmp_path / "v.mp4.error.txt").exists()
    assert listing(s.outbox) == [] and listing(s.inbox) == []


def test_a_successful_re_run_from_failed_moves_the_input_to_done_and_removes_the_stale_note(tmp_path):
    s, store, outbox = setup(tmp_path)
    (s.inbox / "sub").mkdir()
    video = s.inbox / "sub" / "r.mp4"
    job = add_video(store, video, "e", "sub")
    outbox.failed(store.fail(job.id, "the worker died"), "the worker died", True)
    kept = s.inbox / ".failed" / "sub" / "r.mp4"
    assert listing(s.inbox) == [".failed/sub/r.mp4", ".failed/sub/r.mp4.error.txt"]
    store.set_source(job.id, kept)  # `aud submit inbox/.failed/sub/r.mp4`
    ended = store.requeue(job.id)  # (the runner calls done once the result is recorded)
    assert outbox.input_after(ended) == s.inbox / ".done" / "sub" / "r.mp4"
    outbox.done(ended, s.outbox / "sub" / "r.csv")
    assert listing(s.inbox) == [".done/sub/r.mp4"]


def test_a_cancel_of_a_re_run_from_failed_moves_it_to_cancelled_without_the_error(tmp_path):
    s, store, outbox = setup(tmp_path)
    video = s.inbox / "r.mp4"
    job = add_video(store, video, "9")
    outbox.failed(store.fail(job.id, "boom"), "boom", True)
    store.set_source(job.id, s.inbox / ".failed" / "r.mp4")
    store.requeue(job.id)
    outbox.failed(store.cancel(job.id), "cancelled by the user", True)
    assert listing(s.inbox) == [".cancelled/r.mp4", ".cancelled/r.mp4.cancelled.txt"]


def test_cancelled_is_a_set_aside_folder(tmp_path):
    assert files.is_set_aside(tmp_path / ".cancelled" / "x.mp4", tmp_path)
    assert files.set_aside_in(tmp_path / "x.mp4", tmp_path) is None


def test_an_outbox_subfolder_replaced_by_a_symlink_is_not_written_through(tmp_path):
    s, store, outbox = setup(tmp_path)
    elsewhere = tmp_path / "victim-dir"
    elsewhere.mkdir()
    (s.outbox / "sub").symlink_to(elsewhere, target_is_directory=True)  # planted by another user
    job, _ = store.add_job("7" * 64, s.inbox / "sub" / "v.mp4", "sub", "v.mp4")
    with pytest.raises(PermissionError, match="leads outside") as refused:
        outbox.csv_path(job)
    assert refused.value.errno == errno.EACCES  # the runner waits and says why, as for a forbidding outbox
    assert listing(elsewhere) == []
