"""``aud extract`` through ``daemon.cli.main``: exit codes, messages, and one real run on tiny models."""

from __future__ import annotations

import json
import os

import pytest

from daemon import cli
from daemon import output as csvfile

pytestmark = pytest.mark.usefixtures("isolated_config")  # no AUD_* or user config


def run(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def words(text: str) -> str:
    """The text with line breaks (the console wraps at 80 columns when not on a terminal) undone."""
    return " ".join(text.split())


def assert_names(err: str, path) -> None:
    # the whole path, even if the console folded it across lines
    assert path.name in err
    assert str(path) in err.replace("\n", "")


def test_missing_video(tmp_path, tiny_models, capsys):
    video = tmp_path / "nope.mp4"
    code, _, err = run(["extract", str(video), "--models", str(tiny_models), "--workers", "1"], capsys)
    assert code == 2
    assert err.startswith("aud extract:")
    assert_names(err, video)
    assert "no such file" in words(err)
    assert not (tmp_path / "nope.csv").exists()


def test_text_file_named_mp4(tmp_path, tiny_models, capsys):
    video = tmp_path / "notes.mp4"
    video.write_text("shopping list\n" * 20)
    out = tmp_path / "elsewhere.csv"
    code, _, err = run(["extract", str(video), "-o", str(out), "--models", str(tiny_models)], capsys)
    assert code == 2
    assert_names(err, video)
    assert not out.exists() and not (tmp_path / "notes.csv").exists()


def test_random_bytes_video(tmp_path, tiny_models, capsys):
    video = tmp_path / "noise.mov"
    video.write_bytes(os.urandom(4096))
    code, _, err = run(["extract", str(video), "--models", str(tiny_models)], capsys)
    assert code == 2
    assert_names(err, video)


def test_missing_model_directory(tmp_path, synthetic_video, capsys):
    video = synthetic_video(frames=3)
    models = tmp_path / "no-models-here"
    code, _, err = run(["extract", str(video), "--models", str(models)], capsys)
    assert code == 2
    assert "model directory not found" in words(err)
    assert_names(err, models)


def test_missing_config_file(tmp_path, synthetic_video, capsys):
    config = tmp_path / "absent.toml"
    code, _, err = run(["extract", str(synthetic_video(frames=3)), "--config", str(config)], capsys)
    assert code == 2
    assert "config file not found" in words(err)


def test_unknown_provider(tmp_path, tiny_models, synthetic_video, capsys):
    code, _, err = run(["extract", str(synthetic_video(frames=3)), "--models", str(tiny_models),
                        "--provider", "nosuch", "--workers", "1"], capsys)
    assert code == 2
    assert "nosuch" in err and "CPUExecutionProvider" in words(err)


def test_extract_writes_csv_next_to_the_video(tmp_path, tiny_models, synthetic_video, capsys):
    video = synthetic_video(frames=6, name="session 1.mp4")
    code, _, err = run(["extract", str(video), "--models", str(tiny_models), "--provider", "cpu",
                        "--workers", "1", "--no-au45", "--batch-size", "2"], capsys)
    assert code == 0, err
    csv_path = tmp_path / "session 1.csv"
    rows = csvfile.read_csv(csv_path)
    assert [r["frame"] for r in rows] == [str(i) for i in range(1, 7)]
    assert all(r["success"] == "1" and r["AU12_r"] != "" and r["AU45_r"] == "" for r in rows)
    sidecar = json.loads((tmp_path / "session 1.json").read_text())
    assert sidecar["options"]["au45"] is False and sidecar["options"]["batch_size"] == 2
    assert "6/6 frames" in err and "6 frames in" in err


def test_output_directory_missing(tmp_path, tiny_models, synthetic_video, capsys):
    video = synthetic_video(frames=2)
    out = tmp_path / "no-such-dir" / "out.csv"
    code, _, err = run(["extract", str(video), "-o", str(out), "--models", str(tiny_models), "--provider", "cpu",
                        "--workers", "1"], capsys)
    assert (code == 0 and out.exists()) or (code == 2 and "no-such-dir" in err)


def test_a_failed_video_among_several_exits_2_and_the_others_get_their_csv(tmp_path, tiny_models, synthetic_video,
                                                                          capsys):
    from tests.media import truncated_index_first

    good = synthetic_video(frames=4, name="good.mp4")
    cut = truncated_index_first(synthetic_video(frames=30, name="long.mp4"), tmp_path / "cut.mp4")
    code, _, err = run(["extract", str(good), str(cut), "--models", str(tiny_models), "--provider", "cpu",
                        "--workers", "1", "--no-plots"], capsys)
    assert code == 2
    assert (tmp_path / "good.csv").exists() and not (tmp_path / "cut.csv").exists()
    assert "cut.mp4" in err and "truncated" in words(err)


def test_start_end_and_every(tmp_path, tiny_models, synthetic_video, capsys):
    video = synthetic_video(frames=25, fps=25.0)
    code, _, err = run(["extract", str(video), "--models", str(tiny_models), "--provider", "cpu", "--workers", "1",
                        "--start", "0.2", "--end", "0.6", "--every", "3", "--no-plots"], capsys)
    assert code == 0, err
    rows = csvfile.read_csv(tmp_path / "clip.csv")
    assert [int(r["frame"]) for r in rows] == [6, 9, 12, 15]  # frames 5..14 (0-based), every third
