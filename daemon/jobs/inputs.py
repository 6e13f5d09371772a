"""What the runner needs to know of an input file: its content fingerprint and its identity."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of the content: the same video under two names is one job."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def identity(path: Path) -> tuple[int, int, int, int]:
    """``(device, inode, size, mtime_ns)``: changes when the file is replaced or rewritten."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
