"""What the runner needs to know of an input file: its content fingerprint and its identity."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import aiofiles

CHUNK = 1 << 20


def fingerprint(path: Path, chunk: int = CHUNK) -> str:
    """sha256 of the content: the same video under two names is one job."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


async def fingerprint_async(path: Path, chunk: int = CHUNK) -> str:
    """``fingerprint`` for the event loop: the reads of a multi-gigabyte video happen in aiofiles'
    thread pool, the hashing (hashlib releases the GIL on large blocks) between them, so the loop keeps
    answering the socket while a large file is hashed."""
    h = hashlib.sha256()
    async with aiofiles.open(path, "rb") as f:
        while block := await f.read(chunk):
            h.update(block)
    return h.hexdigest()


def identity(path: Path) -> tuple[int, int, int, int]:
    """``(device, inode, size, mtime_ns)``: changes when the file is replaced or rewritten."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def identity_text(identity: tuple[int, int, int, int]) -> str:
    """An identity as the job store keeps it: ``device:inode:size:mtime_ns``."""
    return ":".join(str(part) for part in identity)
