"""A run's configuration for the runner, from the settings: what shapes the output, and its key.

The key is part of a job's identity: the sha256 of the model files' hashes and of every setting that
changes what is written. Dropping the same video after a change of models or of such a setting makes
a new job; speed settings (workers, threads, batch size, shard size) do not change the key.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict
from importlib import metadata

from ..config import Settings
from ..core.models import ModelSet
from ..core.openface2au.files import SUBDIR as OPENFACE2_SUBDIR
from ..core.openface2au.options import fingerprint as openface2_fingerprint
from ..core.provenance import model_provenance
from .plan import TimeSelection
from .runner import RunnerConfig

PACKAGES = ("au-daemon", "onnxruntime", "opencv-python", "opencv-python-headless", "numpy")
NOTE = ("AU, emotion, gaze, landmark and pose values are what the given models compute; they are "
        "estimates only if the models are trained OpenFace 3.0 weights.")


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    """Looked up once per process (``importlib.metadata`` scans sys.path: milliseconds each time), as
    what is imported cannot change while the process runs."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(versions)


def package_versions() -> dict[str, str]:
    """The versions of the packages that shape a result (a fresh dict each call)."""
    return dict(_installed_versions())


def output_settings(settings: Settings, selection: TimeSelection) -> dict:
    """Every setting that changes what a job writes."""
    return {
        "au45": settings.au45,
        "detect_max_side": settings.detect_max_side,
        "faces": settings.faces,
        "track_gap_frames": settings.track_gap_frames if settings.faces in ("all", "primary") else None,
        "mirror": settings.mirror,
        "mirror_videos": settings.mirror_videos,
        "csv_style": settings.csv_style,
        "plots": settings.plots,
        "camera": [settings.camera_fx, settings.camera_fy, settings.camera_cx, settings.camera_cy],
        "selection": asdict(selection),
        # only when following faces: the default (1, every frame detected) keeps the keys of earlier jobs
        **({"detect_every": settings.detect_every} if settings.detect_every != 1 else {}),
        # only with the OpenFace 2.2 AUs: "openface3" keeps the keys of earlier jobs
        **({"au_models": au_models, "openface2_files": openface2_fingerprint(settings.models)}
           if (au_models := settings.au_models_in_use()) != "openface3" else {}),
    }


def job_key(models: ModelSet, shaping: dict) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"models": {role: f.sha256 for role, f in sorted(models.files.items())},
                              "settings": shaping}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def runner_config(settings: Settings, models: ModelSet, providers: dict[str, str],
                  selection: TimeSelection | None = None, output_retry_seconds: float | None = None) -> RunnerConfig:
    selection = selection or TimeSelection()
    shaping = output_settings(settings, selection)
    sidecar = {
        "models": {r: {"path": str(f.path), "sha256": f.sha256} for r, f in models.files.items()},
        # official trained weights, another set or the shared test networks (the hashes just taken: no re-hash)
        "models_provenance": model_provenance(models.directory, {r: f.sha256 for r, f in models.files.items()
                                                                 if f.sha256}).record(),
        "providers": providers,
        "options": {**shaping, "batch_size": settings.batch_size},
        "packages": package_versions(),
        "note": NOTE,
    }
    if settings.mirror:
        sidecar["mirror"] = {
            "midline": "through the midpoint of the inner eye corners (WFLW 64, 68), perpendicular to the "
                       "line through the pupils (WFLW 96, 97)",
            "seam": "hard (no blending)",
            "sides": "left_mirrored: the subject's left half and its reflection; right_mirrored: the right",
        }
    return RunnerConfig(output=settings.output_options(), key=job_key(models, shaping), sidecar=sidecar,
                        shard_frames=settings.shard_frames, shard_retries=settings.shard_retries,
                        shard_timeout_seconds=settings.shard_timeout_seconds,
                        output_retry_seconds=output_retry_seconds, selection=selection,
                        openface2_dir=(settings.models / OPENFACE2_SUBDIR
                                       if settings.au_models_in_use() != "openface3" else None),
                        openface2_only=settings.au_models_in_use() == "openface2")
