"""Planning a video into shards: which frames each worker task measures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.video import VideoInfo


@dataclass(frozen=True)
class FrameSelection:
    """The frames of a video a job measures: ``[start, stop)`` every ``step``-th (``aud extract
    --start/--end/--every``; the daemon measures every frame)."""

    start: int = 0
    stop: int | None = None  # None: to the end
    step: int = 1

    def frames(self, total: int) -> range:
        stop = total if self.stop is None else min(self.stop, total)
        return range(min(self.start, stop), stop, self.step)


@dataclass(frozen=True)
class TimeSelection:
    """``aud extract --start/--end/--every``: seconds, turned into frames per video."""

    start_s: float = 0.0
    end_s: float | None = None
    every: int = 1

    def frames(self, info: VideoInfo) -> FrameSelection:
        stamps = np.asarray(info.timestamps)
        start = int(np.searchsorted(stamps, self.start_s - 1e-9)) if self.start_s > 0 else 0
        stop = None if self.end_s is None else int(np.searchsorted(stamps, self.end_s - 1e-9))
        return FrameSelection(start, stop, self.every)


def plan_shards(frames: int, shard_frames: int, workers: int) -> list[tuple[int, int]]:
    """Frame ranges [start, stop) covering the video in order, at most ``shard_frames`` long.

    The video is cut into one lane per worker (equal parts), and each lane into shards by guided
    self-scheduling: each shard an equal share (one per worker) of what remains of its lane, capped at
    ``shard_frames``, so shards shrink towards each lane's end. A worker reads its lane in order on one
    open capture (``scheduler.py``, ``video.Reader``), so a shard costs a round trip but no seek (a
    seek decodes from a keyframe at least 16 frames back; docs/benchmark.md, "Design measurements");
    the small shards at a lane's end let the worker that finishes first take over part of another's lane,
    so all finish nearly together. The first lane opens with its smallest shard, so a job's first result
    (and the rate its estimate of time left starts from) is committed a few frames after it starts,
    whatever a frame costs (with AU45 on, ~0.3 s a frame, a full first shard took ~10 s: docs/benchmark.md,
    "Long recordings"). Only the first lane: a small shard at every lane's start would leave gaps the
    scheduler reads across (``scheduler.pick``). Shards never get smaller than a sixteenth of
    ``shard_frames`` (or their lane), nor is a lane planned for a worker that would get no frame."""
    if frames <= 0:
        return []
    workers = max(1, min(workers, frames))
    ranges: list[tuple[int, int]] = []
    for lane in range(workers):
        start, end = lane * frames // workers, (lane + 1) * frames // workers
        smallest = max(1, min(shard_frames // 16, end - start))
        opening = lane == 0
        while start < end:
            remaining = end - start
            size = min(remaining, max(smallest, min(shard_frames, -(-remaining // workers))))
            if opening:  # the video opens with a smallest shard: a first result within a few frames' time
                size, opening = smallest, False
            ranges.append((start, start + size))
            start += size
    return ranges


def plan_selection(total: int, selection: FrameSelection, shard_frames: int, workers: int) -> list[tuple[int, int]]:
    """``plan_shards`` over the selected frames, as ranges of the video's own frame numbers; with a
    step, every range starts on a selected frame and holds at most ``shard_frames`` selected ones."""
    chosen = selection.frames(total)
    return [(chosen[a], chosen[b - 1] + 1) for a, b in plan_shards(len(chosen), shard_frames, workers)]
