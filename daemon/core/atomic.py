"""Atomic file writes: a file appears complete or not at all, and survives a power cut once written.

Every temporary file is created exclusively under a fresh random name (``O_CREAT | O_EXCL |
O_NOFOLLOW``) in the target's own folder: a symlink or file planted at a predictable name by another
user who can write that folder (a shared outbox, a lab share) is never opened, followed or truncated.
The final ``rename`` replaces whatever sits at the target's name, a symlink included, without following
it. Temporary files get the usual permissions (0666 less the umask), like a plain ``open``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_ATTEMPTS = 100


def create_exclusive(directory: Path, prefix: str, suffix: str = ".tmp", mode: int = 0o666) -> tuple[int, Path]:
    """A new empty file ``<directory>/<prefix><random><suffix>`` that did not exist before (never a
    symlink's target): its open descriptor (write-only) and path. FileExistsError only after 100 clashes."""
    for _ in range(_ATTEMPTS):
        path = Path(directory) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(path, _EXCLUSIVE, mode), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


@contextmanager
def exclusive_temp(path: Path, suffix: str = ".tmp") -> Iterator[tuple[BinaryIO, Path]]:
    """A temporary file beside ``path`` (``.<name>.<random><suffix>``), open for writing; removed if the
    block raises, left for the caller to rename otherwise."""
    path = Path(path)
    fd, tmp = create_exclusive(path.parent, f".{path.name}.", suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(f)`` into a temp file beside ``path``, fsync, rename over ``path``, fsync the directory.
    On any error the temp file is removed and ``path`` is untouched."""
    path = Path(path)
    with exclusive_temp(path) as (f, tmp):
        write(f)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
