"""launchd / systemd service generation, install and uninstall (no real launchctl/systemctl)."""

from __future__ import annotations

import asyncio
import configparser
import os
import plistlib
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from daemon import cli, protocol
from daemon.cli import service
from daemon.cli.client import request
from daemon.cli.service import (
    LABEL,
    ServiceError,
    ServiceSpec,
    aud_program,
    default_spec,
    install_launchd,
    install_systemd,
    launch_agents_dir,
    launchd_plist,
    systemd_unit,
    systemd_user_dir,
    uninstall_launchd,
    uninstall_systemd,
)
from daemon.config import DAEMON, MODEL, RUN, OptionSpec, options
from tests.conftest import PROJECT, require_shared

UID = os.getuid()


def make_spec(tmp_path: Path, *args: str) -> ServiceSpec:
    return ServiceSpec(
        program=[sys.executable, "-m", "daemon", "run", *args],
        log_dir=tmp_path / "logs",
        environment={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
        working_dir=tmp_path,
    )


class FakeRunner:
    """Records argv; answers with the scripted (returncode, stderr) for a matching verb."""

    def __init__(self, **failures: tuple[int, str]) -> None:
        self.calls: list[list[str]] = []
        self.failures = failures  # verb (argv[1] or argv[2] for systemctl --user) -> (rc, stderr)

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess:
        self.calls.append(list(argv))
        verb = argv[2] if argv[1] == "--user" else argv[1]
        verb = verb.replace("-", "_")
        rc, err = self.failures.get(verb, (0, ""))
        return subprocess.CompletedProcess(argv, rc, stdout="", stderr=err)


NOT_LOADED = (113, 'Could not find service "org.aud.daemon" in domain for user gui: 501')


# --------------------------------------------------------------------------- spec


def test_spec_rejects_relative_program_and_paths(tmp_path: Path) -> None:
    good = make_spec(tmp_path)
    with pytest.raises(ValueError, match="absolute"):
        ServiceSpec(program=["python", "-m", "daemon"], log_dir=good.log_dir,
                    environment={}, working_dir=good.working_dir)
    with pytest.raises(ValueError, match="log_dir"):
        ServiceSpec(program=good.program, log_dir=Path("logs"), environment={}, working_dir=tmp_path)
    with pytest.raises(ValueError, match="label"):
        ServiceSpec(program=good.program, label="../evil", log_dir=good.log_dir,
                    environment={}, working_dir=tmp_path)
    with pytest.raises(ValueError, match="environment"):
        ServiceSpec(program=good.program, log_dir=good.log_dir,
                    environment={"A B": "x"}, working_dir=tmp_path)


def test_default_spec_runs_aud_run_with_the_flags_and_aud_variables(tmp_path: Path) -> None:
    environ = {"PATH": "/custom/bin:/usr/bin", "AUD_SETTLE_SECONDS": "0.5", "HOME": "/h", "AUDIO": "x"}
    spec = default_spec(["--models", "/m", "--workers", "1"], Path("logs"), environ)
    assert spec.program == [*aud_program(), "run", "--models", "/m", "--workers", "1"]
    assert spec.label == LABEL == "org.aud.daemon"
    assert spec.log_dir == Path("logs").absolute()
    # the service gets the installing shell's AUD_* settings, nothing else of its environment
    assert spec.environment == {"PATH": "/custom/bin:/usr/bin", "PYTHONUNBUFFERED": "1",
                                "AUD_SETTLE_SECONDS": "0.5"}
    assert spec.working_dir == Path.home()
    assert (spec.throttle_seconds, spec.exit_timeout_seconds) == (10, 120)


def test_the_service_runs_the_aud_script_beside_the_interpreter(tmp_path: Path) -> None:
    """PyPI's python-daemon installs a top-level package `daemon` too: `python -m daemon` could run it.
    The service runs aud's own entry point, the `aud` script installed beside the interpreter."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text("")
    (bin_dir / "aud").write_text("#!/bin/sh\n")
    (bin_dir / "aud").chmod(0o755)
    assert aud_program(str(python)) == [str(bin_dir / "aud")]
    spec = default_spec(["--workers", "1"], tmp_path, {}, python=str(python))
    assert spec.program == [str(bin_dir / "aud"), "run", "--workers", "1"]
    assert exec_start(systemd_unit(spec)) == spec.program
    assert plistlib.loads(launchd_plist(spec))["ProgramArguments"] == spec.program


def test_without_an_aud_script_the_service_runs_python_m_daemon(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text("")
    assert aud_program(str(python)) == [str(python), "-m", "daemon"]
    (tmp_path / "aud").write_text("not executable")  # a file that cannot be run is not the entry point
    assert default_spec([], tmp_path, {}, python=str(python)).program == [str(python), "-m", "daemon", "run"]


def test_this_environment_has_its_aud_script() -> None:
    """The venv the tests run in was installed with `pip install -e .`: its `aud` script is what services run."""
    script = Path(sys.executable).parent / "aud"
    if not script.is_file():
        pytest.skip(f"{script}: no aud script beside this interpreter (not installed with pip install -e .)")
    assert aud_program() == [str(script)]


def test_default_spec_without_flags(tmp_path: Path) -> None:
    spec = default_spec([], tmp_path, {})
    assert spec.program == [*aud_program(), "run"]
    assert spec.environment == {"PATH": os.defpath, "PYTHONUNBUFFERED": "1"}
    assert spec.stdout_path == tmp_path / "aud.out.log"
    assert spec.stderr_path == tmp_path / "aud.err.log"


def test_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert launch_agents_dir() == tmp_path / "Library" / "LaunchAgents"
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert systemd_user_dir() == tmp_path / ".config" / "systemd" / "user"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert systemd_user_dir() == tmp_path / "xdg" / "systemd" / "user"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")  # XDG: relative values are invalid
    assert systemd_user_dir() == tmp_path / ".config" / "systemd" / "user"


# --------------------------------------------------------------------------- launchd plist


def test_plist_round_trip_has_every_key_with_right_types(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "--config", str(tmp_path / "my config.toml"))
    data = launchd_plist(spec)
    assert data.startswith(b"<?xml")
    plist = plistlib.loads(data)
    expected_types = {
        "Label": str,
        "ProgramArguments": list,
        "RunAtLoad": bool,
        "KeepAlive": dict,
        "ThrottleInterval": int,
        "ExitTimeOut": int,
        "ProcessType": str,
        "WorkingDirectory": str,
        "EnvironmentVariables": dict,
        "StandardOutPath": str,
        "StandardErrorPath": str,
    }
    assert set(plist) == set(expected_types)
    for key, kind in expected_types.items():
        assert type(plist[key]) is kind, key
    assert plist["Label"] == "org.aud.daemon"
    assert plist["ProgramArguments"] == spec.program
    assert plist["RunAtLoad"] is True
    assert plist["ThrottleInterval"] == 10
    assert plist["ExitTimeOut"] == 120
    assert plist["ProcessType"] == "Background"
    assert plist["WorkingDirectory"] == str(tmp_path)
    assert plist["EnvironmentVariables"] == {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    assert plist["StandardOutPath"] == str(tmp_path / "logs" / "aud.out.log")
    assert plist["StandardErrorPath"] == str(tmp_path / "logs" / "aud.err.log")


def test_plist_keepalive_restarts_only_on_unsuccessful_exit(tmp_path: Path) -> None:
    plist = plistlib.loads(launchd_plist(make_spec(tmp_path)))
    # SuccessfulExit=False: relaunch when the job exits non-zero (or by signal), not after exit 0.
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["KeepAlive"]["SuccessfulExit"] is False


def test_plist_paths_are_absolute(tmp_path: Path) -> None:
    plist = plistlib.loads(launchd_plist(make_spec(tmp_path)))
    for value in (plist["ProgramArguments"][0], plist["WorkingDirectory"],
                  plist["StandardOutPath"], plist["StandardErrorPath"]):
        assert Path(value).is_absolute(), value
    assert Path(plist["StandardOutPath"]).parent == Path(plist["StandardErrorPath"]).parent


def test_plist_follows_spec_values(tmp_path: Path) -> None:
    spec = ServiceSpec(program=["/bin/x"], label="org.example.other", log_dir=tmp_path,
                       environment={}, working_dir=tmp_path, throttle_seconds=3,
                       exit_timeout_seconds=45)
    plist = plistlib.loads(launchd_plist(spec))
    assert (plist["Label"], plist["ThrottleInterval"], plist["ExitTimeOut"]) == (
        "org.example.other", 3, 45)
    assert plist["EnvironmentVariables"] == {}


# --------------------------------------------------------------------------- systemd unit


def parse_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case sensitive
    parser.read_string(text)
    return parser


def systemd_split(value: str) -> list[str]:
    """Undo the ExecStart= quoting for the cases generated here (no control characters).
    The executable is not subject to ``$`` expansion, its arguments are."""
    program, *args = [word.replace("%%", "%") for word in shlex.split(value)]
    return [program, *(arg.replace("$$", "$") for arg in args)]


def test_systemd_unit_keys(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    text = systemd_unit(spec)
    unit = parse_unit(text)
    assert unit.sections() == ["Unit", "Service", "Install"]
    assert unit["Unit"]["Description"]
    assert unit["Unit"]["After"] == "default.target"
    svc = unit["Service"]
    assert svc["Type"] == "simple"
    assert systemd_split(svc["ExecStart"]) == spec.program
    assert svc["Restart"] == "on-failure"
    assert svc["RestartSec"] == "10"
    assert svc["TimeoutStopSec"] == "120"
    assert svc["KillSignal"] == "SIGTERM"
    assert svc["WorkingDirectory"] == str(tmp_path)
    assert svc["StandardOutput"] == f"append:{tmp_path / 'logs' / 'aud.out.log'}"
    assert svc["StandardError"] == f"append:{tmp_path / 'logs' / 'aud.err.log'}"
    assert unit["Install"]["WantedBy"] == "default.target"
    environment = [line for line in text.splitlines() if line.startswith("Environment=")]
    assert environment == ['Environment="PATH=/usr/bin:/bin"', 'Environment="PYTHONUNBUFFERED=1"']


def test_systemd_exec_start_quotes_spaces_and_specials(tmp_path: Path) -> None:
    config = tmp_path / "My Config" / 'a "b" $HOME 100%.toml'
    spec = make_spec(tmp_path, "--config", str(config))
    exec_start = parse_unit(systemd_unit(spec))["Service"]["ExecStart"]
    assert systemd_split(exec_start) == spec.program
    assert f'"{tmp_path}/My Config/a \\"b\\" $$HOME 100%%.toml"' in exec_start


def test_systemd_executable_with_spaces_and_specials(tmp_path: Path) -> None:
    program = "/opt/my tools/py 100% $x"
    spec = ServiceSpec(program=[program, "$y"], log_dir=tmp_path, environment={},
                       working_dir=tmp_path)
    exec_start = parse_unit(systemd_unit(spec))["Service"]["ExecStart"]
    assert exec_start == '"/opt/my tools/py 100%% $x" "$$y"'
    assert systemd_split(exec_start) == spec.program


@pytest.mark.parametrize("program", ['/opt/a"b/python', "/opt/a\\b/python", "/opt/a\nb/python"])
def test_systemd_rejects_unrepresentable_executable(tmp_path: Path, program: str) -> None:
    spec = ServiceSpec(program=[program], log_dir=tmp_path, environment={}, working_dir=tmp_path)
    with pytest.raises(ValueError, match="executable"):
        systemd_unit(spec)


def test_systemd_environment_values_are_quoted(tmp_path: Path) -> None:
    spec = ServiceSpec(program=["/bin/x"], log_dir=tmp_path, working_dir=tmp_path,
                       environment={"GREETING": 'hi "there" 50% \\ ok'})
    lines = [line for line in systemd_unit(spec).splitlines() if line.startswith("Environment=")]
    assert lines == ['Environment="GREETING=hi \\"there\\" 50%% \\\\ ok"']


def _verify(unit_path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    runtime = tmp_path / "runtime"
    runtime.mkdir(exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run(["systemd-analyze", "verify", "--user", str(unit_path)],
                          check=False, capture_output=True, text=True, env=env, timeout=60)


def _verify_spec(spec: ServiceSpec, tmp_path: Path) -> tuple[subprocess.CompletedProcess, str]:
    """``systemd-analyze verify`` on the unit written for ``spec``: the result and its whole output (the test
    is skipped where systemd-analyze cannot start its manager)."""
    unit = tmp_path / f"{LABEL}.service"
    unit.write_text(systemd_unit(spec))
    result = _verify(unit, tmp_path)
    output = result.stdout + result.stderr
    if "Failed to initialize manager" in output:
        pytest.skip(f"systemd-analyze cannot run here: {output.strip()}")
    return result, output


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_accepts_unit(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "--config", str(tmp_path / "my dir" / "c 100%.toml"))
    result, output = _verify_spec(spec, tmp_path)
    assert result.returncode == 0, output
    assert "ignoring" not in output and "Failed" not in output, output


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_unquotes_program_path(tmp_path: Path) -> None:
    program = tmp_path / "no such dir" / "py 100% $x"
    spec = ServiceSpec(program=[str(program), "run"], log_dir=tmp_path, environment={},
                       working_dir=tmp_path)
    result, output = _verify_spec(spec, tmp_path)
    assert f"Command {program} is not executable" in output, output


# --------------------------------------------------------------------------- launchd install


def test_install_launchd_writes_plist_and_bootstraps(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    agents = tmp_path / "LaunchAgents"
    runner = FakeRunner(bootout=NOT_LOADED, print=NOT_LOADED)
    path = install_launchd(spec, agents_dir=agents, runner=runner)
    assert path == agents / "org.aud.daemon.plist"
    assert plistlib.loads(path.read_bytes()) == plistlib.loads(launchd_plist(spec))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in agents.iterdir()) == ["org.aud.daemon.plist"]  # no temp left
    assert spec.log_dir.is_dir()
    target = f"gui/{UID}/org.aud.daemon"
    assert runner.calls == [
        ["launchctl", "bootout", target],
        ["launchctl", "print", target],
        ["launchctl", "enable", target],
        ["launchctl", "bootstrap", f"gui/{UID}", str(path)],
    ]


def test_install_launchd_replaces_existing_file(tmp_path: Path) -> None:
    agents = tmp_path / "LaunchAgents"
    agents.mkdir()
    old = agents / "org.aud.daemon.plist"
    old.write_bytes(b"old")
    old.chmod(0o600)
    install_launchd(make_spec(tmp_path), agents_dir=agents, runner=FakeRunner(print=NOT_LOADED))
    assert plistlib.loads(old.read_bytes())["Label"] == LABEL
    assert stat.S_IMODE(old.stat().st_mode) == 0o644


def test_install_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agents = tmp_path / "LaunchAgents"
    agents.mkdir()
    old = agents / "org.aud.daemon.plist"
    old.write_bytes(b"old contents")
    replaced: list[tuple[str, str]] = []

    def failing_replace(src: str, dst: str) -> None:
        replaced.append((str(src), str(dst)))
        raise OSError("disk full")

    monkeypatch.setattr(service.os, "replace", failing_replace)
    runner = FakeRunner()
    with pytest.raises(ServiceError, match="disk full"):
        install_launchd(make_spec(tmp_path), agents_dir=agents, runner=runner)
    assert len(replaced) == 1
    src, dst = replaced[0]
    assert dst == str(old) and Path(src).parent == agents  # temp file next to the target
    assert old.read_bytes() == b"old contents"
    assert [p.name for p in agents.iterdir()] == ["org.aud.daemon.plist"]  # temp cleaned up
    assert runner.calls == []  # nothing loaded when the file could not be written


def test_install_launchd_bootstrap_failure_raises_with_stderr(tmp_path: Path) -> None:
    runner = FakeRunner(print=NOT_LOADED,
                        bootstrap=(5, "Bootstrap failed: 5: Input/output error"))
    with pytest.raises(ServiceError) as info:
        install_launchd(make_spec(tmp_path), agents_dir=tmp_path / "LA", runner=runner)
    message = str(info.value)
    assert "Bootstrap failed: 5: Input/output error" in message
    assert "launchctl bootstrap" in message and "exit 5" in message
    assert runner.calls[-1][:2] == ["launchctl", "bootstrap"]


def test_install_launchd_enable_failure_raises(tmp_path: Path) -> None:
    runner = FakeRunner(print=NOT_LOADED, enable=(1, "Not privileged to enable service."))
    with pytest.raises(ServiceError, match="Not privileged"):
        install_launchd(make_spec(tmp_path), agents_dir=tmp_path / "LA", runner=runner)
    assert [call[1] for call in runner.calls] == ["bootout", "print", "enable"]


def test_missing_launchctl_is_a_service_error(tmp_path: Path) -> None:
    def runner(argv: list[str]) -> subprocess.CompletedProcess:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    with pytest.raises(ServiceError, match="cannot run launchctl"):
        install_launchd(make_spec(tmp_path), agents_dir=tmp_path / "LA", runner=runner)


def test_wait_until_unloaded_polls_while_draining() -> None:
    answers = iter([0, 0, 113])
    calls: list[list[str]] = []
    sleeps: list[float] = []

    def runner(argv: list[str]) -> subprocess.CompletedProcess:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, next(answers), "", "")

    gone = service._wait_until_unloaded(runner, "gui/1/x", 30, sleep=sleeps.append,
                                        clock=lambda: 0.0)
    assert gone is True
    assert calls == [["launchctl", "print", "gui/1/x"]] * 3
    assert len(sleeps) == 2


def test_wait_until_unloaded_gives_up_at_deadline() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    runner = FakeRunner()  # print always succeeds: still loaded
    gone = service._wait_until_unloaded(runner, "gui/1/x", 2.0, sleep=sleep, clock=lambda: now[0])
    assert gone is False
    assert sum(sleeps) == pytest.approx(2.0)


def test_uninstall_launchd(tmp_path: Path) -> None:
    agents = tmp_path / "LaunchAgents"
    path = install_launchd(make_spec(tmp_path), agents_dir=agents, runner=FakeRunner(print=NOT_LOADED))
    runner = FakeRunner()
    assert uninstall_launchd(agents_dir=agents, runner=runner) == path
    assert not path.exists()
    assert runner.calls == [["launchctl", "bootout", f"gui/{UID}/org.aud.daemon"]]


def test_uninstall_launchd_not_installed(tmp_path: Path) -> None:
    runner = FakeRunner(bootout=(3, "Boot-out failed: 3: No such process"))
    assert uninstall_launchd(agents_dir=tmp_path / "none", runner=runner) is None
    assert runner.calls == [["launchctl", "bootout", f"gui/{UID}/org.aud.daemon"]]


# --------------------------------------------------------------------------- systemd install


def test_install_systemd(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    units = tmp_path / "systemd" / "user"
    runner = FakeRunner()
    path = install_systemd(spec, unit_dir=units, runner=runner)
    assert path == units / "org.aud.daemon.service"
    assert path.read_text() == systemd_unit(spec)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in units.iterdir()] == ["org.aud.daemon.service"]
    assert spec.log_dir.is_dir()
    assert runner.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "org.aud.daemon.service"],
    ]


def test_install_systemd_failure_raises_with_stderr(tmp_path: Path) -> None:
    runner = FakeRunner(enable=(1, "Failed to connect to bus: No medium found"))
    with pytest.raises(ServiceError, match="Failed to connect to bus: No medium found"):
        install_systemd(make_spec(tmp_path), unit_dir=tmp_path / "u", runner=runner)


def test_uninstall_systemd(tmp_path: Path) -> None:
    units = tmp_path / "units"
    path = install_systemd(make_spec(tmp_path), unit_dir=units, runner=FakeRunner())
    runner = FakeRunner()
    assert uninstall_systemd(unit_dir=units, runner=runner) == path
    assert not path.exists()
    assert runner.calls == [
        ["systemctl", "--user", "disable", "--now", "org.aud.daemon.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]


def test_uninstall_systemd_not_installed(tmp_path: Path) -> None:
    runner = FakeRunner(disable=(1, "Failed to disable unit: Unit file org.aud.daemon.service does not exist."))
    assert uninstall_systemd(unit_dir=tmp_path / "none", runner=runner) is None
    assert runner.calls == [["systemctl", "--user", "disable", "--now", "org.aud.daemon.service"]]


def test_run_command_captures_output() -> None:
    result = service.run_command([sys.executable, "-c", "import sys; print('o'); sys.exit(3)"])
    assert (result.returncode, result.stdout) == (3, "o\n")


# --------------------------------------------------------------------------- the services carry the run's settings


@pytest.fixture
def service_home(monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HOME (short, under /tmp: the daemon's socket path must fit AF_UNIX's ~104 bytes) with
    no AUD_* variables and no XDG overrides, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="aud-svc-", dir="/tmp"))
    for key in [k for k in os.environ if k.startswith(("AUD_", "XDG_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(root / "home"))
    (root / "home").mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run_cli(argv: list[str], runner: FakeRunner | None = None) -> int:
    """``aud ARGV`` in process, the service commands driving ``runner`` instead of launchctl/systemctl."""
    args = cli.build_parser().parse_args(argv)
    return args.func(args, runner=runner) if runner is not None else args.func(args)


def sample(option: OptionSpec) -> list[str]:
    """The option as a user types it, with a value its type takes."""
    if option.action != "value":
        return [option.flag]
    if option.choices:
        return [option.flag, option.choices[-1]]
    if option.type is Path:
        return [option.flag, f"/abs/{option.name}"]
    return [option.flag, "tcp://h:1" if option.type is None and option.name == "dask_scheduler" else
            "cpu" if option.type is None else "3"]


@pytest.mark.parametrize("option", options(MODEL, RUN, DAEMON), ids=lambda o: o.flag)
def test_every_run_option_reaches_the_service_command_line(option: OptionSpec) -> None:
    """The one option table: each `aud run` option parses the same under `aud launchd|systemd` and comes
    back out as the service's command line, unchanged."""
    argv = sample(option)
    run_args = cli.build_parser().parse_args(["run", *argv])
    for manager in ("launchd", "systemd"):
        service_args = cli.build_parser().parse_args([manager, "print", *argv])
        assert getattr(service_args, option.name) == getattr(run_args, option.name) is not None
        assert cli.service_run_args(service_args) == argv


def test_print_shows_the_command_line_with_the_run_flags(service_home: Path, tiny_models: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tiny_models.parent)
    monkeypatch.setenv("AUD_SETTLE_SECONDS", "0.5")
    config = tiny_models.parent / "c.toml"
    config.write_text("rescan_seconds = 5\n")
    flags = ["--models", "models", "--inbox", "~/in", "--outbox", "out", "--state", "st", "--workers", "1",
             "--provider", "cpu", "--no-au45", "--detect-max-side", "640", "--batch-size", "2",
             "--threads-per-worker", "1", "--config", "c.toml"]
    here = tiny_models.parent
    expected = ["--config", str(config), "--models", str(tiny_models), "--provider", "cpu", "--workers", "1",
                "--no-au45", "--detect-max-side", "640", "--batch-size", "2", "--threads-per-worker", "1",
                "--inbox", str(service_home / "home" / "in"), "--outbox", str(here / "out"),
                "--state", str(here / "st")]
    assert run_cli(["launchd", "print", *flags]) == 0
    plist = plistlib.loads(capsys.readouterr().out.encode())
    assert plist["ProgramArguments"] == [*aud_program(), "run", *expected]
    assert plist["EnvironmentVariables"]["AUD_SETTLE_SECONDS"] == "0.5"
    assert run_cli(["systemd", "print", *flags]) == 0
    unit = capsys.readouterr().out
    assert exec_start(unit) == [*aud_program(), "run", *expected]
    assert 'Environment="AUD_SETTLE_SECONDS=0.5"' in unit.splitlines()
    # the command line is exactly what `aud run` parses: the same settings
    run_args = cli.build_parser().parse_args(["run", *expected])
    service_args = cli.build_parser().parse_args(["launchd", "print", *flags])
    assert cli.service_settings(service_args) == cli.settings_from(
        run_args, "inbox", "outbox", "state", "models", "workers", "provider", "au45", "detect_max_side",
        "batch_size", "threads_per_worker")


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_install_refuses_a_missing_or_empty_models_directory(manager: str, service_home: Path,
                                                             capsys) -> None:
    empty = service_home / "empty"
    empty.mkdir()
    for models, problem in ((service_home / "nowhere", "model directory not found"),
                            (empty, "file not found")):
        for action in ("install", "print"):
            runner = FakeRunner()
            assert run_cli([manager, action, "--models", str(models)], runner) == 2
            message = " ".join(capsys.readouterr().err.split())
            assert message.startswith(f"aud {manager} {action}: ") and problem in message, message
            assert f"aud models fetch --accept-license --to {models}" in message, message
            assert runner.calls == []  # nothing installed, nothing started
    assert not (service_home / "home" / "Library").exists() and not (service_home / "home" / ".config").exists()


def test_install_refuses_an_unknown_provider(service_home: Path, tiny_models: Path, capsys) -> None:
    runner = FakeRunner()
    assert run_cli(["systemd", "install", "--models", str(tiny_models), "--provider", "tpu"], runner) == 2
    assert "tpu" in capsys.readouterr().err
    assert runner.calls == []


def test_uninstall_needs_no_models(service_home: Path) -> None:
    runner = FakeRunner(disable=(1, "not loaded"))
    assert run_cli(["systemd", "uninstall", "--models", str(service_home / "nowhere")], runner) == 0
    assert runner.calls == [["systemctl", "--user", "disable", "--now", "org.aud.daemon.service"]]


def exec_start(unit: str) -> list[str]:
    """ExecStart= of a unit as argv: shell-like words; systemd's "$$" and "%%" unescaped."""
    line = next(v for k, _, v in (x.partition("=") for x in unit.splitlines()) if k == "ExecStart")
    return [w.replace("$$", "$").replace("%%", "%") for w in shlex.split(line)]


def installed_command(manager: str, home: Path) -> tuple[list[str], dict[str, str], Path]:
    """argv, environment and working directory of the service file installed under ``home``."""
    if manager == "launchd":
        plist = plistlib.loads((home / "Library" / "LaunchAgents" / f"{LABEL}.plist").read_bytes())
        return plist["ProgramArguments"], plist["EnvironmentVariables"], Path(plist["WorkingDirectory"])
    unit = (home / ".config" / "systemd" / "user" / f"{LABEL}.service").read_text()
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read_string(unit)
    environment = dict(shlex.split(v)[0].split("=", 1) for k, v in
                       (x.partition("=")[::2] for x in unit.splitlines()) if k == "Environment")
    return exec_start(unit), environment, Path(parser["Service"]["WorkingDirectory"])


class Appeared(FileSystemEventHandler):
    """Sets ``event`` when ``path`` is created (an inotify/FSEvents event, no polling)."""

    def __init__(self, path: Path, event: threading.Event) -> None:
        self.path, self.event = os.path.realpath(path), event  # macOS reports /tmp as /private/tmp

    def on_created(self, event) -> None:
        if os.path.realpath(event.src_path) == self.path:
            self.event.set()


@pytest.fixture
def started():
    """Factory: Popen a command in its own session; killed (with its workers) if it outlives the test."""
    procs: list[subprocess.Popen] = []

    def start(argv, **kw) -> subprocess.Popen:
        procs.append(subprocess.Popen(argv, start_new_session=True, **kw))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def ready_status(socket_path: Path):
    """The status once the daemon is ready: subscribed first (its reply received), so a daemon_ready
    event published while the status is asked is not missed."""
    from tests.e2e.daemonproc import Subscriber

    sub = Subscriber(socket_path)
    try:
        sub.wait_for(lambda e: e["type"] == "reply", 30)
        reply = asyncio.run(request(socket_path, protocol.Status(), timeout=30))
        if reply.ok and reply.data["state"] == "starting":
            sub.wait_for(lambda e: e["type"] == "daemon_ready", 120)
            reply = asyncio.run(request(socket_path, protocol.Status(), timeout=30))
    finally:
        sub.close()
    return reply


@pytest.mark.slow
@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_the_installed_service_starts_and_reaches_ready(manager: str, service_home: Path, started,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Install (fake launchctl/systemctl, temporary HOME) with the models given as an install option,
    then run the installed command line for real: its socket answers `status`, SIGTERM ends it with 0."""
    require_shared("models/openface3/retinaface.onnx", "models/openface3/mtl.onnx", "models/openface3/star.onnx")
    monkeypatch.chdir(PROJECT)
    home, inbox, outbox, state = (service_home / n for n in ("home", "inbox", "outbox", "state"))
    runner = FakeRunner(bootout=NOT_LOADED, print=NOT_LOADED)
    assert run_cli([manager, "install", "--models", "../shared/models/openface3", "--inbox", str(inbox),
                    "--outbox", str(outbox), "--state", str(state), "--workers", "1", "--provider", "cpu",
                    "--log-dir", str(service_home / "logs")], runner) == 0
    argv, environment, cwd = installed_command(manager, home)
    models = Path(os.path.abspath(PROJECT / ".." / "shared" / "models" / "openface3"))
    assert argv[argv.index("--models") + 1] == str(models)  # absolute: the service starts elsewhere

    socket_path = state / "aud.sock"
    state.mkdir(mode=0o700)  # watched before the daemon starts, so its socket's creation is seen
    ready = threading.Event()
    observer = Observer()
    observer.schedule(Appeared(socket_path, ready), str(state))
    observer.start()
    log = (service_home / "daemon.log").open("w")
    try:
        proc = started(argv, env={**environment, "HOME": str(home)}, cwd=cwd, stdout=log, stderr=log)
        threading.Thread(target=lambda: (proc.wait(), ready.set()), daemon=True).start()  # or it exits
        assert ready.wait(120), "no socket within 120 s"
    finally:
        observer.stop()
        observer.join()
        log.close()
    output = (service_home / "daemon.log").read_text()
    assert proc.poll() is None, f"the service exited {proc.returncode}:\n{output}"
    reply = ready_status(socket_path)
    assert reply.ok and reply.data["state"] == "ready" and reply.data["workers"]["count"] == 1, reply
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 0, (service_home / "daemon.log").read_text()
