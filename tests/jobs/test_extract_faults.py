"""``aud extract`` never hangs on a job that cannot end well: faults injected into the job store (a full
state disk) and into writing the result, on tiny models."""

from __future__ import annotations

import pytest

from daemon import cli
from daemon.jobs.store import StoreError
from daemon.output import files as output_files
from daemon.output import read_csv
from tests.jobs.test_extract import H, W, go, in_process, settings
from tests.jobs.test_runner import FULL, FaultyStore


def faulty(faults):
    return lambda path: FaultyStore(path, faults)


def test_a_result_the_store_refused_once_is_committed_and_written(tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=8, width=W, height=H)
    out = tmp_path / "clip.csv"
    report = go([video], out, settings(tiny_models, tmp_path, shard_frames=4), make=in_process,
                open_store=faulty({"shard_done": [StoreError(FULL)]}))
    (outcome,) = report.outcomes
    assert (outcome.csv, outcome.frames, outcome.error) == (out, 8, None)
    assert [int(r["frame"]) for r in read_csv(out)] == list(range(1, 9))


def test_a_store_that_cannot_take_a_result_ends_the_job_with_the_reason(tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=8, width=W, height=H)
    out = tmp_path / "clip.csv"
    report = go([video], out, settings(tiny_models, tmp_path, shard_frames=4), make=in_process,
                open_store=faulty({"shard_done": [StoreError(FULL)] * 1000}))
    (outcome,) = report.outcomes
    assert outcome.csv is None and FULL in outcome.error
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.usefixtures("isolated_config")
def test_aud_extract_exits_2_with_the_reason_when_the_result_cannot_be_written(tiny_models, synthetic_video,
                                                                                tmp_path, monkeypatch, capsys):
    """Issue 26's hang (``--mirror --csv-style openface2`` raised TableError while writing): any error
    writing the result ends the job with its reason; nothing of the result stays behind."""
    from daemon.output.openface2 import TableError

    def cannot(table, style, hemi=False):
        raise TableError("openface2: the table has no column 'pose_Tx'")

    monkeypatch.setattr(output_files, "table_chunks", cannot)  # the writer runs in this process
    video = synthetic_video(frames=4, width=W, height=H)
    code = cli.main(["extract", str(video), "-o", str(tmp_path / "out"), "--models", str(tiny_models),
                     "--provider", "cpu", "--workers", "1", "--no-plots"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "internal error: TableError: openface2: the table has no column 'pose_Tx'" in err
    assert list((tmp_path / "out").iterdir()) == []


def test_a_store_that_cannot_record_anything_ends_aud_extract_with_the_reason(tiny_models, synthetic_video, tmp_path):
    videos = [synthetic_video(frames=4, width=W, height=H, name=n) for n in ("a.mp4", "b.mp4")]
    never = [StoreError(FULL)] * 1000
    report = go(videos, tmp_path / "out", settings(tiny_models, tmp_path), make=in_process,
                open_store=faulty({"start": never, "fail": list(never)}))
    assert [o.csv for o in report.outcomes] == [None, None]
    assert all(FULL in o.error for o in report.outcomes)
