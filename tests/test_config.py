"""``daemon/config.py``: precedence (flags > AUD_* > the TOML file > defaults), the file's two shapes,
its errors, and the option table read off the Settings fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import (
    DAEMON,
    MODEL,
    OPTIONS,
    RUN,
    ConfigError,
    Settings,
    default_config_file,
    load_settings,
    options,
)

pytestmark = pytest.mark.usefixtures("isolated_config")


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aud.toml"
    path.write_text(text)
    return path


def test_flags_beat_the_environment_beat_the_file_beat_the_defaults(tmp_path, monkeypatch):
    config = toml(tmp_path, "workers = 3\nbatch_size = 5\nshard_frames = 7\n")
    monkeypatch.setenv("AUD_WORKERS", "2")
    monkeypatch.setenv("AUD_BATCH_SIZE", "6")
    s = load_settings(config, workers=1)
    assert s.workers == 1  # flag over environment and file
    assert s.batch_size == 6  # environment over file
    assert s.shard_frames == 7  # file over default
    assert s.shard_retries == Settings.model_fields["shard_retries"].default  # default


def test_none_flags_are_not_given(tmp_path):
    config = toml(tmp_path, "workers = 3\n")
    assert load_settings(config, workers=None).workers == 3


def test_the_default_file_is_read_when_none_is_named(monkeypatch):
    path = default_config_file()
    path.parent.mkdir(parents=True)
    path.write_text("[aud]\nbatch_size = 9\n")  # the [aud] table form
    assert load_settings(None).batch_size == 9
    assert Settings().batch_size == 4  # constructing Settings directly reads no file


def test_a_table_from_a_higher_source_replaces_the_files_whole(tmp_path, monkeypatch):
    config = toml(tmp_path, '[path_map]\n"/Volumes/lab" = "/mnt/lab"\n')
    assert load_settings(config).path_map == {"/Volumes/lab": "/mnt/lab"}
    monkeypatch.setenv("AUD_PATH_MAP", '{"/Volumes/share": "/data/share"}')
    assert load_settings(config).path_map == {"/Volumes/share": "/data/share"}


@pytest.mark.parametrize("text, words", [
    (None, "config file not found"),
    ("workers = [", "is not valid TOML"),
    ("workrs = 2\n", "workrs = 2 in"),
])
def test_file_errors_are_said_plainly(tmp_path, text, words):
    path = tmp_path / "aud.toml" if text is None else toml(tmp_path, text)
    with pytest.raises(ConfigError, match=words) as error:
        load_settings(path)
    assert "https://" not in str(error.value)


def test_paths_are_absolute_and_extensions_normalised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(None, inbox=Path("in"), extensions=".MP4, mov")
    assert s.inbox == tmp_path / "in"
    assert s.extensions == ("mp4", "mov")


def test_combinations_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="au45 = false"):
        load_settings(None, detect_every=2, au45=False)
    with pytest.raises(ConfigError, match="add --mirror"):
        load_settings(None, mirror_videos=True)
    assert load_settings(None, mirror=True, mirror_videos=True).mirror_videos


def test_the_option_table_reads_each_field_once():
    assert [o.name for o in options(MODEL)] == ["models", "provider"]
    assert [o.name for o in options(DAEMON)] == ["inbox", "outbox", "state", "web_port"]
    assert OPTIONS["au45"].flag == "--no-au45" and OPTIONS["au45"].action == "off"
    assert OPTIONS["mirror"].flag == "--mirror" and OPTIONS["mirror"].action == "on"
    assert OPTIONS["faces"].choices == ("primary", "best", "all")
    assert OPTIONS["detect_every"].type is int and OPTIONS["detect_every"].metavar == "N"
    assert OPTIONS["inbox"].argv(Path("~/in")) == ["--inbox", str(Path("~/in").expanduser())]
    for o in options(MODEL, RUN, DAEMON):
        assert o.help == Settings.model_fields[o.name].description and o.help
    assert "settle_seconds" not in OPTIONS  # file and environment only
