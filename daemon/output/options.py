"""How a result is written: the CSV style, plots, hemi-face files, face ids, the camera for head pose."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..core import tracking
from ..core.pipeline import FacesMode

CHUNK_ROWS = 4096  # a CSV is formatted this many rows at a time (a long recording's text is never held whole)


class CsvStyle(StrEnum):
    AUD = "aud"
    OPENFACE2 = "openface2"  # OpenFace 2.2 FeatureExtraction's names, order and formatting


@dataclass(frozen=True)
class OutputOptions:
    faces: FacesMode = FacesMode.PRIMARY
    csv_style: CsvStyle = CsvStyle.AUD
    plots: bool = True
    mirror: bool = False
    mirror_videos: bool = False  # with mirror: the inspection videos beside the CSVs
    track_gap_frames: int = tracking.DEFAULT_GAP  # faces "all" and "primary": frames a face may be missing
    detect_every: int = 1  # > 1: faces followed between detections; the CSV says which boxes were (schema.FOLLOWING)
    camera: tuple[float | None, float | None, float | None, float | None] = (None, None, None, None)  # fx fy cx cy
