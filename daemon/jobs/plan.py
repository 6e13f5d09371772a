"""Planning a video into shards: which frames each worker task measures."""

from __future__ import annotations

from dataclasses import dataclass


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


def plan_shards(frames: int, shard_frames: int, workers: int) -> list[tuple[int, int]]:
    """Frame ranges [start, stop) covering the video in order, at most ``shard_frames`` long.

    Guided self-scheduling: each shard is an equal share of the frames that remain (capped at
    ``shard_frames``), so shards shrink towards the end of the video. The workers take shards as
    they become free, so one that runs faster takes more of the small final shards and all finish
    nearly together, instead of one idling while another finishes a full-size shard. Shards never
    get smaller than a sixteenth of ``shard_frames``, nor so large that a short video leaves a worker
    without one. Each shard costs a seek (decoding from the keyframe before it) and a round trip,
    which at 20 ms a frame (AU45 off) is worth about a frame: halving the share, as this did before,
    made 18 shards of the shared clip instead of 13, for 3.7 % less speed and no better balance
    (docs/benchmark.md, "Design measurements")."""
    if frames <= 0:
        return []
    workers = max(1, min(workers, frames))
    smallest = max(1, min(shard_frames // 16, frames // workers))
    ranges, start = [], 0
    while start < frames:
        remaining = frames - start
        size = min(remaining, max(smallest, min(shard_frames, -(-remaining // workers))))
        ranges.append((start, start + size))
        start += size
    return ranges


def plan_selection(total: int, selection: FrameSelection, shard_frames: int, workers: int) -> list[tuple[int, int]]:
    """``plan_shards`` over the selected frames, as ranges of the video's own frame numbers; with a
    step, every range starts on a selected frame and holds at most ``shard_frames`` selected ones."""
    chosen = selection.frames(total)
    return [(chosen[a], chosen[b - 1] + 1) for a, b in plan_shards(len(chosen), shard_frames, workers)]
