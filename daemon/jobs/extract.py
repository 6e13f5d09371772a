"""``aud extract``: the job runner on a throw-away job store, for videos named on the command line.

One warm pool serves every video; each gets its CSV (beside the video, at ``-o FILE`` for one video,
or in ``-o DIR``). A video that fails is reported with its reason and the others go on.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import protocol as msg
from ..config import Settings
from ..core.models import load_model_set, locate
from ..core.pipeline import roles_for
from ..core.providers import choose
from ..core.video import VideoError, open_capture, quiet_decoder_logs
from . import inputs
from .executor import Executor
from .factory import make_executor
from .plan import TimeSelection
from .runner import Runner
from .spec import runner_config
from .store import Job, JobStore, StoreError

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv")


@dataclass(frozen=True)
class Outcome:
    video: Path
    csv: Path | None
    frames: int = 0
    fps: float = 0.0
    error: str | None = None


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    wall_seconds: float = 0.0
    first_frame_seconds: float = 0.0
    providers: dict[str, str] = field(default_factory=dict)


class ExtractDestination:
    """CSVs at the paths chosen up front; inputs stay where they are."""

    def __init__(self) -> None:
        self.paths: dict[int, Path] = {}
        self.errors: dict[int, str] = {}

    def csv_path(self, job: Job) -> Path:
        path = self.paths[job.id]
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def input_after(self, job: Job) -> Path:
        return Path(job.source)

    def done(self, job: Job, csv: Path) -> None:
        pass

    def failed(self, job: Job, reason: str, set_aside: bool) -> None:
        self.errors[job.id] = reason


def expand(paths: list[Path]) -> list[Path]:
    """Videos named, or found (not recursively) in folders named, in order."""
    videos: list[Path] = []
    for path in paths:
        if path.is_dir():
            videos += sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        else:
            videos.append(path)
    return videos


def csv_paths(videos: list[Path], output: Path | None) -> list[Path]:
    """Beside each video; ``-o FILE.csv`` for one video; ``-o DIR`` for any number."""
    if output is None:
        return [v.with_suffix(".csv") for v in videos]
    if output.suffix.lower() == ".csv" and not output.is_dir():
        if len(videos) != 1:
            raise ValueError(f"-o {output}: one CSV file for {len(videos)} videos; give a folder instead")
        return [output]
    return [output / f"{v.stem}.csv" for v in videos]


def preflight(videos: list[Path], settings: Settings) -> dict[int, str]:
    """The cheap checks, before any worker starts: the model files are there (ModelError) and so is the
    provider (ProviderError). Returns the videos (by index) that do not open, with the reason: they are
    reported as failed and the others still run."""
    unopenable = {}
    for i, video in enumerate(videos):
        try:
            open_capture(video).release()
        except VideoError as exc:
            unopenable[i] = str(exc)
    locate(settings.models, roles_for(settings.au45))
    choose(settings.provider, settings.coreml_cache_dir)
    return unopenable


async def extract(videos: list[Path], output: Path | None, settings: Settings,
                  selection: TimeSelection | None = None,
                  progress: Callable[[msg.Event], None] = lambda event: None,
                  make: Callable[..., Executor] = make_executor,
                  open_store: Callable[[Path], JobStore] = JobStore) -> Report:
    """Every video through the runner; the workers start loading their models first, and the models
    are hashed and the videos fingerprinted while they do. Returns once every video's job has ended."""
    began = time.perf_counter()
    quiet_decoder_logs()
    targets = csv_paths(videos, output)
    unopenable = preflight(videos, settings)
    report = Report()
    if len(unopenable) == len(videos):
        report.outcomes = [Outcome(v, None, error=unopenable[i]) for i, v in enumerate(videos)]
        return report
    every, videos = videos, [v for i, v in enumerate(videos) if i not in unopenable]
    targets = [t for i, t in enumerate(targets) if i not in unopenable]
    executor = make(settings)
    try:
        warm = asyncio.create_task(executor.start())
        models = await asyncio.to_thread(load_model_set, settings.models, roles_for(settings.au45), False)
        contents = await asyncio.to_thread(lambda: [_hashed(v) for v in videos])
        report.providers = await warm
        report.first_frame_seconds = time.perf_counter() - began
        config = runner_config(settings, models, report.providers, selection)
        config.sidecar["first_frame_seconds"] = round(report.first_frame_seconds, 3)  # workers warm, inputs hashed
        with tempfile.TemporaryDirectory(prefix="aud-extract-") as tmp, open_store(Path(tmp) / "jobs.sqlite3") as store:
            destination = ExtractDestination()
            jobs = []
            for video, (content, identity), target in zip(videos, contents, targets):
                job, _ = store.add_job(content, video.resolve(), "", video.name, config.key, force=True,
                                       identity=identity)
                destination.paths[job.id] = target
                jobs.append(job)
            finished: dict[int, msg.JobDone] = {}
            failed: dict[int, str] = {}

            def publish(event: msg.Event) -> None:
                if isinstance(event, msg.JobDone):
                    finished[event.job] = event
                elif isinstance(event, msg.JobFailed):
                    failed[event.job] = event.reason
                progress(event)

            runner = Runner(store, executor, config, destination, publish=publish)
            try:
                await runner.run(until_idle=True)
            except StoreError as exc:  # the throw-away store cannot record even a failure: every job ends
                for job in jobs:
                    failed.setdefault(job.id, str(exc))
            finally:
                runner.close()
            for video, job in zip(videos, jobs):
                done = finished.get(job.id)  # published once the store has it done
                if done is not None:
                    report.outcomes.append(Outcome(video, Path(done.csv), done.frames, done.fps))
                else:
                    reason = destination.errors.get(job.id) or failed.get(job.id) or _reason(store, job.id)
                    report.outcomes.append(Outcome(video, None, error=reason))
    finally:
        await executor.close()
    ran = iter(report.outcomes)  # in the order given, the videos that did not open among them
    report.outcomes = [Outcome(v, None, error=unopenable[i]) if i in unopenable else next(ran)
                       for i, v in enumerate(every)]
    report.wall_seconds = time.perf_counter() - began
    return report


def _hashed(video: Path) -> tuple[str, str]:
    """The video's content fingerprint and its identity as it was before it was read (so a file that
    changes while it is hashed is hashed again at its job's start): the one hash of an unchanged file."""
    identity = inputs.identity_text(inputs.identity(video))
    return inputs.fingerprint(video), identity


def _reason(store: JobStore, job_id: int) -> str:
    """A job's failure reason as the store has it."""
    try:
        ended = store.get(job_id)
    except StoreError as exc:
        return str(exc)
    return (ended.reason if ended else None) or "not run"
