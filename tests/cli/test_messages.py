"""What ``aud`` says when it is told something wrong: the flag the user typed, why, and what to do;
refused before anything is read or written."""

from __future__ import annotations

import pytest
from rich.console import Console

from daemon import cli
from daemon.cli.client import render_status

pytestmark = pytest.mark.usefixtures("isolated_config")


def run(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


@pytest.fixture
def video(synthetic_video):
    return synthetic_video(frames=3, width=32, height=32)


def test_a_bad_flag_value_names_the_flag_not_the_field(video, tiny_models, capsys):
    code, _, err = run(["extract", str(video), "--models", str(tiny_models), "--detect-every", "0"], capsys)
    assert code == 2
    assert "--detect-every 0: input should be greater than or equal to 1" in err
    assert "pydantic" not in err and "https://" not in err and "detect_every" not in err
    assert not video.with_suffix(".csv").exists()


def test_a_bad_value_from_the_environment_or_the_file_names_where_it_came_from(video, tiny_models, tmp_path,
                                                                              monkeypatch, capsys):
    monkeypatch.setenv("AUD_WORKERS", "0")
    code, _, err = run(["extract", str(video), "--models", str(tiny_models)], capsys)
    assert code == 2 and "AUD_WORKERS=0: input should be greater than or equal to 1" in err
    monkeypatch.delenv("AUD_WORKERS")
    config = tmp_path / "aud.toml"
    config.write_text('faces = "everyone"\n')
    code, _, err = run(["extract", str(video), "--config", str(config)], capsys)
    assert code == 2 and "faces = 'everyone' in" in err and "input should be 'primary', 'best' or 'all'" in err


def test_every_zero_is_refused(video, tiny_models, capsys):
    code, _, err = run(["extract", str(video), "--models", str(tiny_models), "--every", "0"], capsys)
    assert code == 2 and "--every 0: must be 1 (every frame) or more" in err
    assert not video.with_suffix(".csv").exists()


def test_start_after_end_says_so(video, tiny_models, capsys):
    code, _, err = run(["extract", str(video), "--models", str(tiny_models), "--start", "5", "--end", "2"], capsys)
    assert code == 2 and "--start 5 is at or after --end 2" in err


def test_mirror_videos_without_mirror_is_refused(video, tiny_models, capsys):
    code, _, err = run(["extract", str(video), "--models", str(tiny_models), "--mirror-videos"], capsys)
    assert code == 2 and "--mirror-videos" in err and "add --mirror" in err
    assert not video.with_suffix(".csv").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith("aud ")


@pytest.mark.parametrize("manager, tool", [("launchd", "launchctl"), ("systemd", "systemctl")])
def test_install_without_the_service_manager_writes_nothing(manager, tool, tiny_models, tmp_path, monkeypatch,
                                                             capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # neither launchctl nor systemctl
    code, _, err = run([manager, "install", "--models", str(tiny_models), "--log-dir", str(tmp_path / "logs")],
                       capsys)
    assert code == 2 and f"{tool} is not on this system" in err and "nothing was written" in err
    assert not home.exists() and not (tmp_path / "logs").exists()


def test_status_never_cuts_the_part_of_a_path_that_tells_rows_apart():
    inbox = "/home/someone/Documents/aud/inbox"
    stem = f"{inbox}/a-study-with-a-long-name/participant-0001-session-02-camera-"
    data = {"state": "ready", "inbox": inbox, "workers": {}, "counts": {},
            "waiting": [{"file": stem + "left.mp4", "reason": "still being copied"},
                        {"file": stem + "right.mp4", "reason": "still being copied"}],
            "duplicates": [{"file": stem + "top.mp4", "job": 3, "state": "done", "moved_to": None}]}
    console = Console(width=80, record=True, force_terminal=False)
    render_status(data, console)
    lines = console.export_text().splitlines()
    first_column = "".join(line.split("│")[1].strip() for line in lines if line.startswith("│"))
    assert "…" not in "".join(lines)
    for tail in ("left.mp4", "right.mp4", "top.mp4"):  # each whole (relative to the inbox), folded not cut
        assert f"a-study-with-a-long-name/participant-0001-session-02-camera-{tail}" in first_column
