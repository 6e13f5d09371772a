"""One video, start to finish, on a process pool: probe, shard, run, assemble the CSV.

This is ``aud extract``. The daemon uses the same pieces (``plan_shards``, ``run_shard``, ``assemble``)
from its asyncio shell, with a durable job store in between.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .csvfile import write_outputs
from .models import ModelSet, load_model_set, locate
from .pipeline import PipelineOptions, roles_for
from .providers import choose
from .results import FrameResults
from .video import VideoInfo, open_capture, probe
from .worker import ShardDone, ShardTask, init_worker, plan_shards, run_shard, warm_up

PACKAGES = ("au-daemon", "onnxruntime", "opencv-python", "opencv-python-headless", "numpy")


@dataclass(frozen=True)
class ExtractSummary:
    csv: Path
    frames: int
    faces: int
    wall_seconds: float
    fps: float
    first_frame_seconds: float  # pool start and model load
    providers: dict[str, str]


def make_pool(options: PipelineOptions, workers: int) -> ProcessPoolExecutor:
    """Spawned workers (safe with ONNX Runtime's threads), each loading its sessions once."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=init_worker, initargs=(options,))


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def shard_tasks(info: VideoInfo, ranges: list[tuple[int, int]], out_dir: Path) -> list[ShardTask]:
    return [
        ShardTask.of(info.path, info, start, stop, out_dir / f"shard-{start:09d}-{stop:09d}.npz")
        for start, stop in ranges
    ]


def preflight(video: Path, options: PipelineOptions) -> None:
    """The cheap checks, before any worker starts: the video opens (VideoError), the model files are
    there (ModelError) and so is the provider (ProviderError). The workers check the models'
    signatures when they load them (``warm_up`` reports it)."""
    open_capture(video).release()
    locate(options.models_dir, roles_for(options.au45))
    choose(options.provider, options.cache_dir)


def check_setup(options: PipelineOptions) -> ModelSet:
    """The daemon's start: the provider is there and the model files are, hashed (before the pool)."""
    choose(options.provider, options.cache_dir)
    return hash_models(options)


def hash_models(options: PipelineOptions) -> ModelSet:
    """The model files with their sha256 (for the sidecar), checked against the manifest's pins."""
    return load_model_set(options.models_dir, roles_for(options.au45), signatures=False)


def build_sidecar(video: Path, info: dict, options: PipelineOptions, models: ModelSet,
                  providers: dict[str, str], results: FrameResults, wall_seconds: float) -> dict:
    return {
        "video": str(video),
        "video_properties": info,
        "frames": len(results),
        "frames_with_face": int(results.success.sum()),
        "models": {r: {"path": str(f.path), "sha256": f.sha256} for r, f in models.files.items()},
        "providers": providers,
        "options": {"au45": options.au45, "detect_max_side": options.detect_max_side,
                    "batch_size": options.batch_size},
        "packages": package_versions(),
        "wall_seconds": round(wall_seconds, 3),
        "frames_per_second": round(len(results) / wall_seconds, 3) if wall_seconds > 0 else None,
        "note": "AU, emotion, gaze and landmark values are what the given models compute; "
                "they are estimates only if the models are trained OpenFace 3.0 weights.",
    }


def assemble(shard_paths: list[Path], csv_path: Path, sidecar: Callable[[FrameResults], dict],
             expected_frames: int) -> FrameResults:
    """Concatenate shard results in frame order, check nothing is missing, write CSV and sidecar."""
    results = FrameResults.concat([FrameResults.load(p) for p in shard_paths])
    frames = results.frame.tolist()
    if frames != list(range(expected_frames)):
        raise RuntimeError(f"assembled {len(frames)} frames, expected {expected_frames} in order")
    write_outputs(csv_path, results, sidecar(results))
    return results


def extract(video: Path, csv_path: Path, options: PipelineOptions, *, workers: int = 1,
            shard_frames: int = 48, progress: Callable[[int, int], None] | None = None,
            executor: Executor | None = None) -> ExtractSummary:
    """Run one video through the pipeline on ``workers`` processes and write ``csv_path``.

    The workers start loading their models first; the video is probed and the models hashed while
    they do. With workers that load each model once, the time to the first frame of a 1920x1080 video
    on 2 workers went from 1.50 to 0.79 s (medians of 3, ``bench/compare.py 8534382 VIDEO``)."""
    began = time.perf_counter()
    preflight(video, options)
    own_pool = executor is None
    pool = executor or make_pool(options, workers)
    try:
        ready = pool.submit(warm_up)  # starts the workers
        info = probe(video)
        models = hash_models(options)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        ranges = plan_shards(info.frames, shard_frames, workers)
        providers = ready.result()
        first_frame = time.perf_counter() - began
        with tempfile.TemporaryDirectory(prefix="aud-extract-") as tmp:
            tasks = shard_tasks(info, ranges, Path(tmp))
            done_frames = 0
            futures = [pool.submit(run_shard, t) for t in tasks]
            for future in as_completed(futures):
                done: ShardDone = future.result()
                done_frames += done.frames
                if progress:
                    progress(done_frames, info.frames)
            wall = time.perf_counter() - began
            results = assemble(
                [Path(t.out_path) for t in tasks], csv_path,
                lambda r: {**build_sidecar(video, info.properties(), options, models, providers, r, wall),
                           "first_frame_seconds": round(first_frame, 3)},
                info.frames)
    finally:
        if own_pool:
            pool.shutdown(wait=True, cancel_futures=True)
    return ExtractSummary(csv_path, len(results), int(results.success.sum()), wall,
                          len(results) / wall if wall > 0 else 0.0, first_frame, providers)
