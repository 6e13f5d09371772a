"""The daemon: inbox -> durable queue -> process pool -> outbox, with a progress socket.

``Daemon.run()`` wires the pieces together on one asyncio loop:

* the ``InboxWatcher`` hands settled files to ``accept`` (fingerprint, job store, ``job_queued``);
* ``_schedule`` starts queued jobs (probe, plan shards, ``job_started``) and fills the worker slots
  with shards, round-robin across running jobs, so several videos share the workers fairly;
* each shard runs through the ``Dispatcher`` and is committed to the store once its results are on
  disk; when a job's last shard is done, ``_finish`` assembles the CSV into the outbox and moves the
  input to ``.done``; a failed job's input goes to ``.failed`` with ``<name>.error.txt``;
* the ``ProgressServer`` publishes events and answers commands.

Every state change is committed before it is acted on, so a daemon killed at any instant resumes
where the store says it was.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings
from ..core.extract import build_sidecar, check_setup, make_pool, package_versions
from ..core.results import FrameResults
from ..core.video import VideoError, VideoInfo, can_open, probe
from ..core.worker import ShardTask, plan_shards, run_shard, warm_up
from . import files, protocol as msg
from .dispatcher import Dispatcher, WorkerCrashed
from .jobstore import Job, JobStore
from .server import ProgressServer
from .watcher import InboxWatcher

log = logging.getLogger("aud.daemon")

# the outbox cannot take the CSV for a reason that is the filesystem's, not the job's: wait and retry
OUTBOX_WAIT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class AlreadyRunning(RuntimeError):
    """Another daemon holds this state directory."""


@dataclass
class Running:
    """In-memory bookkeeping of a running job (the store holds the durable truth)."""

    job: Job
    path: Path
    info: VideoInfo
    pending: list[int]  # shard indexes not yet dispatched
    ranges: dict[int, tuple[int, int]]
    frames_done: int
    identity: tuple[int, int, int, int]  # of the input when its content was checked (files.identity)
    redo: set[int] = field(default_factory=set)  # done in the store, but the result file is gone
    in_flight: set[int] = field(default_factory=set)
    crashes: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    frames_this_run: int = 0
    waiting: str | None = None  # why the finished job's CSV cannot be written yet

    @property
    def fps(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.frames_this_run / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (None before the first shard of this run ends)."""
        fps = self.fps
        return round((self.info.frames - self.frames_done) / fps, 1) if fps > 0 else None


class StateLock:
    """One daemon per state directory: an exclusive ``flock`` on ``<state>/aud.lock``."""

    def __init__(self, state: Path):
        self.path = state / "aud.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"another aud daemon (pid {holder}) is already running on the state directory "
                f"{self.path.parent}; one daemon per state directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Daemon:
    def __init__(self, settings: Settings, make_executor=None):
        self.settings = settings
        self._make_executor = make_executor or self._process_pool
        self.running: dict[int, Running] = {}
        self.paused = False
        self.providers: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._rr = 0  # round-robin cursor over running jobs
        self._sources: dict[int, Path] = {}  # job -> where its input is now, when not job.source
        self._writing: set[Path] = set()  # CSVs being written now (two jobs never share a name)
        self._stop_reason = "shutdown"

    # --- life cycle ------------------------------------------------------------------------------

    def _options(self):
        return self.settings.pipeline_options()

    def _process_pool(self) -> Executor:
        return make_pool(self._options(), self.settings.workers)

    async def run(self) -> int:
        s = self.settings
        s.ensure_dirs()
        lock = StateLock(s.state)
        lock.acquire()
        try:
            self.models = check_setup(self._options())
            self.store = JobStore(s.database_path)
            return await self._serve()
        finally:
            lock.release()

    async def _serve(self) -> int:
        s = self.settings
        for job in self.store.recover():
            log.info("resuming job %s (%s) after an interrupted run", job.id, job.name)
        self.server = ProgressServer(s.socket_path, self.handle)
        await self.server.start()
        self.dispatcher = Dispatcher(self._make_executor, s.workers, self._worker_restarted)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig.name)
        # load every worker's sessions now, not when the first video arrives
        try:
            warmed = await asyncio.gather(*(self.dispatcher.call(warm_up) for _ in range(s.workers)))
        except BaseException:  # e.g. a model with the wrong signature: say so and stop cleanly
            await self.server.close("the workers could not load the models")
            self.dispatcher.shutdown(kill=True)
            raise
        self.providers = warmed[0]
        log.warning("ready: %d workers on %s, watching %s, socket %s", s.workers,
                    self.providers.get("detector"), s.inbox, s.socket_path)
        self.watcher = InboxWatcher(
            s.inbox, self.accept_settled, extensions=s.extensions, settle_seconds=s.settle_seconds,
            rescan_seconds=s.rescan_seconds, follow_symlinks=s.follow_symlinks, can_open=self._takeable)
        watch = asyncio.create_task(self.watcher.run(), name="watcher")
        try:
            await self._schedule()
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            finished = await self._drain()
            await self.server.close(self._stop_reason)
            self.dispatcher.shutdown(kill=not finished)
            self.store.close()
        return 0

    def stop(self, reason: str = "stop requested") -> None:
        log.info("stopping: %s", reason)
        self._stop_reason = f"{reason}: finishing running shards, then exiting"
        self._stopping.set()
        self._wake.set()

    async def _drain(self) -> bool:
        """Let running shards finish (each is committed as it ends), within the stop timeout.
        False when some were still running: they stay recorded as running and resume on restart."""
        if not self._tasks:
            return True
        _, still = await asyncio.wait(set(self._tasks), timeout=self.settings.stop_timeout_seconds)
        for task in still:
            task.cancel()
        return not still

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _worker_restarted(self, reason: str) -> None:
        self.server.publish(msg.WorkerRestarted(reason=reason))

    # --- intake ----------------------------------------------------------------------------------

    def _takeable(self, path: Path) -> bool:
        """Complete enough to take: OpenCV opens it, or it has been still for so long that it never
        will (a bad file: taken so that it fails with a reason instead of waiting forever)."""
        if can_open(path):
            return True
        try:
            still_for = time.time() - path.stat().st_mtime
        except OSError:
            return False
        return still_for >= self.settings.unopenable_grace_seconds

    async def accept_settled(self, path: Path) -> None:
        await self.accept(path, explicit=False)

    async def accept(self, path: Path, explicit: bool) -> Job | None:
        """A complete file: one job per content; a re-dropped failed video is queued again."""
        path = Path(path)
        try:
            fp = await asyncio.to_thread(files.fingerprint, path)
        except OSError as exc:
            if explicit:
                raise
            log.warning("cannot read %s: %s", path, exc)
            return await self._reject_unreadable(path, exc)
        subdir = files.relative_subdir(path, self.settings.inbox)
        job, created = self.store.add_job(fp, path, subdir, path.name)
        if created:
            self.server.publish(msg.JobQueued(job=job.id, file=job.name))
        elif job.state in ("failed", "cancelled"):  # failed inputs leave the inbox: this is a re-drop
            job = self.store.requeue(job.id)
            self._sources[job.id] = path
            self.server.publish(msg.JobQueued(job=job.id, file=job.name))
        elif job.state == "done" or (job.state in ("queued", "running") and Path(job.source) != path):
            self._set_aside_duplicate(path, job)
        self._wake.set()
        return job

    async def _reject_unreadable(self, path: Path, exc: OSError) -> None:
        """A file we cannot even read (permissions): keep it in .failed with the reason beside it."""
        inbox = self.settings.inbox
        subdir = files.relative_subdir(path, inbox)
        reason = f"the file cannot be read ({exc.strerror or exc}); check its permissions"
        try:
            files.write_error(inbox, subdir, path.name, reason, 0)
            self._move_input(path, files.FAILED_DIR, subdir)
        except OSError as move_exc:
            log.error("%s cannot be read (%s) and could not be set aside: %s", path, reason, move_exc)
        return None

    def _set_aside_duplicate(self, path: Path, job: Job) -> None:
        if not files.is_inside(path, self.settings.inbox) or self.settings.after_done != "move":
            return
        if not path.exists() or os.path.abspath(path) == os.path.abspath(job.source):
            return
        target = self._move_input(path, files.DONE_DIR, files.relative_subdir(path, self.settings.inbox))
        log.info("%s has the same content as job %s (%s); moved to %s", path.name, job.id, job.name, target)

    # --- scheduling ------------------------------------------------------------------------------

    async def _schedule(self) -> None:
        """Start queued jobs and keep every worker slot busy until asked to stop."""
        while not self._stopping.is_set():
            self._wake.clear()
            if not self.paused:
                await self._start_queued()
                self._fill_slots()
            await self._wake.wait()

    async def _start_queued(self) -> None:
        # plan as many queued jobs as it takes to fill the workers, oldest first
        while sum(len(r.pending) for r in self.running.values()) < self.dispatcher.slots.free:
            queued = self.store.jobs(["queued"])
            if not queued or self._stopping.is_set():
                return
            await self._start(queued[0])

    async def _start(self, job: Job) -> None:
        path = self._sources.get(job.id, Path(job.source))
        job = self.store.start(job.id)
        self.server.publish(msg.JobStarted(job=job.id, file=job.name, frames_total=job.frames_total))
        try:
            identity = files.identity(path)
            content = await asyncio.to_thread(files.fingerprint, path)
            info = await asyncio.to_thread(probe, path) if content == job.fingerprint else None
        except FileNotFoundError:
            return self._fail(job, path, f"{path} was moved or deleted before it was processed")
        except VideoError as exc:
            return self._fail(job, path, str(exc))
        except OSError as exc:
            return self._fail(job, path, f"{path}: cannot be read: {exc}")
        if info is None:  # the file at this path now holds other content: that is another job
            return self._fail(job, path, f"{path} was replaced by different content before it was "
                                         f"processed; the new content is a job of its own", set_aside=False)
        ranges = plan_shards(info.frames, self.settings.shard_frames, self.settings.workers)
        info_json = json.dumps({**info.properties(), "fingerprint": job.fingerprint})
        if job.frames_total is not None and job.frames_total != info.frames:
            return self._fail(job, path, f"the video changed while it was being processed "
                                         f"({job.frames_total} frames before, {info.frames} now)")
        existing = self.store.shards(job.id)
        if not existing:
            self.store.set_plan(job.id, info.frames, info_json, ranges)
            existing = self.store.shards(job.id)
        shard_dir = self._shard_dir(job.id)
        shard_dir.mkdir(parents=True, exist_ok=True)
        done = [s for s in existing if s.state == "done" and s.result_path and Path(s.result_path).exists()]
        pending = [s.index for s in existing if s not in done]
        self.running[job.id] = Running(
            job=self.store.get(job.id), path=path, info=info, pending=pending,
            ranges={s.index: (s.start, s.stop) for s in existing},
            frames_done=sum(s.stop - s.start for s in done), identity=identity,
            redo={s.index for s in existing if s.state == "done" and s not in done})
        if not pending:
            self._spawn(self._finish(job.id))

    def _shard_dir(self, job_id: int) -> Path:
        return self.settings.state / "jobs" / str(job_id)

    def _fill_slots(self) -> None:
        free = self.dispatcher.workers - sum(len(r.in_flight) for r in self.running.values())
        while free > 0:
            candidates = [r for r in self.running.values() if r.pending]
            if not candidates:
                return
            run = candidates[self._rr % len(candidates)]
            self._rr += 1
            index = run.pending.pop(0)
            run.in_flight.add(index)
            self._spawn(self._run_shard(run, index))
            free -= 1

    async def _run_shard(self, run: Running, index: int) -> None:
        job_id = run.job.id
        start, stop = run.ranges[index]
        out = self._shard_dir(job_id) / f"shard-{index:06d}.npz"
        task = ShardTask.of(run.path, run.info, start, stop, out)
        try:
            if index not in run.redo:
                self.store.mark_dispatched(job_id, index)
            done = await self.dispatcher.call(run_shard, task)
        except WorkerCrashed as exc:
            return self._shard_crashed(run, index, str(exc))
        except VideoError as exc:
            return self._fail_running(run, str(exc))
        except Exception as exc:  # anything else a worker raised: the job fails with the reason
            log.exception("shard %s of job %s failed", index, job_id)
            return self._fail_running(run, f"{exc.__class__.__name__}: {exc}")
        finally:
            run.in_flight.discard(index)
            self._wake.set()
        if self.running.get(job_id) is not run:
            return  # cancelled or failed meanwhile
        self.store.shard_done(job_id, index, str(out))
        run.frames_done += done.frames
        run.frames_this_run += done.frames
        self._publish_progress(run)
        if not run.pending and not run.in_flight:
            await self._finish(job_id)

    def _shard_crashed(self, run: Running, index: int, reason: str) -> None:
        run.crashes[index] = run.crashes.get(index, 0) + 1
        if run.crashes[index] > self.settings.shard_retries:
            self._fail_running(run, f"a worker process died {run.crashes[index]} times on frames "
                                    f"{run.ranges[index][0] + 1}-{run.ranges[index][1]} ({reason})")
        elif self.running.get(run.job.id) is run:
            log.warning("job %s shard %s: %s; retrying", run.job.id, index, reason)
            run.pending.insert(0, index)

    def _publish_progress(self, run: Running) -> None:
        self.server.publish(msg.JobProgress(job=run.job.id, file=run.job.name, frames_done=run.frames_done,
                                            frames_total=run.info.frames, fps=round(run.fps, 3),
                                            eta_s=run.eta_s))

    # --- endings ---------------------------------------------------------------------------------

    async def _finish(self, job_id: int) -> None:
        run = self.running.get(job_id)
        if run is None:
            return
        job = run.job
        try:
            changed = files.identity(run.path) != run.identity
        except FileNotFoundError:
            changed = False  # its frames were all read before it went; the result stands
        if changed:
            return self._fail_running(run, f"{run.path} changed while it was being processed; the result "
                                           f"was discarded (the new content is a job of its own)", False)
        shard_paths = [Path(s.result_path) for s in self.store.shards(job_id)]
        csv_path = files.outbox_csv(self.settings.outbox, job.subdir, job.name, job.fingerprint, self._writing)
        wall = time.monotonic() - run.started

        def sidecar(results: FrameResults) -> dict:
            side = build_sidecar(run.path, run.info.properties(), self._options(), self.models,
                                 self.providers, results, wall)
            side.update(fingerprint=job.fingerprint, job=job.id, source=job.source)
            return side

        self._writing.add(csv_path)
        try:
            results = await asyncio.to_thread(_assemble, shard_paths, csv_path, sidecar, run.info.frames)
        except OSError as exc:
            files.discard_partial(csv_path, job.fingerprint)
            reason = f"cannot write the CSV to {csv_path.parent}: {exc.strerror or exc}"
            if exc.errno in OUTBOX_WAIT_ERRNOS:
                return self._wait_for_outbox(run, reason)
            return self._fail_running(run, reason)
        finally:
            self._writing.discard(csv_path)
        self.store.finish(job_id, str(csv_path))
        del self.running[job_id]
        self.server.publish(msg.JobDone(job=job_id, file=job.name, csv=str(csv_path), frames=len(results),
                                        fps=round(run.fps, 3)))
        self._after_done(run)
        shutil.rmtree(self._shard_dir(job_id), ignore_errors=True)
        self._wake.set()

    def _wait_for_outbox(self, run: Running, reason: str) -> None:
        """Keep the finished job (its results and its input) and try the CSV again after a while."""
        if run.waiting != reason:
            log.warning("job %s (%s): %s; retrying every %g s", run.job.id, run.job.name, reason,
                        self.settings.rescan_seconds)
        run.waiting = reason

        def retry() -> None:
            if self.running.get(run.job.id) is run and not self._stopping.is_set():
                self._spawn(self._finish(run.job.id))

        asyncio.get_running_loop().call_later(self.settings.rescan_seconds, retry)

    def _after_done(self, run: Running) -> None:
        if self.settings.after_done == "move":
            self._move_input(run.path, files.DONE_DIR, run.job.subdir)

    def _move_input(self, path: Path, folder: str, subdir: str) -> Path | None:
        """Move an input out of the inbox into ``folder``; the watcher forgets it, so a file put back
        there later (same size and mtime, say) is a new arrival. Inputs outside the inbox stay."""
        if not files.is_inside(path, self.settings.inbox):
            return None
        target = files.move_input(path, self.settings.inbox, folder, subdir)
        self.watcher.forget(path)
        return target

    def _fail_running(self, run: Running, reason: str, set_aside: bool = True) -> None:
        if self.running.get(run.job.id) is not run:
            return
        del self.running[run.job.id]
        self._fail(run.job, run.path, reason, set_aside)

    def _fail(self, job: Job, path: Path, reason: str, set_aside: bool = True) -> None:
        """Record the failure first, then keep the input in .failed with the reason beside it
        (``set_aside`` False: the file at ``path`` is not this job's content any more; leave it)."""
        self.store.fail(job.id, reason)
        self.running.pop(job.id, None)
        if set_aside:
            self._set_aside_failed(job, path, reason)
        shutil.rmtree(self._shard_dir(job.id), ignore_errors=True)
        self.server.publish(msg.JobFailed(job=job.id, file=job.name, reason=reason))
        self._wake.set()

    def _set_aside_failed(self, job: Job, path: Path, reason: str) -> None:
        """The input goes to .failed with ``<name>.error.txt``; an input that is gone leaves nothing."""
        inbox = self.settings.inbox
        try:
            if path.exists():
                files.write_error(inbox, job.subdir, job.name, reason, job.id)
                self._move_input(path, files.FAILED_DIR, job.subdir)
        except OSError as exc:
            log.error("job %s failed (%s) and its input could not be set aside: %s", job.id, reason, exc)

    # --- commands --------------------------------------------------------------------------------

    async def handle(self, command: msg.Command) -> dict | None:
        if isinstance(command, msg.Status):
            return self.status()
        if isinstance(command, msg.Submit):
            return await self._submit(Path(command.path))
        if isinstance(command, msg.Cancel):
            return self._cancel(command.job)
        if isinstance(command, msg.Pause):
            self.paused = True
            return {"paused": True}
        if isinstance(command, msg.Resume):
            self.paused = False
            self._wake.set()
            return {"paused": False}
        raise ValueError(f"unsupported command {type(command).__name__}")

    async def _submit(self, path: Path) -> dict:
        path = path.expanduser()
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        job = await self.accept(path.resolve(), explicit=True)
        return {"job": job.id, "state": job.state, "file": job.name}

    def _cancel(self, job_id: int) -> dict:
        job = self.store.get(job_id)
        if job is None:
            raise ValueError(f"no job {job_id}")
        job = self.store.cancel(job_id)
        run = self.running.pop(job_id, None)
        path = run.path if run else self._sources.get(job_id, Path(job.source))
        self._set_aside_failed(job, path, "cancelled by the user")
        shutil.rmtree(self._shard_dir(job_id), ignore_errors=True)
        self.server.publish(msg.JobCancelled(job=job_id, file=job.name))
        return {"job": job_id, "state": job.state}

    def status(self) -> dict:
        return {
            "paused": self.paused,
            "queued": [{"job": j.id, "file": j.name} for j in self.store.jobs(["queued"])],
            "running": [{"job": r.job.id, "file": r.job.name, "frames_done": r.frames_done,
                         "frames_total": r.info.frames, "fps": round(r.fps, 3),
                         "eta_s": r.eta_s,
                         "waiting": r.waiting}
                        for r in self.running.values()],
            "recent_failures": [{"job": j.id, "file": j.name, "reason": j.reason}
                                for j in self.store.recent_failures()],
            "workers": {"count": self.settings.workers, "provider": self.providers.get("landmarks")
                        or self.providers.get("detector", "?"), "providers": sorted(set(self.providers.values())),
                        "restarts": self.dispatcher.restarts},
            "counts": self.store.counts(),
            "versions": package_versions(),
        }


def _assemble(shard_paths, csv_path, sidecar, frames) -> FrameResults:
    from ..core.extract import assemble

    return assemble(shard_paths, csv_path, sidecar, frames)
