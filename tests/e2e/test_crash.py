"""The daemon's crash guarantees (issue 10's done-when): after ``kill -9`` of the daemon in the middle
of a job, none of its processes — the worker pool included — outlives it by more than 10 s, and a
restarted daemon finishes the job once, without computing again the shards committed before the kill.

Only the daemon is killed (``DaemonProcess.kill_hard`` would also kill the workers, hiding a leak):
its descendants (two workers and multiprocessing's resource tracker) are collected with psutil before
the kill and must all exit by themselves; a shard is in flight at the kill. Measured here: all gone
1.9 s after the kill (``pytest -s`` prints it). What this bounds is the outcome, however the workers
learn of it: with this clip's short shards even a worker without its lifeline would end within the 10 s
(its next message to the dead parent fails; tried: 4.7 s), so the lifeline itself — a busy worker exits
at once — is held by ``tests/jobs/test_local.py::test_busy_workers_exit_when_their_parent_is_killed``.
"""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from tests.conftest import SHARED, require_shared
from tests.e2e import observe
from tests.media import cut_clip, drop

pytestmark = pytest.mark.slow

CLIP = SHARED / "media" / "hamilton_clip.mp4"
FRAMES = 40  # 11 shards of 10 frames down to 1 with 2 workers, so the kill lands with most still to do
EXIT_SECONDS = 10.0  # the bound: no process of the daemon alive 10 s after the kill


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    require_shared("media/hamilton_clip.mp4", "models/openface3/retinaface.onnx", "models/openface3/mtl.onnx",
                   "models/openface3/star.onnx")
    return cut_clip(CLIP, tmp_path_factory.mktemp("crash") / "crash.mp4", 100, FRAMES)


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running. A zombie has exited (only its exit status waits for the process that
    adopted it to collect it), so it does not count."""
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:
            out.append(str(proc.pid))
    return out


def test_sigkill_leaves_no_process_alive_and_the_restart_finishes_the_job_once(daemon, clip):
    d = daemon(workers=2).start()
    sub = d.subscribe()
    drop(clip, d.inbox, "crash.mp4")
    # a committed shard is announced by a progress event: kill at the first one that follows a commit
    sub.wait_for(lambda e: e["type"] == "progress" and observe.committed(d.state), 300)

    family = psutil.Process(d.proc.pid).children(recursive=True)
    names = describe(family)
    assert len(running(family)) >= 2, f"expected the two workers among {names}"
    busy = [s for s in observe.shards(d.state) if s.attempts and not s.done]
    assert busy, "no shard in flight at the kill: nothing would test that busy workers go too"
    d.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    d.proc.wait(30)
    _, alive = psutil.wait_procs(family, timeout=EXIT_SECONDS)
    left = running(alive)
    print(f"{len(family)} descendants of the daemon: {names}; waited "
          f"{time.monotonic() - killed:.2f} s after the kill, {len(left)} still running")
    assert not left, f"still running {EXIT_SECONDS} s after the daemon's SIGKILL: {describe(left)}"

    before = {s.index: s for s in observe.committed(d.state)}
    (job,) = observe.jobs(d.state)
    shards = observe.shards(d.state)
    assert job.state == "running" and 0 < len(before) < len(shards), (job, shards)
    assert not list(d.outbox.rglob("*.csv"))
    committed_frames = sum(s.stop - s.start for s in before.values())

    again = daemon(root=d.root, workers=2).start()
    sub = again.subscribe()
    done = sub.wait_for(lambda e: e["type"] in ("job_done", "job_failed"), 600)
    assert done["type"] == "job_done" and done["job"] == job.id and done["frames"] == FRAMES, done
    again.stop()
    events = observe.all_events(sub)
    assert [e["type"] for e in events].count("job_done") == 1
    assert not [e for e in events if e["type"] == "job_started" and e["job"] != job.id]
    # the restart resumed: its first progress already counts the frames committed before the kill, and
    # no committed shard was handed to a worker again
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and progress[0]["frames_done"] >= committed_frames, (progress[:1], committed_frames)
    after = {s.index: s for s in observe.shards(again.state)}
    assert all(after[i].attempts == s.attempts for i, s in before.items()), (before, after)
    assert all(s.done for s in after.values())
    (finished,) = observe.jobs(again.state)
    assert finished.state == "done" and finished.csv_path == str(again.outbox / "crash.csv")
    assert again.outbox_files() == ["crash.csv", "crash.json", "crash.png"]
    assert len((again.outbox / "crash.csv").read_text().splitlines()) == FRAMES + 1
