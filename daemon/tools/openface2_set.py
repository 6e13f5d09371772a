"""The installed OpenFace 2.2 files of a model directory: ``<models>/openface2/<repository path>``, recorded in
the directory's ``manifest.toml`` under ``[openface2]`` (source, ref, and per file its sha256, size and how the
hash was held), installed atomically and checked by ``aud models check``.

**Installing** (:func:`install`) swaps the whole model directory, as ``aud models export`` does: a sibling
directory is staged with hard links to everything the model directory holds (the ONNX files, anything else)
except ``openface2/`` and the manifest, the new ``openface2/`` files copied from the cache and hashed again,
and the manifest with its ``[openface2]`` table replaced (other tables and comments kept); then the previous
directory is renamed aside, the staged one renamed in, and the previous one removed. Both renames stay on one
file system, so each is atomic; should the process die between them, the previous directory is whole at
``.<name>.previous`` and is put back by the next fetch or export (the convention of ``export.swap_in``).

``aud models export`` replaces the directory the same way; :func:`carry_over` brings ``openface2/`` and the
``[openface2]`` table into its staged directory so that a new OpenFace 3.0 export keeps the OpenFace 2.2 files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ..core.atomic import fsync_dir
from ..core.models import MANIFEST, manifest_data, sha256_of
from .openface2_files import (
    AU_LIST_PATH,
    FIXED_PATHS,
    LICENSE_URL,
    OPENFACE2_DIR,
    PINNED,
    REF,
    AUListError,
    set_paths,
)

TABLE = "openface2"


class InstallError(RuntimeError):
    """The OpenFace 2.2 files cannot be installed; the model directory is left as it was."""


@dataclass(frozen=True)
class Installed:
    path: str  # repository-relative
    sha256: str
    size: int
    how: str  # "SHA256SUMS", "pinned" or "recorded"


# --- the manifest record ------------------------------------------------------------------------------

def record_table(files: Iterable[Installed], source: str, official: bool):
    """The ``[openface2]`` table (a tomlkit table)."""
    import tomlkit

    table = tomlkit.table(is_super_table=False)
    table.add(tomlkit.comment("OpenFace 2.2.0 AU files (academic or non-profit non-commercial research use only; "
                              "do not redistribute them)"))
    table["directory"] = OPENFACE2_DIR
    table["source"] = source
    if official:
        table["ref"] = REF
    table["license"] = LICENSE_URL
    entries = tomlkit.table(is_super_table=True)
    for f in files:
        entry = tomlkit.table()
        entry["sha256"] = f.sha256
        entry["size"] = f.size
        entry["checked"] = str(f.how)
        entries[f.path] = entry
    table["files"] = entries
    return table


def manifest_with(text: str | None, table) -> str:
    """``text`` (a manifest, or None) with its ``[openface2]`` table replaced by ``table`` (dropped if None)."""
    import tomlkit

    document = tomlkit.parse(text) if text else tomlkit.document()
    if TABLE in document:
        del document[TABLE]
    if table is not None:
        document[TABLE] = table
    return tomlkit.dumps(document)


def read_record(directory: Path) -> dict | None:
    """The manifest's ``[openface2]`` table as plain data, or None."""
    data = manifest_data(directory, InstallError)
    if data is None:
        return None
    record = data.get(TABLE)
    return record if isinstance(record, dict) else None


# --- staging and swapping -----------------------------------------------------------------------------

def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _link_entry(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    elif src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        _link_or_copy(str(src), str(dst))


def previous_of(target: Path) -> Path:
    return target.with_name(f".{target.name}.previous")


def restore_interrupted(target: Path) -> None:
    """Put back the previous directory of a swap that died between its two renames."""
    previous = previous_of(target)
    if previous.exists() and not target.exists():
        os.replace(previous, target)


def swap_in(staged: Path, target: Path) -> None:
    previous = previous_of(target)
    if previous.exists():
        shutil.rmtree(previous)
    if target.exists():
        os.replace(target, previous)
    os.replace(staged, target)
    fsync_dir(target.parent)
    if previous.exists():
        shutil.rmtree(previous)


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def install(target: Path, files: Mapping[str, tuple[Path, str]], source: str, official: bool,
            say: Callable[[str], None] = print) -> list[Installed]:
    """Install ``files`` ({repository path: (file, how its hash was held)}: the fixed files and every model
    their ``AU_all_best.txt`` lists) into ``target/openface2`` and record them in ``target/manifest.toml``,
    replacing any previous OpenFace 2.2 files; everything else in ``target`` is kept. Atomic: on any error
    ``target`` is as it was."""
    target = Path(target).expanduser().resolve()  # a symlinked model directory: its real directory is swapped
    restore_interrupted(target)
    if AU_LIST_PATH not in files:
        raise InstallError(f"{AU_LIST_PATH} is not at hand")
    try:
        paths = set_paths(Path(files[AU_LIST_PATH][0]).read_text(encoding="utf-8", errors="replace"))
    except AUListError as exc:
        raise InstallError(str(exc)) from exc
    missing = [p for p in paths if p not in files]
    if missing:
        raise InstallError(f"not every OpenFace 2.2 file is at hand: {', '.join(missing[:3])}")
    if target.exists() and not target.is_dir():
        raise InstallError(f"{target}: exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.openface2-", dir=target.parent))
    try:
        if target.is_dir():
            for entry in target.iterdir():
                if entry.name not in (OPENFACE2_DIR, MANIFEST):
                    _link_entry(entry, staged / entry.name)
        installed = []
        for path in paths:
            src, how = files[path]
            dst = staged / OPENFACE2_DIR / path
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            installed.append(Installed(path, sha256_of(dst), dst.stat().st_size, how))
        old = (target / MANIFEST).read_text() if (target / MANIFEST).is_file() else None
        try:
            text = manifest_with(old, record_table(installed, source, official))
        except Exception as exc:  # tomlkit raises its own parse errors
            raise InstallError(f"{target / MANIFEST}: cannot read the manifest to record the OpenFace 2.2 files: "
                               f"{exc}") from exc
        (staged / MANIFEST).write_text(text)
        _fsync_tree(staged)
        swap_in(staged, target)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    say(f"OpenFace 2.2 files installed in {target / OPENFACE2_DIR} ({len(installed)} files, recorded in "
        f"{target / MANIFEST} [{TABLE}])")
    return installed


def carry_over(target: Path, staged: Path) -> None:
    """For a replacement of ``target`` by ``staged`` (``aud models export``): bring ``target``'s OpenFace 2.2
    files (hard links) and their ``[openface2]`` manifest table into ``staged``. Call after the staged
    manifest is written."""
    target, staged = Path(target), Path(staged)
    if (target / OPENFACE2_DIR).is_dir():
        _link_entry(target / OPENFACE2_DIR, staged / OPENFACE2_DIR)
    if not (target / MANIFEST).is_file():
        return
    import tomlkit

    try:
        table = tomlkit.parse((target / MANIFEST).read_text()).get(TABLE)
    except Exception:  # an unreadable old manifest: the export writes its own; nothing to carry
        return
    if table is not None:
        manifest = staged / MANIFEST
        manifest.write_text(manifest_with(manifest.read_text() if manifest.is_file() else None, table))


# --- checking -----------------------------------------------------------------------------------------

class State(Enum):
    COMPLETE = "complete"
    ABSENT = "absent"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class FileStatus:
    path: str
    size: int | None  # None when the file is not there
    sha256: str | None
    problem: str | None
    official: bool = False  # the sha256 is the one pinned for OpenFace 2.2.0


@dataclass
class Status:
    directory: Path
    state: State
    files: list[FileStatus] = field(default_factory=list)
    source: str | None = None
    ref: str | None = None

    @property
    def problems(self) -> list[str]:
        return [f"{f.path}: {f.problem}" for f in self.files if f.problem]


def inspect(models_dir: Path) -> Status:
    """Every OpenFace 2.2 file of ``models_dir``: there, hashed, and as the manifest records it."""
    directory = Path(models_dir).expanduser()
    root = directory / OPENFACE2_DIR
    try:
        record = read_record(directory)
    except InstallError as exc:
        return Status(directory, State.INCOMPLETE, [FileStatus(MANIFEST, None, None, str(exc))])
    if record is None and not root.exists():
        return Status(directory, State.ABSENT)
    recorded = record.get("files", {}) if record else {}
    try:
        listed = root / AU_LIST_PATH
        paths = set_paths(listed.read_text(encoding="utf-8", errors="replace"), str(listed))
    except (OSError, AUListError) as exc:
        paths, listing = FIXED_PATHS, (exc.strerror if isinstance(exc, OSError) else str(exc))
    else:
        listing = None
    files = []
    for path in paths:
        local = root / path
        if not local.is_file():
            files.append(FileStatus(path, None, None, "file not found"))
            continue
        digest, size = sha256_of(local), local.stat().st_size
        entry = recorded.get(path) if isinstance(recorded, dict) else None
        problem = None
        if not isinstance(entry, dict):
            problem = f"not recorded in {MANIFEST} [{TABLE}]"
        elif entry.get("sha256") != digest:
            problem = f"sha256 does not match the manifest's {entry.get('sha256')}"
        elif path == AU_LIST_PATH and listing:
            problem = listing
        files.append(FileStatus(path, size, digest, problem, PINNED.get(path, (0, ""))[1] == digest))
    state = State.INCOMPLETE if any(f.problem for f in files) else State.COMPLETE
    return Status(directory, state, files, record.get("source") if record else None,
                  record.get("ref") if record else None)


def fetch_hint(directory: Path) -> str:
    return (f"get them with: aud models fetch --family openface2 --accept-license --to {directory} "
            f"(or --openface2-source URL for a lab mirror)")
