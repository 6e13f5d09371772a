"""Where OpenFace 2.2.0's AU files live: repository-relative paths, shared by the fetcher and the loader.

The model set holds them under ``<models>/openface2/`` at their paths in TadasBaltrusaitis/OpenFace (tag
``OpenFace_2.2.0``). ``REQUIRED_PATHS`` are the fixed files; the AU model files are the ones ``AU_LIST_PATH``
lists (``listed_model_paths``), read the way ``FaceAnalyser::ReadAU`` (lib/local/FaceAnalyser/src/FaceAnalyser.cpp)
reads it: one model per line, ``<path relative to the list's folder> <AU names, comma separated>``.

- PDM: ``In-the-wild_aligned_PDM_68.txt``, the 68-point PDM the FaceAnalyser fits (``FaceAnalyser::Read``, module
  ``PDM`` of ``AU_predictors/main_dynamic_svms.txt``).
- Triangulation: ``tris_68_full.txt``, module ``Triangulation`` of the same file; ``AlignFaceMask``
  (lib/local/FaceAnalyser/src/Face_utils.cpp) fills its triangles to mask the aligned face.
- ``AU_all_best.txt``: module ``AUPredictor``; lists ``svr_combined/*.dat`` and ``svm_combined/*.dat``.
"""

from __future__ import annotations

from pathlib import PurePosixPath

SUBDIR = "openface2"
"""Folder of the model set that holds the OpenFace 2.2 files at their repository-relative paths."""

REPOSITORY = "TadasBaltrusaitis/OpenFace"
TAG = "OpenFace_2.2.0"

PDM_PATH = "lib/local/LandmarkDetector/model/pdms/In-the-wild_aligned_PDM_68.txt"
TRIANGULATION_PATH = "lib/local/FaceAnalyser/AU_predictors/tris_68_full.txt"
AU_LIST_PATH = "lib/local/FaceAnalyser/AU_predictors/AU_all_best.txt"

REQUIRED_PATHS: tuple[str, ...] = (PDM_PATH, TRIANGULATION_PATH, AU_LIST_PATH)
"""The fixed files; the model files come from ``listed_model_paths(<text of AU_LIST_PATH>)``."""


def parse_au_list(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """``(repository-relative model path, AU names)`` per non-empty line of ``AU_all_best.txt``.

    As ``FaceAnalyser::ReadAU``: the first whitespace-separated token is the location relative to the list's
    folder, the rest of the line (trailing whitespace and ``\\r`` removed) is a comma-separated list of AU names.
    A line that escapes the folder (absolute, ``..``) is refused: a listed path must stay inside the model set.
    """
    root = PurePosixPath(AU_LIST_PATH).parent
    entries: list[tuple[str, tuple[str, ...]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        location, _, names = line.partition(" ")
        rel = PurePosixPath(location)
        if rel.is_absolute() or ".." in rel.parts or "\\" in location:
            raise ValueError(f"{AU_LIST_PATH} line {number}: model path {location!r} leaves the AU_predictors folder")
        aus = tuple(n.strip() for n in names.strip().split(",") if n.strip())
        if not aus:
            raise ValueError(f"{AU_LIST_PATH} line {number}: no AU name after {location!r}")
        entries.append((str(root / rel), aus))
    return entries


def listed_model_paths(text: str) -> list[str]:
    """Repository-relative paths of every model file ``AU_all_best.txt`` lists, in its order."""
    return [path for path, _ in parse_au_list(text)]
