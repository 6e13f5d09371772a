"""Reading video frames with OpenCV: probing, and frame-exact decoding of a frame range.

A probe decodes one frame: it reads the video stream's packets (PyAV's demuxer, no decoding) to count
the frames and record each frame's stream position (timestamps), because containers announce counts
that can be wrong and phone videos have variable frame rates; where the packets cannot tell (a stream
without presentation timestamps) it decodes every frame instead (``probe(decode=True)``). A range
reader seeks near its first frame and checks the position against the probe's timestamps, falling back
to grabbing forward from the start, so every worker gets exactly the frames a sequential decode would
give.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np


class VideoError(ValueError):
    """A video cannot be opened or decoded; the message names the file and what went wrong."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frames: int  # frames that really decode
    announced_frames: int  # what the container says
    fps: float
    width: int
    height: int
    codec: str
    timestamps: list[float] = field(repr=False)  # seconds, per frame (CAP_PROP_POS_MSEC / 1000)

    def properties(self) -> dict:
        """Everything but the per-frame timestamps, for sidecars and messages."""
        out = asdict(self)
        del out["timestamps"]
        return out


@dataclass(frozen=True)
class Frame:
    index: int  # 0-based
    timestamp: float  # seconds
    image: np.ndarray  # BGR uint8, upright


def quiet_decoder_logs() -> None:
    """FFmpeg's own warnings (a damaged file's "moov atom not found", repeated at every look at it)
    and OpenCV's backend warnings off; errors reach the caller as ``VideoError`` with the reason.
    A process-wide switch: called once by a process that decodes (the daemon, ``aud extract``, a
    worker) before its first capture."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read at the first capture
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def open_capture(path: str | Path) -> cv2.VideoCapture:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError as exc:
        raise VideoError(f"{path}: permission denied (the file is not readable)") from exc
    except OSError as exc:
        raise VideoError(f"{path}: cannot be read: {exc.strerror}") from exc
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes)")
    # FFmpeg decodes on as many threads as OpenCV may use (a worker's share of the cores): left at its
    # default, every capture's decoder threads wake beside the other workers' inference
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, max(1, cv2.getNumThreads())])
    if not cap.isOpened():
        raise VideoError(f"{path}: not a video OpenCV can open (no video stream, e.g. audio only; an "
                         f"unknown format; or a corrupt or incomplete file)")
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return cap


def _fourcc(cap: cv2.VideoCapture) -> str:
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") or "unknown"


def can_open(path: str | Path) -> bool:
    """True when OpenCV opens the file and decodes a first frame (a cheap completeness check)."""
    try:
        cap = open_capture(path)
    except VideoError:
        return False
    try:
        return bool(cap.grab())
    finally:
        cap.release()


def probe(path: str | Path, decode: bool = False) -> VideoInfo:
    """Count the frames and record their timestamps; raise VideoError for bad input.

    From the stream's packets (no decoding: milliseconds for an hour of video), else, with ``decode``
    or where the packets lack timestamps, by decoding every frame. Both give OpenCV's frame count and
    ``CAP_PROP_POS_MSEC`` positions: (presentation timestamp - stream start) x time base, in
    presentation order (tests/core/test_video.py checks them against a full decode, B-frames
    included)."""
    cap = open_capture(path)
    try:
        announced = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        codec = _fourcc(cap)
        ok, first = cap.read()
        if not ok:
            raise VideoError(f"{path}: no decodable video frames (audio only, or a corrupt stream)")
        first_timestamp = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        timestamps = None if decode else packet_timestamps(path)
        if timestamps is None or abs(timestamps[0] - first_timestamp) > 1e-9:  # the packets cannot tell
            timestamps = [first_timestamp]
            while cap.grab():
                timestamps.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
    finally:
        cap.release()
    height, width = first.shape[:2]
    info = VideoInfo(str(path), len(timestamps), announced, fps, width, height, codec, timestamps)
    check_complete(info)
    return info


# FFmpeg's demuxer names (``AVInputFormat.name``) whose packets carry presentation timestamps
TIMESTAMPED_CONTAINERS = frozenset({"mov", "mp4", "matroska", "webm"})


def packet_timestamps(path: str | Path) -> list[float] | None:
    """The presentation times (s) of the first video stream's frames, from its packets alone; None
    when the packets cannot say: a container other than MP4/QuickTime or Matroska/WebM (whose packets
    carry presentation timestamps; AVI's and raw streams' do not, and OpenCV's positions there come
    from the decoder), a packet without a timestamp, or a file PyAV cannot read.

    OpenCV reads the first video stream and reports a frame's position as its presentation timestamp
    less the stream's start time, in the stream's time base (``cap_ffmpeg_impl.hpp``,
    ``CvCapture_FFMPEG::getProperty`` ``CAP_PROP_POS_MSEC`` → ``dts_to_sec``); packets the demuxer
    marks to be discarded (edit lists) never become frames."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video or not TIMESTAMPED_CONTAINERS & set(container.format.name.split(",")):
                return None
            stream = container.streams.video[0]
            start = stream.start_time or 0
            base = float(stream.time_base) if stream.time_base else 0.0
            pts = []
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.pts is None or not base:
                    return None
                pts.append(packet.pts)
    except (av.FFmpegError, OSError, ValueError):
        return None
    if not pts:
        return None
    # as OpenCV computes it (ms, then the reader's /1000), so both give the same doubles
    return [(p - start) * base * 1000.0 / 1000.0 for p in sorted(pts)]


def check_complete(info: VideoInfo) -> None:
    """A stream that ends well before the frames its container announces is truncated: an error."""
    missing = info.announced_frames - info.frames
    # containers round their counts; a couple of frames' slack, or 1 %, is normal
    if missing > max(2, info.announced_frames // 100):
        raise VideoError(
            f"{info.path}: the video stream ends at frame {info.frames} but the file announces "
            f"{info.announced_frames} frames (truncated or damaged file)"
        )


def _seek(cap: cv2.VideoCapture, start: int, previous_timestamp: float | None) -> bool:
    """Seek so the next read is frame ``start``; True when the landing position is verified
    against the probe's timestamp of frame ``start - 1``."""
    if start == 0:
        return True
    if previous_timestamp is None:
        return False
    cap.set(cv2.CAP_PROP_POS_FRAMES, start - 1)
    if not cap.grab():
        return False
    return abs(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 - previous_timestamp) < 1e-6


# A reader grabs up to this many frames forward rather than seek: OpenCV's seek lands at least 16
# frames before its target (then at the keyframe before that) and decodes forward from there.
READ_AHEAD = 16


def reads_on(stop: int, start: int) -> bool:
    """True when a range starting at ``start`` continues a read that ended at ``stop``: it starts
    there or fewer than ``READ_AHEAD`` frames on."""
    return 0 <= start - stop < READ_AHEAD


def follows(position: tuple[str, int] | None, path: str | Path, start: int) -> bool:
    """True when a range of ``path`` starting at ``start`` continues a capture standing at
    ``position`` (path, next frame)."""
    return position is not None and position[0] == str(path) and reads_on(position[1], start)


def _file_identity(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class Reader:
    """Reads frame ranges, keeping the capture of the last range open where it ended.

    A worker keeps one: when its next range is of the same, unchanged file and starts where the last
    ended (or fewer than ``READ_AHEAD`` frames later), the decode simply goes on, with no open and no
    seek (a seek decodes from a keyframe at least 16 frames back, more for long-GOP camera files;
    docs/benchmark.md, "Design measurements"). Otherwise it
    opens and seeks as ``read_range`` does. The frames are the same either way: a sequential decode's.
    """

    def __init__(self) -> None:
        self._cap: cv2.VideoCapture | None = None
        self._at: tuple[str, tuple[int, int, int, int], int] | None = None  # path, identity, next frame

    def position(self) -> tuple[str, int] | None:
        """(path, next frame) where the open capture stands, if one is open."""
        return (self._at[0], self._at[2]) if self._at else None

    def continues(self, path: str | Path, start: int) -> bool:
        """True when a range of ``path`` starting at ``start`` would continue the open capture."""
        if self._at is None or not follows(self.position(), path, start):
            return False
        try:
            return _file_identity(str(path)) == self._at[1]
        except OSError:
            return False

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap, self._at = None, None

    def frames(self, path: str | Path, start: int, stop: int,
               previous_timestamp: float | None = None, step: int = 1) -> Iterator[Frame]:
        """Frames ``start`` .. ``stop - 1`` exactly as a sequential decode gives them (every ``step``-th
        of them: the others are grabbed, not decoded into images).

        ``previous_timestamp`` is the probe's timestamp of frame ``start - 1``: with it a new capture
        seeks and verifies where it landed; without it (or when the check fails) it grabs forward from
        frame 0. The capture stays open at ``stop`` only when every frame was read."""
        continuing = self.continues(path, start)
        if continuing:
            assert self._cap is not None and self._at is not None
            cap, identity, position = self._cap, self._at[1], self._at[2]
            self._cap, self._at = None, None  # owned by this read until it completes
        else:
            self.close()
            cap, position = _open_at(path, start, previous_timestamp), start
            try:
                identity = _file_identity(str(path))
            except OSError:
                identity = None  # gone since it was opened: read it, keep nothing open
        try:
            _grab_forward(cap, path, position, start)
            for index in range(start, stop):
                if (index - start) % step:
                    ok = cap.grab()
                else:
                    ok, image = cap.read()
                if not ok:
                    raise VideoError(f"{path}: the video stream ends at frame {index} (expected frames up to {stop})")
                if (index - start) % step == 0:
                    yield Frame(index, cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, image)
        except BaseException:
            cap.release()
            raise
        if identity is None:
            cap.release()
        else:
            self._cap, self._at = cap, (str(path), identity, stop)


def _grab_forward(cap: cv2.VideoCapture, path: str | Path, position: int, start: int) -> None:
    """Grab (decode, keep no image) from frame ``position`` up to ``start``, so ``start`` is read next."""
    for skipped in range(position, start):
        if not cap.grab():
            raise VideoError(f"{path}: the video stream ends at frame {skipped}, before frame {start}")


def _open_at(path: str | Path, start: int, previous_timestamp: float | None) -> cv2.VideoCapture:
    """A capture whose next frame is ``start``: seeked and verified, else grabbed forward from 0."""
    cap = open_capture(path)
    try:
        if not _seek(cap, start, previous_timestamp):
            cap.release()
            cap = open_capture(path)
            _grab_forward(cap, path, 0, start)
    except BaseException:
        cap.release()
        raise
    return cap


def read_range(path: str | Path, start: int, stop: int,
               previous_timestamp: float | None = None, step: int = 1) -> Iterator[Frame]:
    """``Reader.frames`` on a reader of its own, closed at the end (nothing kept open)."""
    reader = Reader()
    try:
        yield from reader.frames(path, start, stop, previous_timestamp, step)
    finally:
        reader.close()
