"""``aud extract FOLDER`` with one junk ``c.mp4`` (issue 26 item 4): it used to exit 2 and process
nothing; the README promises "exit 2 naming each video that failed (the others are still written)"."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

from tests.conftest import frame_pattern


def test_a_junk_video_in_a_folder_is_named_and_the_others_are_still_written(tiny_models, synthetic_video, tmp_path):
    folder = tmp_path / "videos"
    synthetic_video(frames=3, width=64, height=48, name="videos/a.mp4")
    synthetic_video(frames=4, width=64, height=48, name="videos/b.mp4",
                    pattern=lambda i, w, h: frame_pattern(i + 5, w, h))
    (folder / "c.mp4").write_bytes(b"this is not a video\n" * 10)
    out = tmp_path / "out"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    result = subprocess.run([sys.executable, "-m", "daemon", "extract", str(folder), "-o", str(out),
                             "--models", str(tiny_models), "--workers", "1", "--provider", "cpu", "--no-plots"],
                            capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert f"aud extract: {folder / 'c.mp4'}:" in result.stderr
    for name, frames in (("a", 3), ("b", 4)):
        with open(out / f"{name}.csv") as f:
            assert len(list(csv.DictReader(f))) == frames
    assert not (out / "c.csv").exists()
