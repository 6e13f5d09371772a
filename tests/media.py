"""Test media made from the shared clip: cuts of a few frames, copies written slowly, and damaged or
unusual files (index at the front, truncated, blank payload, rotated, audio only)."""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import cv2
import numpy as np


def cut_clip(src: Path, dst: Path, start: int, count: int) -> Path:
    """Frames [start, start+count) of ``src`` re-encoded as mp4v (a short clip for end-to-end tests)."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    return write_video(dst, read_frames(src, start, count), fps)


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


def read_frames(src: Path, start: int, count: int) -> list[np.ndarray]:
    """Frames [start, start+count) of ``src`` (BGR)."""
    cap = cv2.VideoCapture(str(src))
    frames = []
    try:
        for index in range(start + count):
            ok, frame = cap.read()
            if not ok:
                raise ValueError(f"{src} has fewer than {start + count} frames")
            if index >= start:
                frames.append(frame)
    finally:
        cap.release()
    return frames


def write_video(dst: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """``frames`` (BGR, all one size) as an mp4v ``.mp4``."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {w}x{h} mp4v here"
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return dst


def cut_clips(src: Path, out_dir: Path, starts: list[int], count: int) -> list[Path]:
    """One short clip per start frame (``clip-<start>.mp4``), decoding ``src`` once."""
    frames = read_frames(src, 0, max(starts) + count)
    return [write_video(out_dir / f"clip-{s:04d}.mp4", frames[s:s + count]) for s in starts]


# --- MP4 surgery: the index at the front, damaged payloads, rotation metadata --------------------------

def mp4_atoms(data: bytes):
    """``(offset, size, type)`` of the top-level boxes."""
    off = 0
    while off < len(data):
        size, typ = struct.unpack(">I4s", data[off:off + 8])
        yield off, size, typ
        off += size


def faststart(data: bytes) -> tuple[bytes, int, int]:
    """Move the moov atom before mdat (patching stco chunk offsets), as ``-movflags faststart`` does.
    Returns the new bytes and where mdat starts and how long it is."""
    tops = {typ: (off, size) for off, size, typ in mp4_atoms(data)}
    (moov_off, moov_size), (mdat_off, mdat_size) = tops[b"moov"], tops[b"mdat"]
    assert mdat_off < moov_off and moov_off + moov_size == len(data)
    moov = bytearray(data[moov_off:moov_off + moov_size])
    assert b"co64" not in moov
    i = moov.find(b"stco")
    assert i > 0
    while i != -1:
        count = struct.unpack(">I", moov[i + 8:i + 12])[0]
        for k in range(count):
            at = i + 12 + 4 * k
            struct.pack_into(">I", moov, at, struct.unpack(">I", moov[at:at + 4])[0] + moov_size)
        i = moov.find(b"stco", i + 4)
    out = data[:mdat_off] + bytes(moov) + data[mdat_off:moov_off]
    return out, mdat_off + moov_size, mdat_size


def truncated_index_first(src: Path, dst: Path) -> Path:
    """``src`` with its index moved to the front, cut in the middle of the frame data: it opens,
    and its stream ends early."""
    moved, mdat_start, mdat_size = faststart(src.read_bytes())
    dst.write_bytes(moved[:mdat_start + mdat_size // 2])
    return dst


def blank_payload(src: Path, dst: Path) -> Path:
    """``src`` with its frame data zeroed: the index is intact, no frame decodes."""
    data = bytearray(src.read_bytes())
    (off, size), = [(o, s) for o, s, t in mp4_atoms(bytes(data)) if t == b"mdat"]
    data[off + 8:off + size] = bytes(size - 8)
    dst.write_bytes(bytes(data))
    return dst


def rotated_portrait(src: Path, dst: Path, start: int, count: int, x0: int) -> tuple[Path, list[np.ndarray]]:
    """A portrait clip (a 288-pixel-wide slice of ``src`` from column ``x0``) stored sideways, with
    rotation metadata saying "turn 90 degrees clockwise", as phones record. Returns the file and the
    upright frames a player shows."""
    upright = [f[:, x0:x0 + 288].copy() for f in read_frames(src, start, count)]
    sideways = [cv2.rotate(f, cv2.ROTATE_90_COUNTERCLOCKWISE) for f in upright]
    write_video(dst, sideways)
    data = bytearray(dst.read_bytes())
    tkhd = data.find(b"tkhd")
    assert tkhd > 0 and data[tkhd + 4] == 0, "expected a version 0 tkhd box"
    # after type: version+flags, creation, modification, track id, reserved, duration, 8 reserved,
    # layer, alternate group, volume, reserved; then the 3x3 display matrix (16.16, 2.30 fixed point)
    matrix = tkhd + 4 + 4 * 6 + 8 + 8
    struct.pack_into(">9i", data, matrix, 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    dst.write_bytes(bytes(data))
    return dst, upright


def audio_only(dst: Path, seconds: float = 1.0) -> Path:
    """An ``.mp4`` holding one AAC audio stream (a second of silence) and no video (needs PyAV)."""
    import av

    rate, size = 44100, 1024
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for i in range(int(seconds * rate / size)):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, size), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i * size
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst
