"""What the daemon does with files: fingerprints, outbox names, and moving inputs when a job ends."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Collection
from pathlib import Path

from ..core.atomic import atomic_write_text
from ..core.csvfile import sidecar_path

DONE_DIR = ".done"
FAILED_DIR = ".failed"


def fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of the content: the same video under two names is one job."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def relative_subdir(path: Path, inbox: Path) -> str:
    """The input's folder relative to the inbox ("" for the top level or outside the inbox)."""
    try:
        rel = Path(os.path.abspath(path)).parent.relative_to(os.path.abspath(inbox))
    except ValueError:
        return ""
    return "" if str(rel) == "." else rel.as_posix()


def is_inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False


def identity(path: Path) -> tuple[int, int, int, int]:
    """``(device, inode, size, mtime_ns)``: changes when the file is replaced or rewritten."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def outbox_csv(outbox: Path, subdir: str, name: str, fingerprint_: str, taken: Collection[Path] = ()) -> Path:
    """``<outbox>/<subdir>/<stem>.csv``; on a clash with another video's result, ``<stem> (2).csv`` etc.

    A file that already holds this very job's result (same fingerprint in its sidecar, left by a crash
    between writing it and recording it) is reused, so a resumed job is not written twice. Names in
    ``taken`` (results being written right now) are skipped.
    """
    folder = outbox / subdir
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    for n in range(1, 10_000):
        candidate = folder / (f"{stem}.csv" if n == 1 else f"{stem} ({n}).csv")
        if candidate not in taken and (not candidate.exists() or _result_of(candidate, fingerprint_)):
            return candidate
    raise FileExistsError(f"no free name for {stem}.csv in {folder}")


def discard_partial(csv_path: Path, fingerprint_: str) -> None:
    """After a failed write: the sidecar is written first, so remove this job's sidecar when its CSV
    never appeared (nothing half-done stays in the outbox while the job waits)."""
    if not csv_path.exists() and _result_of(csv_path, fingerprint_):
        sidecar_path(csv_path).unlink(missing_ok=True)


def _result_of(csv_path: Path, fingerprint_: str) -> bool:
    try:
        return json.loads(sidecar_path(csv_path).read_text()).get("fingerprint") == fingerprint_
    except (OSError, ValueError):
        return False


def free_path(path: Path) -> Path:
    """``path`` itself, or ``name (2).ext`` and so on when it exists."""
    if not path.exists() and not path.is_symlink():
        return path
    for n in range(2, 10_000):
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    raise FileExistsError(f"no free name for {path}")


def move_input(source: Path, inbox: Path, folder: str, subdir: str) -> Path | None:
    """Move an input into ``<inbox>/<folder>/<subdir>/``; never overwrites. None if it is gone."""
    if not source.exists() and not source.is_symlink():
        return None
    target_dir = inbox / folder / subdir
    target_dir.mkdir(parents=True, exist_ok=True)
    target = free_path(target_dir / source.name)
    shutil.move(str(source), str(target))
    return target


def write_error(inbox: Path, subdir: str, name: str, reason: str, job_id: int) -> Path:
    """``<inbox>/.failed/<subdir>/<name>.error.txt`` saying why, in plain words."""
    folder = inbox / FAILED_DIR / subdir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.error.txt"
    atomic_write_text(path, f"aud could not process {name} (job {job_id}).\n\nReason: {reason}\n\n"
                            f"The video was kept. Fix the cause and drop it into the inbox again, or run "
                            f"`aud submit <path>`.\n")
    return path
