"""The files of one result beside each other: ``<stem>.csv``, the sidecar ``<stem>.json``, the plot
``<stem>.png`` and the hemi-face CSVs ``<stem>.left_mirrored.csv`` / ``<stem>.right_mirrored.csv``.

``write_outputs`` writes them atomically: the sidecar first, then the plot, the hemi-face CSVs, and the main
CSV last, so the main CSV's presence means the result is complete; ``discard_partial`` removes what a failed
write left.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..core.atomic import atomic_write, atomic_write_text
from ..core.results import FaceRows
from ..core.schema import SIDES
from .options import OutputOptions
from .paths import output_paths, plot_path, side_path, sidecar_path
from .tables import Table
from .text import table_chunks


def inspection_faces(rows: FaceRows, frames: int) -> list:
    """Per frame of the video, the face the inspection videos show (its best detection), or None."""
    from ..core.mirror import FaceGeometry

    faces: list = [None] * frames
    for i in np.flatnonzero(rows.success & (rows.detection == 0)):
        faces[int(rows.frame[i])] = FaceGeometry(rows.landmarks[i].astype(np.float64), rows.box[i].astype(np.float64))
    return faces


def write_outputs(csv_path: Path, tables: dict[str, Table], sidecar: dict, options: OutputOptions,
                  title: str = "", videos: Callable[[Path], object] | None = None) -> list[Path]:
    """Sidecar, plot, inspection videos (``videos(folder)`` renders them), hemi-face CSVs, then the main
    CSV; each atomic. The main CSV appears complete or not at all, and last: once it is there,
    everything else of the result is too."""
    csv_path = Path(csv_path)
    # the CSVs' pieces first: a table the style cannot write fails here, before any file of the result exists
    sides = {side: table_chunks(tables[side], options.csv_style, hemi=True)
             for side in (SIDES if options.mirror else ())}
    main = table_chunks(tables["main"], options.csv_style)
    atomic_write_text(sidecar_path(csv_path), json.dumps(sidecar, indent=2, default=str) + "\n")
    if videos is not None:
        videos(csv_path.parent)
    if options.plots:
        from .plot import models_footnote, render_png

        png = render_png(tables, title or csv_path.stem, models_footnote(sidecar))
        atomic_write(plot_path(csv_path), lambda f: f.write(png))
    for side, pieces in sides.items():
        atomic_write(side_path(csv_path, side), _text_writer(pieces))
    atomic_write(csv_path, _text_writer(main))
    return output_paths(csv_path, options)


def _text_writer(pieces: Iterable[str]) -> Callable[[BinaryIO], None]:
    """Writes the pieces of a CSV's text one after the other (``atomic_write``'s ``write``)."""
    def write(f: BinaryIO) -> None:
        for piece in pieces:
            f.write(piece.encode("utf-8"))
    return write


def discard_partial(csv_path: Path, options: OutputOptions) -> None:
    """After a failed write: the parts written before the main CSV (sidecar, plot, hemi-face CSVs) go,
    so nothing half-done stays beside other results while the job waits to write again."""
    if Path(csv_path).exists():
        return
    for part in output_paths(csv_path, options)[:-1]:
        try:
            Path(part).unlink(missing_ok=True)
        except OSError:  # the folder itself is unusable (the reason the write failed): nothing to remove
            pass


def read_csv(path: Path) -> list[dict[str, str]]:
    """Read a CSV written here back as dicts (tests and tools)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
