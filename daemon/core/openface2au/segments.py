"""Within a shard, which rows belong to the same person, for the person-median counts of ``faces = "all"``.

Face ids (``tracking.assign_ids``) are given at assembly, over the whole video; a worker only sees its shard.
So a worker counts the median histograms per *segment*: a run of rows of consecutive measured frames linked by
the same rule as the face ids (boxes matched by an optimal assignment on IoU, a pair counting from
``tracking.MIN_IOU``) but never across a missing frame (gap 0) and never across the shard's start. Segments are
thus finer than face ids; at assembly each segment's counts go to the face id most of its rows carry, and a face
id's median is the sum of its segments' counts. A segment's key is ``first frame * 1024 + detection rank`` of its
first row: unique in the video, whatever the shard plan.
"""

from __future__ import annotations

import numpy as np

from .. import tracking

RANKS = 1024  # more faces than this in one frame would collide keys (the detector keeps far fewer)


class Segments:
    """Streaming linker: call ``assign`` for every measured frame of the shard, in order."""

    def __init__(self) -> None:
        self.previous: list[tuple[np.ndarray, int]] = []

    def assign(self, frame: int, boxes: list[np.ndarray]) -> list[int]:
        keys = [frame * RANKS + rank for rank in range(len(boxes))]
        if self.previous and boxes:
            overlap = tracking.iou(np.stack([b for b, _ in self.previous]), np.stack(boxes))
            for pi, fi in tracking.best_pairs(overlap):
                if overlap[pi, fi] >= tracking.MIN_IOU:
                    keys[fi] = self.previous[pi][1]
        self.previous = list(zip(boxes, keys))
        return keys


def series_key(segment: int, side: str | None = None) -> str:
    """The name of a row's median counts: ``main`` (primary face: the whole video one person) or ``seg<key>``,
    with ``:<side>`` for a hemi-face side."""
    base = "main" if segment < 0 else f"seg{segment}"
    return base if side is None else f"{base}:{side}"
