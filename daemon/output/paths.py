"""A result's file names, beside its main CSV: the sidecar, the plot and the hemi-face CSVs."""

from __future__ import annotations

from pathlib import Path

from ..core.schema import SIDES
from .options import OutputOptions


def sidecar_path(csv_path: Path) -> Path:
    return Path(csv_path).with_suffix(".json")


def plot_path(csv_path: Path) -> Path:
    return Path(csv_path).with_suffix(".png")


def side_path(csv_path: Path, side: str) -> Path:
    """``<stem>.left_mirrored.csv`` beside ``<stem>.csv``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}.{side}.csv")


def output_paths(csv_path: Path, options: OutputOptions) -> list[Path]:
    """Every file a result consists of, the main CSV last."""
    paths = [sidecar_path(csv_path)]
    if options.plots:
        paths.append(plot_path(csv_path))
    if options.mirror:
        paths += [side_path(csv_path, side) for side in SIDES]
    return [*paths, Path(csv_path)]
