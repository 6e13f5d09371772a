"""What the daemon does with files: outbox names, and moving inputs when a job ends.

aud writes only inside its own folders. An input inside the inbox is aud's to move: into ``.done``,
``.failed`` (with ``<name>.error.txt`` beside it) or ``.cancelled`` (with ``<name>.cancelled.txt``). An
input outside the inbox (``aud submit`` of a file elsewhere) is never moved and nothing is written beside
it: the report of its failure goes to the outbox's failure area, ``<outbox>/.failed/<name>.job<id>.error.txt``
(the job id makes the name unique).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Collection
from pathlib import Path

from ..core.atomic import atomic_write_text
from ..output.paths import sidecar_path

DONE_DIR = ".done"
FAILED_DIR = ".failed"
CANCELLED_DIR = ".cancelled"
SET_ASIDE_DIRS = (DONE_DIR, FAILED_DIR, CANCELLED_DIR)
ERROR_NOTE = ".error.txt"
CANCELLED_NOTE = ".cancelled.txt"


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


def is_set_aside(path: Path, inbox: Path) -> bool:
    """Inside ``<inbox>/.done``, ``.failed`` or ``.cancelled``: an input the daemon already moved."""
    return set_aside_in(path, inbox) is not None


def set_aside_in(path: Path, inbox: Path) -> str | None:
    """Which of the set-aside folders (``.done``, ``.failed``, ``.cancelled``) holds ``path``, if any."""
    return next((folder for folder in SET_ASIDE_DIRS if is_inside(path, inbox / folder)), None)


def outbox_csv(outbox: Path, subdir: str, name: str, fingerprint_: str, taken: Collection[Path] = ()) -> Path:
    """``<outbox>/<subdir>/<stem>.csv``; on a clash with another video's result, ``<stem> (2).csv`` etc.

    A name whose result is of this very content (same fingerprint in its sidecar: this job's own
    result, left by a crash between writing it and recording it, or an earlier run of the same video)
    is taken: the caller keeps an earlier run's files (``keep_previous``). Names in ``taken`` (results
    being written right now) are skipped.
    """
    folder = outbox / subdir
    folder.mkdir(parents=True, exist_ok=True)
    require_inside(folder, outbox)
    stem = Path(name).stem
    for n in range(1, 10_000):
        candidate = folder / (f"{stem}.csv" if n == 1 else f"{stem} ({n}).csv")
        if candidate not in taken and (not candidate.exists() or result_of(candidate, fingerprint_) is not None):
            return candidate
    raise FileExistsError(f"no free name for {stem}.csv in {folder}")


def result_of(csv_path: Path, fingerprint_: str) -> dict | None:
    """The sidecar beside ``csv_path`` when it records this content, else None."""
    try:
        sidecar = json.loads(sidecar_path(csv_path).read_text())
    except (OSError, ValueError):
        return None
    return sidecar if isinstance(sidecar, dict) and sidecar.get("fingerprint") == fingerprint_ else None


def keep_previous(csv_path: Path, job_id: int, fingerprint_: str, parts: list[Path]) -> list[Path]:
    """An earlier run's result of the same video at ``csv_path`` (another job's): move its files aside
    to ``<stem>.<that run's date>.<ext>`` so the new result takes the plain name and the old one stays.
    ``parts`` are the files a result consists of, the main CSV last (it is moved first)."""
    sidecar = result_of(csv_path, fingerprint_)
    if not csv_path.exists() or sidecar is None or sidecar.get("job") == job_id:
        return []
    stamp = str(sidecar.get("finished_at") or "")[:19].replace(":", "").replace("-", "") or "previous"
    moved = []
    for part in [parts[-1], *parts[:-1]]:
        if part.exists():
            suffix = part.name[len(csv_path.stem):]  # ".csv", ".left_mirrored.csv", ".json" …
            target = free_path(part.with_name(f"{csv_path.stem}.{stamp}{suffix}"))
            os.replace(part, target)
            moved.append(target)
    return moved


def require_inside(folder: Path, root: Path) -> None:
    """PermissionError unless ``folder`` really is inside ``root`` (a folder replaced by a symlink to
    elsewhere, e.g. by another user of a shared outbox, would send aud's writes outside its folders)."""
    real, real_root = os.path.realpath(folder), os.path.realpath(root)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise PermissionError(errno.EACCES, f"{folder} leads outside {root} (to {real}); aud writes only inside "
                                            f"its own folders: replace it by a real folder")


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
    require_inside(target_dir, inbox)
    target = free_path(target_dir / source.name)
    shutil.move(str(source), str(target))
    return target


def write_error(kept: Path, reason: str, job_id: int | None) -> Path:
    """``<kept>.error.txt`` beside the set-aside input, saying why in plain words. Written last and
    atomically: its presence means the failure is complete (the input is already in place)."""
    path = kept.with_name(f"{kept.name}{ERROR_NOTE}")
    job = f" (job {job_id})" if job_id is not None else ""
    atomic_write_text(path, f"aud could not process {kept.name}{job}.\n\nReason: {reason}\n\n"
                            f"The video was kept here. Fix the cause and drop it into the inbox again, or run "
                            f"`aud submit {kept}`.\n")
    return path


def write_cancelled(kept: Path, job_id: int) -> Path:
    """``<kept>.cancelled.txt`` beside an input moved aside because its job was cancelled: a plain note,
    not a failure."""
    path = kept.with_name(f"{kept.name}{CANCELLED_NOTE}")
    atomic_write_text(path, f"Job {job_id} ({kept.name}) was cancelled by the user; nothing went wrong with "
                            f"the video.\n\nIt was kept here. To process it after all, drop it into the inbox "
                            f"again, or run `aud submit {kept}`.\n")
    return path


def outside_report(outbox: Path, source: Path, job_id: int) -> Path:
    """Where the failure report of an input outside the inbox goes: the outbox's failure area, named after
    the file and its job (two reports never share a name; nothing is written beside the user's file)."""
    return outbox / FAILED_DIR / f"{source.name}.job{job_id}{ERROR_NOTE}"


def write_outside_error(outbox: Path, source: Path, reason: str, job_id: int) -> Path:
    path = outside_report(outbox, source, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    require_inside(path.parent, outbox)
    atomic_write_text(path, f"aud could not process {source} (job {job_id}).\n\nReason: {reason}\n\n"
                            f"The video was left where it is. Fix the cause and run `aud submit {source}` "
                            f"again.\n")
    return path


def remove_notes(kept: Path) -> None:
    """The error or cancellation note beside a set-aside input (stale once it has been processed)."""
    for suffix in (ERROR_NOTE, CANCELLED_NOTE):
        kept.with_name(f"{kept.name}{suffix}").unlink(missing_ok=True)
