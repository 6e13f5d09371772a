"""``au_models``: which AU model families a job runs, and the rules that refuse a combination."""

from __future__ import annotations

from pathlib import Path

from . import files

CHOICES = ("openface3", "openface2", "both")


class AuModelsError(ValueError):
    """``au_models`` asks for something this run cannot do; the message says why and what to change."""


def have_files(models_dir: Path) -> bool:
    """Whether the model set holds OpenFace 2.2's fixed files (the AU list's files are checked on loading)."""
    root = Path(models_dir) / files.SUBDIR
    return all((root / p).is_file() for p in files.REQUIRED_PATHS)


def default_au_models(models_dir: Path, au45: bool) -> str:
    """"both" when the model set holds the OpenFace 2.2 files and STAR runs, else "openface3"."""
    return "both" if au45 and have_files(models_dir) else "openface3"


def check_au_models(au_models: str, au45: bool, models_dir: Path) -> None:
    if au_models not in CHOICES:
        raise AuModelsError(f"au_models = {au_models!r}: choose one of {', '.join(CHOICES)}")
    if au_models == "openface3":
        return
    if not au45:
        raise AuModelsError(f"au_models = {au_models!r} fits OpenFace 2.2's face model to STAR's landmarks, which "
                            "au45 = false (--no-au45) turns off: turn AU45 on or use --au-models openface3")
    if not have_files(models_dir):
        root = Path(models_dir) / files.SUBDIR
        raise AuModelsError(f"au_models = {au_models!r} needs OpenFace 2.2's AU files under {root} "
                            "(run `aud models fetch`): not found")


def fingerprint(models_dir: Path) -> str:
    """sha256 over the OpenFace 2.2 files a run reads (fixed files, the AU list and every file it lists), with
    their paths: part of the job key, so another model set computes afresh."""
    import hashlib

    root = Path(models_dir) / files.SUBDIR
    digest = hashlib.sha256()
    paths = [*files.REQUIRED_PATHS, *files.listed_model_paths((root / files.AU_LIST_PATH).read_text())]
    for rel in paths:
        digest.update(rel.encode() + b"\0" + hashlib.sha256((root / rel).read_bytes()).digest())
    return digest.hexdigest()
