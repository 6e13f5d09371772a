"""``aud run --executor dask`` end to end: a real ``dask scheduler`` and two ``dask worker --nthreads 1``
processes on 127.0.0.1 (``tests/jobs/daskcluster.py``), the real daemon as a subprocess, the shared models,
a 32-frame cut of the shared clip.

The CSVs are compared with ``aud extract``'s byte for byte: both sides run the same code with one thread
in every pool (a Dask worker's pipeline, and each of extract's 2 workers on 2 cores), on the same
machine, over the same shard plan (the same ``shard_frames``, and 2 shards at a time on both sides: the
test waits until the daemon sees both Dask workers before it drops a video), so they compute the same
floats; there is no tolerance to choose.

Nothing is synchronised by sleeping: the daemon's socket events, the job store, Dask's own answers
(which worker processes which task) and, for the worker count the daemon refreshes every 2 s, a
bounded poll of ``aud status``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from distributed import Client

from tests.conftest import SHARED, require_shared
from tests.e2e.checks import wait_until
from tests.e2e.daemonproc import MODELS, DaemonProcess, Subscriber
from tests.jobs.daskcluster import Cluster
from tests.media import cut_clip, drop

pytestmark = pytest.mark.slow
CLIP = SHARED / "media" / "hamilton_clip.mp4"
FRAMES = 32
SHARD_FRAMES = 8  # 10 shards for 32 frames on 2 workers: time to act while the job runs
ENDS = ("job_done", "job_failed", "job_cancelled")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    require_shared("media/hamilton_clip.mp4", "models/openface3/retinaface.onnx",
                   "models/openface3/mtl.onnx", "models/openface3/star.onnx")
    return cut_clip(CLIP, tmp_path_factory.mktemp("clip") / "clip.mp4", 0, FRAMES)


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory) -> bytes:
    """The CSV ``aud extract`` writes for the clip with the daemon's shard settings (2 workers, CPU)."""
    out = tmp_path_factory.mktemp("extract") / "clip.csv"
    env = {**os.environ, "AUD_SHARD_FRAMES": str(SHARD_FRAMES)}
    proc = subprocess.run([sys.executable, "-m", "daemon", "extract", str(clip), "-o", str(out), "--models",
                           str(MODELS), "--workers", "2", "--provider", "cpu", "--no-plots"],
                          check=False, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    return out.read_bytes()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture
def dask_daemon(daemon):
    """``aud run --executor dask`` on a fresh inbox, outbox and state (``daemon``'s finalizer stops it)."""

    def make(cluster: Cluster, **settings) -> DaemonProcess:
        return daemon(executor="dask", dask_scheduler=cluster.address, shard_frames=SHARD_FRAMES,
                      plots=False, **settings).start()

    return make


def both_workers_ready(d: DaemonProcess) -> dict:
    """The daemon's status once it lists two Dask workers with their models loaded (its view of the
    cluster is refreshed every 2 s: no event announces it)."""
    def ready():
        status = d.status()
        workers = status["workers"]["workers"]
        return status if len(workers) == 2 and all(w["provider"] == "CPUExecutionProvider" for w in workers) else None
    return wait_until(ready, 90, "the daemon to list both Dask workers")


def shard_rows(d: DaemonProcess, job: int) -> list[tuple[int, str, int]]:
    """(index, state, attempts) of the job's shards, read from the daemon's job store (read-only)."""
    with sqlite3.connect(f"file:{d.state / 'jobs.sqlite3'}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute("SELECT idx, state, attempts FROM shards WHERE job_id = ? ORDER BY idx",
                            (job,)).fetchall()


def assert_one_result(d: DaemonProcess, sub: Subscriber, name: str, reference: bytes) -> dict:
    """The job ended done, once; its CSV is extract's, byte for byte; the input sits in .done."""
    done = sub.wait_for(lambda e: e["type"] in ENDS, 300)
    assert done["type"] == "job_done", (done, "".join(d.log[-40:]))
    stem = Path(name).stem
    assert Path(done["csv"]) == d.outbox / f"{stem}.csv"
    assert d.outbox_files() == [f"{stem}.csv", f"{stem}.json"]
    assert (d.outbox / f"{stem}.csv").read_bytes() == reference
    assert [e["type"] for e in sub.events].count("job_done") == 1
    assert (d.inbox / ".done" / name).is_file()
    return done


def test_a_dropped_clip_gives_extracts_csv_and_status_lists_the_workers(cluster, clip, reference, dask_daemon):
    d = dask_daemon(cluster)
    status = both_workers_ready(d)
    assert status["workers"]["executor"] == "dask" and status["workers"]["state"] == "ok"
    sub = d.subscribe()
    drop(clip, d.inbox, "a.mp4")
    done = assert_one_result(d, sub, "a.mp4", reference)
    assert done["frames"] == FRAMES
    assert all(state == "done" and attempts == 1 for _, state, attempts in shard_rows(d, done["job"]))
    workers = d.status()["workers"]["workers"]
    assert sorted(w["name"] for w in workers) == sorted(cluster_addresses(cluster))
    assert all(w["threads"] == 1 for w in workers)
    sidecar = json.loads((d.outbox / "a.json").read_text())
    assert sidecar["frames"] == FRAMES


def cluster_addresses(cluster: Cluster) -> list[str]:
    with Client(cluster.address, timeout=30) as client:
        return list(client.scheduler_info()["workers"])


def test_a_worker_killed_mid_shard_still_gives_extracts_csv_once(cluster, clip, reference, dask_daemon):
    d = dask_daemon(cluster)
    both_workers_ready(d)
    sub = d.subscribe()
    killed: list[tuple[str, int]] = []
    with Client(cluster.address, timeout=30) as client:
        def kill_a_busy_worker(event: dict) -> bool:
            """At a progress event: SIGKILL a worker process that Dask says is running a shard."""
            if event["type"] != "progress" or event["frames_done"] >= event["frames_total"]:
                return False
            busy = [w for w, keys in client.processing().items() if any("aud_shard" in k for k in keys)]
            if not busy:
                return False
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append((busy[0], pid))
            return True

        drop(clip, d.inbox, "b.mp4")
        sub.wait_for(kill_a_busy_worker, 300)
    assert_one_result(d, sub, "b.mp4", reference)
    assert killed and not any(e["type"] == "job_failed" for e in sub.events)


def test_the_scheduler_lost_mid_job_and_back_resumes_without_redoing_committed_shards(
        cluster, clip, reference, dask_daemon):
    d = dask_daemon(cluster)
    both_workers_ready(d)
    sub = d.subscribe()
    committed: list[int] = []

    def some_shards_committed(event: dict) -> bool:
        if event["type"] != "progress":
            return False
        rows = shard_rows(d, event["job"])
        done = [i for i, state, _ in rows if state == "done"]
        if done and len(done) < len(rows) - 2:  # at least 3 shards left: the job is mid-way
            committed.extend(done)
            return True
        return False

    drop(clip, d.inbox, "c.mp4")
    event = sub.wait_for(some_shards_committed, 300)
    cluster.stop_scheduler()  # its workers exit; their supervisors start them again, waiting for it
    lost = sub.wait_for(lambda e: e["type"] == "executor_unavailable", 120)
    assert cluster.address in lost["reason"]
    status = d.status()["workers"]
    assert status["state"] == "executor_unavailable" and cluster.address in status["reason"]
    cluster.start_scheduler()  # the same address
    sub.wait_for(lambda e: e["type"] == "executor_available", 180)
    assert_one_result(d, sub, "c.mp4", reference)
    rows = shard_rows(d, event["job"])
    assert all(state == "done" for _, state, _ in rows)
    redone = [(i, attempts) for i, _, attempts in rows if i in committed and attempts != 1]
    assert not redone, f"shards committed before the scheduler went away ran again: {redone}"
    # and the shards the lost scheduler had in flight (each dispatched before executor_unavailable is
    # published) ran again: nothing lost (all done, the CSV is the reference's). A lost scheduler costs
    # them no try (jobs/retry.py: an unavailable executor's runs are taken back), so no shard is counted
    # twice for it
    assert all(attempts == 1 for _, _, attempts in rows), rows
    assert d.status()["workers"]["state"] == "ok"


# --- a worker that does not see the video ----------------------------------------------------------


def hiding(directory: Path) -> tuple[str, ...]:
    """A command prefix that runs its command in its own mount namespace with an empty tmpfs over
    ``directory``: a worker on a machine that does not mount the volume the daemon's videos are on.
    Skips where Linux mount namespaces are not available to this user."""
    wrapper = ("unshare", "--map-root-user", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs aud-hidden "$0" && exec "$@"', str(directory))
    if sys.platform != "linux" or shutil.which("unshare") is None:
        pytest.skip("hiding the inbox from a worker needs Linux mount namespaces (unshare)")
    (directory / "inbox").mkdir(parents=True, exist_ok=True)
    probe = subprocess.run([*wrapper, "test", "!", "-e", str(directory / "inbox")], check=False,
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot run a worker in its own mount namespace here: {probe.stderr.strip()}")
    return wrapper


def test_a_worker_that_sees_no_such_path_fails_the_job_naming_the_path(clip, dask_daemon, tmp_path):
    root = Path(tempfile.mkdtemp(prefix="aud-e2e-", dir="/tmp"))  # the daemon's: hidden from the worker
    (tmp_path / "cluster").mkdir()
    blind = Cluster(tmp_path / "cluster", workers=1, wrapper=hiding(root))
    try:
        mount = "/nonexistent/aud-lab-mount"
        d = dask_daemon(blind, path_map=json.dumps({str(root): mount}), root=root)
        sub = d.subscribe()
        drop(clip, d.inbox, "d.mp4")
        failed = sub.wait_for(lambda e: e["type"] in ENDS, 120)
        assert failed["type"] == "job_failed", failed
        reason = failed["reason"]
        assert f"{mount}/inbox/d.mp4" in reason and str(root / "inbox" / "d.mp4") in reason, reason
        assert "cannot open the video" in reason and "tcp://127.0.0.1:" in reason, reason
        assert (d.inbox / ".failed" / "d.mp4").is_file()
        # not retried (a missing mount is fixed by a person): each shard dispatched once at most
        assert max(attempts for _, _, attempts in shard_rows(d, failed["job"])) == 1
        assert not any(p.suffix == ".csv" for p in d.outbox.rglob("*"))
    finally:
        blind.stop()
