"""Re-runs (issue: "nothing can be re-run"): a job is a video *and* the models and settings that shape
its output; a newer result never silently destroys an older one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import tinymodels
from tests.conftest import SHARED, require_shared
from tests.e2e.daemonproc import MODELS
from tests.media import cut_clip, drop

pytestmark = pytest.mark.slow
CLIP = SHARED / "media" / "hamilton_clip.mp4"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    require_shared("media/hamilton_clip.mp4", "models/openface3/star.onnx")
    return cut_clip(CLIP, tmp_path_factory.mktemp("clips") / "talk.mp4", 100, 6)


def done(d, sub, name: str, job: int | None = None) -> dict:
    return sub.wait_for(lambda e: e["type"] == "job_done" and e["file"] == name and (job is None or e["job"] == job),
                        300)


def sidecar_models(path: Path) -> dict[str, str]:
    return {role: m["sha256"] for role, m in json.loads(path.read_text())["models"].items()}


def test_other_models_make_a_new_job_and_both_results_stay(daemon, clip, tmp_path):
    root = tmp_path / "daemon"
    first = daemon(root=root, workers=1, plots="false").start()
    sub = first.subscribe()
    drop(clip, first.inbox, "talk.mp4")
    job1 = done(first, sub, "talk.mp4")
    first.stop()
    assert first.outbox_files() == ["talk.csv", "talk.json"]
    shared_models = sidecar_models(first.outbox / "talk.json")

    other = tinymodels.write_set(tmp_path / "other-models")  # another model set: other hashes
    second = daemon(root=root, workers=1, models=other, plots="false").start()
    sub = second.subscribe()
    (second.inbox / ".done" / "talk.mp4").rename(second.inbox / "talk.mp4")  # the same video, dropped again
    job2 = done(second, sub, "talk.mp4")
    assert job2["job"] == job1["job"] + 1  # a new job, numbered next
    files = second.outbox_files()
    dated = [f for f in files if f.startswith("talk.") and f not in ("talk.csv", "talk.json")]
    assert "talk.csv" in files and len(dated) == 2, files  # the earlier result kept beside, with its date
    earlier_csv = next(f for f in dated if f.endswith(".csv"))
    assert sidecar_models(second.outbox / earlier_csv.replace(".csv", ".json")) == shared_models
    newest = sidecar_models(second.outbox / "talk.json")
    assert newest != shared_models and newest["multitask"] == tinymodels_hash(other / "mtl.onnx")

    # the same video with the same models: a duplicate, set aside with a message, unless forced
    drop(clip, second.inbox, "again.mp4")
    duplicate = sub.wait_for(lambda e: e["type"] == "file_duplicate" and e["file"].endswith("again.mp4"), 60)
    assert duplicate["job"] == job2["job"] and duplicate["state"] == "done"
    assert (second.inbox / ".done" / "again.mp4").exists()
    reply = second.request({"type": "submit", "path": str(second.inbox / ".done" / "again.mp4"), "force": True})
    assert reply["ok"] and reply["data"]["outcome"] == "queued", reply
    forced = done(second, sub, "again.mp4", reply["data"]["job"])
    assert forced["job"] == job2["job"] + 1
    assert (second.inbox / ".done" / "again.mp4").exists()  # submitted from .done: it stays there
    assert not (second.inbox / ".done" / ".done").exists()
    status = second.status()
    assert any(d["file"].endswith("again.mp4") for d in status["duplicates"])


def tinymodels_hash(path: Path) -> str:
    from daemon.core.models import sha256_of

    return sha256_of(path)


def test_a_setting_that_changes_the_output_makes_a_new_job(daemon, clip, tmp_path):
    root = tmp_path / "daemon"
    first = daemon(root=root, workers=1, plots="false", au45="false").start()
    sub = first.subscribe()
    drop(clip, first.inbox, "talk.mp4")
    job1 = done(first, sub, "talk.mp4")
    first.stop()
    second = daemon(root=root, workers=1, plots="false", au45="false", faces="all").start()
    sub = second.subscribe()
    (second.inbox / ".done" / "talk.mp4").rename(second.inbox / "talk.mp4")
    job2 = done(second, sub, "talk.mp4")
    assert job2["job"] == job1["job"] + 1
    assert len([f for f in second.outbox_files() if f.endswith(".csv")]) == 2
    assert MODELS.exists()
