"""Fake shard results for tests on the in-process executor: rows made from the task alone, so the CSV is
known without a model (shared by the runner tests and the in-process daemon kit)."""

from __future__ import annotations

import numpy as np

from daemon.core.results import FaceRows
from daemon.core.shard import ShardResult, ShardTask


def fake_rows(task: ShardTask) -> FaceRows:
    """One face per frame whose AU01 is the frame number: assembly order shows in the CSV."""
    frames = list(range(task.start, task.stop, task.step))
    rows = FaceRows.empty(len(frames))
    rows.frame[:] = frames
    rows.timestamp[:] = np.asarray(frames) / 25.0
    rows.success[:] = True
    rows.detection[:] = 0
    rows.confidence[:] = 0.9
    rows.box[:] = [10, 10, 50, 60]
    rows.gaze[:] = 0.0
    rows.emotion[:] = 0.0
    rows.au[:] = 0.0
    rows.au[:, 0] = frames
    return rows


def fake_compute(task: ShardTask, progress) -> ShardResult:
    """An executor's ``compute``: reports every frame done and returns ``fake_rows``."""
    progress(task.frames)
    return ShardResult(task.start, task.stop, task.frames, fake_rows(task), 0.01, "inline", {})
