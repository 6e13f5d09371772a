"""Test media made from the shared clip: cuts of a few dozen frames, copies written slowly."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2


def cut_clip(src: Path, dst: Path, start: int, count: int) -> Path:
    """Frames [start, start+count) of ``src`` re-encoded as mp4v (a short clip for end-to-end tests)."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    try:
        for index in range(start + count):
            ok, frame = cap.read()
            if not ok:
                raise ValueError(f"{src} has fewer than {start + count} frames")
            if index >= start:
                writer.write(frame)
    finally:
        writer.release()
        cap.release()
    return dst


def copy_slowly(src: Path, dst: Path, chunks: int = 6, pause: float = 0.3) -> Path:
    """Copy like a slow network drive: the file grows in chunks with pauses between them.

    The pauses simulate the slow copy itself (the daemon must wait for it); nothing is synchronised on them.
    """
    data = src.read_bytes()
    step = -(-len(data) // chunks)
    with open(dst, "wb") as f:
        for offset in range(0, len(data), step):
            f.write(data[offset:offset + step])
            f.flush()
            time.sleep(pause)
    return dst


def drop(src: Path, inbox: Path, name: str) -> Path:
    """Put a file into the inbox the way Finder does for a local copy: write beside, then rename in."""
    tmp = inbox / f".{name}.part"
    shutil.copyfile(src, tmp)
    target = inbox / name
    tmp.rename(target)
    return target
