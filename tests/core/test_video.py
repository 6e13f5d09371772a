"""Probing and frame-exact range reading on synthetic mp4 files, and clear errors for bad input."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon.core import video
from daemon.core.video import VideoError, VideoInfo
from tests.conftest import SHARED, require_shared
from tests.media import faststart

N = 30


def sequential(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame and its CAP_PROP_POS_MSEC/1000, by a plain sequential decode."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    images, stamps = [], []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        images.append(img)
        stamps.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
    cap.release()
    return images, stamps


@pytest.fixture
def clip(synthetic_video) -> Path:
    return synthetic_video(frames=N, width=64, height=48, fps=25.0)


# --- probe --------------------------------------------------------------------------------------------

def test_probe_counts_frames_and_timestamps(clip):
    info = video.probe(clip)
    _, stamps = sequential(clip)
    assert info.frames == N == len(stamps)
    assert info.announced_frames == N
    assert info.fps == pytest.approx(25.0)
    assert (info.width, info.height) == (64, 48)
    assert info.codec and info.codec != "unknown"
    assert info.timestamps == stamps
    np.testing.assert_allclose(info.timestamps, np.arange(N) / 25.0, atol=1e-9)
    assert info.path == str(clip)


def test_properties_leave_out_timestamps(clip):
    props = video.probe(clip).properties()
    assert "timestamps" not in props
    assert props["frames"] == N and props["width"] == 64


def test_can_open(clip, tmp_path):
    assert video.can_open(clip)
    bad = tmp_path / "bad.mp4"
    bad.write_text("hello")
    assert not video.can_open(bad)
    assert not video.can_open(tmp_path / "missing.mp4")


# --- read_range -------------------------------------------------------------------------------------------

RANGES = [(0, 5), (0, N), (1, 4), (11, 19), (24, N), (N - 1, N)]


@pytest.mark.parametrize("start,stop", RANGES)
@pytest.mark.parametrize("hint", ["probe", "none", "wrong"])
def test_read_range_is_frame_exact(clip, start, stop, hint):
    info = video.probe(clip)
    images, stamps = sequential(clip)
    previous = {"probe": info.timestamps[start - 1] if start else None, "none": None,
                "wrong": 123.456}[hint]
    frames = list(video.read_range(clip, start, stop, previous))
    assert [f.index for f in frames] == list(range(start, stop))
    for f in frames:
        np.testing.assert_array_equal(f.image, images[f.index])
        assert f.timestamp == stamps[f.index]


def test_read_range_seeks_when_the_probe_timestamp_verifies(clip, monkeypatch):
    info = video.probe(clip)
    landed = []
    real_seek = video._seek

    def spy(cap, start, previous):
        ok = real_seek(cap, start, previous)
        landed.append(ok)
        return ok

    monkeypatch.setattr(video, "_seek", spy)
    list(video.read_range(clip, 13, 16, info.timestamps[12]))
    list(video.read_range(clip, 13, 16, info.timestamps[12] + 0.5))
    list(video.read_range(clip, 13, 16, None))
    assert landed == [True, False, False]


def test_read_range_past_the_end_raises(clip):
    with pytest.raises(VideoError, match="ends at frame 30"):
        list(video.read_range(clip, 28, 35, None))
    with pytest.raises(VideoError, match="ends at frame"):
        list(video.read_range(clip, 40, 42, None))


def test_read_range_empty_range(clip):
    assert list(video.read_range(clip, 5, 5, None)) == []


# --- a reader that reads on ---------------------------------------------------------------------------------

def count_opens(monkeypatch) -> list[int]:
    opened: list[int] = []
    real = video.open_capture

    def spy(path):
        opened.append(1)
        return real(path)

    monkeypatch.setattr(video, "open_capture", spy)
    return opened


@pytest.mark.parametrize("step", [1, 3])
def test_a_reader_reads_on_across_ranges_without_opening_again(clip, monkeypatch, step):
    info = video.probe(clip)
    images, stamps = sequential(clip)
    opened = count_opens(monkeypatch)
    reader = video.Reader()
    ranges = [(0, 7), (7, 15), (17, 24), (24, 30)]  # (17, 24) starts 2 frames on: grabbed, not seeked
    got = []
    for start, stop in ranges:
        assert reader.continues(clip, start) == (start != 0)
        got += list(reader.frames(clip, start, stop, info.timestamps[start - 1] if start else None, step))
        assert reader.position() == (str(clip), stop)
    reader.close()
    assert len(opened) == 1
    expected = [i for a, b in ranges for i in range(a, b, step)]
    assert [f.index for f in got] == expected
    for f in got:
        np.testing.assert_array_equal(f.image, images[f.index])
        assert f.timestamp == stamps[f.index]


def test_a_reader_opens_again_behind_too_far_ahead_another_file_or_a_changed_file(clip, synthetic_video,
                                                                                  monkeypatch):
    info = video.probe(clip)
    images, _ = sequential(clip)
    other = synthetic_video(frames=10, width=64, height=48, fps=25.0, name="other.mp4")
    opened = count_opens(monkeypatch)
    reader = video.Reader()
    list(reader.frames(clip, 0, 10))
    for path, start in ((clip, 5), (clip, 10 + video.READ_AHEAD), (other, 10)):  # behind, too far, other file
        assert not reader.continues(path, start)
    first = next(iter(reader.frames(clip, 28, 30, info.timestamps[27])))
    np.testing.assert_array_equal(first.image, images[28])
    assert len(opened) == 2
    list(reader.frames(clip, 0, 10))
    os.utime(clip, ns=(0, 0))  # the file changed (a new mtime): its open capture is not trusted
    assert not reader.continues(clip, 10)
    assert [f.index for f in reader.frames(clip, 10, 12, info.timestamps[9])] == [10, 11]
    assert len(opened) == 4
    reader.close()
    assert reader.position() is None


def test_a_reader_keeps_nothing_open_after_a_read_cut_short_or_failed(clip):
    reader = video.Reader()
    frames = reader.frames(clip, 0, 10)
    next(frames)
    frames.close()  # abandoned half-way
    assert reader.position() is None
    with pytest.raises(VideoError, match="ends at frame 30"):
        list(reader.frames(clip, 25, 35))
    assert reader.position() is None


# --- bad input ----------------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="no such file") as exc:
        video.probe(tmp_path / "nope.mp4")
    assert "nope.mp4" in str(exc.value)


def test_directory(tmp_path):
    d = tmp_path / "dir.mp4"
    d.mkdir()
    with pytest.raises(VideoError, match="is a directory") as exc:
        video.probe(d)
    assert "dir.mp4" in str(exc.value)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(VideoError, match="empty") as exc:
        video.probe(p)
    assert "empty.mp4" in str(exc.value)


def test_text_file_named_mp4(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError) as exc:
        video.probe(p)
    assert "notes.mp4" in str(exc.value)


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError) as exc:
        video.probe(p)
    assert "noise.mp4" in str(exc.value)


def test_video_error_is_a_value_error():
    assert issubclass(VideoError, ValueError)


def test_faststart_helper_keeps_the_video_intact(clip, tmp_path):
    moved, _, _ = faststart(clip.read_bytes())
    p = tmp_path / "fast.mp4"
    p.write_bytes(moved)
    assert video.probe(p).frames == N
    assert all(np.array_equal(a, b) for a, b in zip(sequential(p)[0], sequential(clip)[0]))


def test_truncated_video_with_index_first_says_where_it_ends(clip, tmp_path):
    moved, mdat_start, mdat_size = faststart(clip.read_bytes())
    p = tmp_path / "cut.mp4"
    p.write_bytes(moved[:mdat_start + mdat_size // 2])
    with pytest.raises(VideoError, match=r"ends at frame \d+ but the file announces 30 frames") as exc:
        video.probe(p)
    assert "cut.mp4" in str(exc.value)


def test_truncated_video_cut_in_half_by_bytes(clip, tmp_path):
    # mp4v from OpenCV writes its index (moov) last: half a file has no index and does not open at all
    data = clip.read_bytes()
    p = tmp_path / "half.mp4"
    p.write_bytes(data[:len(data) // 2])
    with pytest.raises(VideoError) as exc:
        video.probe(p)
    assert "half.mp4" in str(exc.value)
    cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
    opened = cap.isOpened()
    cap.release()
    if opened:
        assert "ends at frame" in str(exc.value)


def test_unreadable_file(tmp_path, monkeypatch, clip):
    real_open = open

    def deny(path, *args, **kwargs):
        if Path(path) == clip:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(VideoError, match="permission denied"):
        video.probe(clip)


# --- completeness check ----------------------------------------------------------------------------------------

def info(frames: int, announced: int) -> VideoInfo:
    return VideoInfo("x.mp4", frames, announced, 30.0, 64, 48, "avc1", [0.0] * frames)


@pytest.mark.parametrize("frames,announced,ok", [
    (100, 100, True), (98, 100, True), (97, 100, False), (990, 1000, True), (989, 1000, False),
    (105, 100, True), (10, 0, True), (0, 3, False),
])
def test_check_complete_slack(frames, announced, ok):
    if ok:
        video.check_complete(info(frames, announced))
    else:
        with pytest.raises(VideoError, match=f"ends at frame {frames} but the file announces {announced}"):
            video.check_complete(info(frames, announced))


def test_no_leftover_file_descriptors(clip):
    # a generator abandoned half-way still releases its capture when closed
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for _ in range(5):
        gen = video.read_range(clip, 3, 20, None)
        next(gen)
        gen.close()
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) <= before + 1


def test_decoder_threads_follow_opencvs_thread_setting(clip):
    """A worker sets OpenCV to its share of the cores; FFmpeg's decoder threads follow."""
    path = clip
    before = cv2.getNumThreads()
    try:
        for threads in (1, 2):
            cv2.setNumThreads(threads)
            cap = video.open_capture(path)
            assert cap.get(cv2.CAP_PROP_N_THREADS) == threads
            cap.release()
    finally:
        cv2.setNumThreads(before)


# --- the packet probe against a full decode ----------------------------------------------------------

def encode(dst: Path, count: int, codec: str, options: dict[str, str], times: list[int] | None = None,
           rate: int = 30, container: str | None = None) -> Path:
    """``count`` distinct 96x64 frames through PyAV's encoder ``codec`` (``times``: each frame's pts in
    1/``rate`` s units, for a variable frame rate)."""
    from fractions import Fraction

    import av

    with av.open(str(dst), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.time_base = Fraction(1, rate)
        for i in range(count):
            image = np.zeros((64, 96, 3), np.uint8)
            image[:, : (i * 7) % 96] = (i * 37) % 256
            cv2.putText(image, str(i), (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = times[i] if times else i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return dst


B_FRAMES = {"bf": "3", "g": "12", "x264-params": "b-pyramid=normal"}


@pytest.mark.parametrize("name, codec, options, times", [
    ("bframes.mp4", "libx264", B_FRAMES, None),  # decode order differs from presentation order
    ("vfr.mp4", "libx264", B_FRAMES, [0, 1, 2, 4, 5, 9, 10, 11, 15, 16, 17, 18, 22, 23, 30, 31, 32, 40, 41, 42]),
    ("bframes.mkv", "libx264", B_FRAMES, None),  # another container, another time base
])
def test_the_packet_probe_gives_a_full_decodes_count_and_timestamps(tmp_path, name, codec, options, times):
    path = encode(tmp_path / name, 20, codec, options, times)
    info = video.probe(path)
    _, stamps = sequential(path)
    assert video.packet_timestamps(path) is not None  # the packets told, nothing was decoded to count
    assert info.frames == len(stamps) == 20
    assert info.timestamps == stamps  # the same doubles
    assert info == video.probe(path, decode=True)


def test_the_shared_clip_probes_the_same_from_packets_and_by_decoding():
    require_shared("media/hamilton_clip.mp4")
    clip = SHARED / "media/hamilton_clip.mp4"
    assert video.probe(clip) == video.probe(clip, decode=True)


@pytest.mark.parametrize("name, codec, options, container", [
    ("raw.h264", "libx264", B_FRAMES, "h264"),  # Annex B: no timestamps at all
    ("mpeg4.avi", "mpeg4", {"bf": "2"}, None),  # AVI: OpenCV's positions come from the decoder (the last is 0)
])
def test_a_stream_whose_packets_cannot_tell_is_probed_by_decoding(tmp_path, name, codec, options, container):
    path = encode(tmp_path / name, 12, codec, options, container=container)
    assert video.packet_timestamps(path) is None
    info = video.probe(path)
    _, stamps = sequential(path)
    assert info.frames == len(stamps) == 12
    assert info.timestamps == stamps


def test_a_damaged_stream_probed_from_packets_fails_where_it_is_read(tmp_path):
    """The decoding probe refused such a file up front; the packet probe lets its shards start, and the
    read that reaches the damage stops with the frame named (the job fails with that reason)."""
    require_shared("media/hamilton_clip.mp4")
    data = bytearray((SHARED / "media/hamilton_clip.mp4").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with pytest.raises(VideoError, match="announces 275 frames"):
        video.probe(damaged, decode=True)
    info = video.probe(damaged)
    assert info.frames == 275
    with pytest.raises(VideoError, match=r"the video stream ends at frame \d+"):
        for _ in video.read_range(damaged, 0, info.frames):
            pass
