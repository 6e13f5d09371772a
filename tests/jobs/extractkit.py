"""Settings and the in-process executor for tests of ``aud extract``'s runs (shared by the runner's
extract tests and the OpenFace 2.2 AU tests)."""

from __future__ import annotations

from daemon.config import Settings
from daemon.core.pipeline import Pipeline
from daemon.core.shard import run_shard
from daemon.jobs.inline import InlineExecutor


def settings(models, tmp_path, **kw) -> Settings:
    """Small batches and shards, two workers, no plots, the store in ``tmp_path``; ``kw`` overrides."""
    defaults = dict(provider="cpu", workers=2, batch_size=3, shard_frames=6, plots=False, state=tmp_path / "state")
    return Settings(models=models, **{**defaults, **kw})


def in_process(s: Settings) -> InlineExecutor:
    """The real pipeline, run in this process (no worker processes)."""
    pipeline = Pipeline(s.pipeline_options())
    return InlineExecutor(lambda task, progress: run_shard(pipeline, task, progress), capacity=2)
