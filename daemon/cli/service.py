"""Run ``aud`` as a per-user service: a launchd agent on macOS, a systemd user unit on Linux.

The service runs aud's own entry point (the ``aud`` script beside the interpreter; ``python -m daemon``
only where there is none: PyPI's ``python-daemon`` installs a package of the same name, ``daemon``) with
``run`` and the flags ``aud launchd|systemd install`` was given (the
same flags as ``aud run``, paths made absolute) and the installing shell's ``AUD_*`` variables, so the
file shows everything that shapes the run; ``check_settings`` refuses settings it could not start with.
Generation is pure (spec in, document out). Installing writes the file atomically and then
drives ``launchctl`` / ``systemctl --user`` through one seam, a ``CommandRunner``, which tests
replace with a fake that records argv.
"""

from __future__ import annotations

import os
import plistlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.atomic import atomic_write

if TYPE_CHECKING:
    from ..config import Settings

LABEL = "org.aud.daemon"
AUD_ENV_PREFIX = "AUD_"
STDOUT_LOG = "aud.out.log"
STDERR_LOG = "aud.err.log"
FILE_MODE = 0o644

_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters an ExecStart= word may contain without quoting.
_SYSTEMD_BARE_RE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_POLL_SECONDS = 0.5

CommandRunner = Callable[[list[str]], subprocess.CompletedProcess]


class ServiceError(RuntimeError):
    """launchctl/systemctl failed, or the service file could not be written."""


class ServiceSetupError(ServiceError):
    """The settings the service would run with cannot work (no models there, no such provider)."""


@dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    """What the service runs and how the service manager should treat it."""

    program: list[str]
    label: str = LABEL
    log_dir: Path
    environment: dict[str, str]
    working_dir: Path
    throttle_seconds: int = 10
    exit_timeout_seconds: int = 120  # long enough to checkpoint on SIGTERM

    def __post_init__(self) -> None:
        if not self.program or not os.path.isabs(self.program[0]):
            raise ValueError(f"program must start with an absolute path: {self.program!r}")
        _check_label(self.label)
        for name in ("log_dir", "working_dir"):
            if not Path(getattr(self, name)).is_absolute():
                raise ValueError(f"{name} must be absolute: {getattr(self, name)}")
        for key in self.environment:
            if not _ENV_NAME_RE.fullmatch(key):
                raise ValueError(f"invalid environment variable name: {key!r}")
        if self.throttle_seconds < 0 or self.exit_timeout_seconds <= 0:
            raise ValueError("throttle_seconds must be >= 0 and exit_timeout_seconds > 0")

    @property
    def stdout_path(self) -> Path:
        return Path(self.log_dir) / STDOUT_LOG

    @property
    def stderr_path(self) -> Path:
        return Path(self.log_dir) / STDERR_LOG


def _check_label(label: str) -> None:
    if not _LABEL_RE.fullmatch(label):
        raise ValueError(f"invalid service label: {label!r}")


def aud_program(python: str | None = None) -> list[str]:
    """The command that starts aud from ``python`` (default: this interpreter): the ``aud`` script installed
    beside it, which imports aud's own ``daemon.cli``; else ``python -m daemon``, which would run whatever
    package named ``daemon`` comes first on the path (PyPI's ``python-daemon`` installs one)."""
    python = python or sys.executable
    script = Path(python).parent / "aud"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [python, "-m", "daemon"]


def default_spec(run_args: Sequence[str], log_dir: Path, environ: Mapping[str, str] | None = None,
                 python: str | None = None) -> ServiceSpec:
    """The spec for this interpreter (or ``python``): ``aud run RUN_ARGS`` (:func:`aud_program`; RUN_ARGS: the
    flags ``aud run`` takes, paths absolute), with ``PATH``, ``PYTHONUNBUFFERED`` and the ``AUD_*`` settings
    of ``environ`` (default: this process's environment), so the service runs what ``aud run RUN_ARGS``
    runs in this shell."""
    environ = os.environ if environ is None else environ
    environment = {
        "PATH": environ.get("PATH") or os.defpath,
        "PYTHONUNBUFFERED": "1",
    }
    environment.update({k: v for k, v in sorted(environ.items()) if k.startswith(AUD_ENV_PREFIX)})
    return ServiceSpec(
        program=[*aud_program(python), "run", *run_args],
        log_dir=Path(log_dir).expanduser().absolute(),
        environment=environment,
        working_dir=Path.home(),
    )


def check_settings(settings: Settings) -> None:
    """Refuse a service that could not start: the checks ``aud run`` makes first — the model files are
    where the settings say (``daemon.core.models.locate``) and the execution provider exists — with the
    fix in the message. A service that exits at start is restarted every ``throttle_seconds``, forever."""
    from ..core.models import ModelError, locate
    from ..core.pipeline import roles_for
    from ..core.providers import ProviderError, choose

    try:
        locate(settings.models, roles_for(settings.au45))
    except ModelError as exc:
        message = str(exc)
        if "aud models fetch" not in message:
            message += (f"; to get a model set there: aud models fetch --accept-license --to "
                        f"{settings.models} (or point --models at a directory holding one)")
        raise ServiceSetupError(message) from exc
    try:
        choose(settings.provider, settings.coreml_cache_dir)
    except ProviderError as exc:
        raise ServiceSetupError(str(exc)) from exc


# --------------------------------------------------------------------------- generation


def launchd_plist(spec: ServiceSpec) -> bytes:
    """The launchd agent property list (XML)."""
    document = {
        "Label": spec.label,
        "ProgramArguments": list(spec.program),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restart only after an unsuccessful exit
        "ThrottleInterval": spec.throttle_seconds,
        "ExitTimeOut": spec.exit_timeout_seconds,
        "ProcessType": "Background",
        "WorkingDirectory": str(spec.working_dir),
        "EnvironmentVariables": dict(spec.environment),
        "StandardOutPath": str(spec.stdout_path),
        "StandardErrorPath": str(spec.stderr_path),
    }
    return plistlib.dumps(document, fmt=plistlib.FMT_XML, sort_keys=False)


def systemd_unit(spec: ServiceSpec) -> str:
    """The systemd user unit (``<label>.service``)."""
    program, *args = spec.program
    exec_start = " ".join([_systemd_executable(program), *map(_systemd_exec_word, args)])
    environment = [
        f"Environment={_systemd_quoted(f'{key}={value}')}"
        for key, value in spec.environment.items()
    ]
    lines = [
        "[Unit]",
        "Description=aud: facial Action Unit extraction daemon",
        "After=default.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        f"RestartSec={spec.throttle_seconds}",
        f"TimeoutStopSec={spec.exit_timeout_seconds}",
        "KillSignal=SIGTERM",
        # SIGTERM to the main process only; it stops its own workers while checkpointing.
        "KillMode=mixed",
        *environment,
        f"WorkingDirectory={_systemd_path(spec.working_dir)}",
        f"StandardOutput=append:{_systemd_path(spec.stdout_path)}",
        f"StandardError=append:{_systemd_path(spec.stderr_path)}",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    return "\n".join(lines) + "\n"


def _systemd_escape(text: str) -> str:
    """C-style escapes for a double-quoted systemd word; ``%`` doubled (specifiers)."""
    out = []
    for char in text:
        if char in '\\"':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    return "".join(out)


def _systemd_quoted(text: str) -> str:
    return f'"{_systemd_escape(text)}"'


def _systemd_executable(program: str) -> str:
    """The ExecStart= executable: never ``$``-expanded, and systemd rejects quotes,
    backslashes and control characters in it outright."""
    if any(char in '"\\' or ord(char) < 0x20 or ord(char) == 0x7F for char in program):
        raise ValueError(f"systemd cannot run an executable with this path: {program!r}")
    if _SYSTEMD_BARE_RE.fullmatch(program):
        return program.replace("%", "%%")
    return _systemd_quoted(program)


def _systemd_exec_word(arg: str) -> str:
    """One ExecStart= argument: ``$`` and ``%`` escaped, quoted unless plainly safe."""
    escaped = arg.replace("$", "$$")
    if _SYSTEMD_BARE_RE.fullmatch(escaped):
        return escaped.replace("%", "%%")
    return _systemd_quoted(escaped)


def _systemd_path(path: Path) -> str:
    """A path value (not unquoted by systemd): only specifiers need escaping."""
    text = str(path)
    if any(ord(char) < 0x20 for char in text):
        raise ValueError(f"path cannot be written into a systemd unit: {text!r}")
    return text.replace("%", "%%")


# --------------------------------------------------------------------------- locations


def launch_agents_dir() -> Path:
    """``~/Library/LaunchAgents``."""
    return Path.home() / "Library" / "LaunchAgents"


def systemd_user_dir() -> Path:
    """``$XDG_CONFIG_HOME/systemd/user``, else ``~/.config/systemd/user``."""
    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config_home) if os.path.isabs(config_home) else Path.home() / ".config"
    return base / "systemd" / "user"


# --------------------------------------------------------------------------- commands


def run_command(argv: list[str]) -> subprocess.CompletedProcess:
    """Run argv, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _call(runner: CommandRunner, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    """Run through the seam; a failure (when checked) becomes a ServiceError with its stderr."""
    try:
        result = runner(argv)
    except OSError as exc:
        raise ServiceError(f"cannot run {argv[0]}: {exc}") from exc
    if check and result.returncode != 0:
        output = (result.stderr or "").strip() or (result.stdout or "").strip() or "no output"
        raise ServiceError(f"`{' '.join(argv)}` failed (exit {result.returncode}): {output}")
    return result


def _write_atomic(path: Path, data: bytes) -> None:
    """Write data to path with ``core.atomic`` (the one atomic writer), mode 0644."""
    def write(handle) -> None:
        handle.write(data)
        os.fchmod(handle.fileno(), FILE_MODE)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc}") from exc


def _remove(path: Path) -> Path | None:
    """Remove path if present; return it, or None when there was nothing."""
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ServiceError(f"cannot remove {path}: {exc}") from exc
    return path


def _make_log_dir(spec: ServiceSpec) -> None:
    try:
        Path(spec.log_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(f"cannot create log directory {spec.log_dir}: {exc}") from exc


# --------------------------------------------------------------------------- launchd


def _gui_domain() -> str:
    return f"gui/{os.getuid()}"


def _wait_until_unloaded(
    runner: CommandRunner,
    target: str,
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Poll ``launchctl print`` until launchd forgets target (a bootout drains for up to
    ExitTimeOut; bootstrapping before that fails with EIO). True once it is gone."""
    deadline = clock() + timeout
    while _call(runner, ["launchctl", "print", target], check=False).returncode == 0:
        if clock() >= deadline:
            return False
        sleep(_POLL_SECONDS)
    return True


def install_launchd(
    spec: ServiceSpec, *, agents_dir: Path | None = None, runner: CommandRunner = run_command
) -> Path:
    """Write ``<agents_dir>/<label>.plist`` and (re)load it in the user's GUI domain.

    Order: bootout (ignored if not loaded), wait until unloaded, enable (a disabled label
    cannot be bootstrapped), bootstrap. Returns the plist path.
    """
    path = (agents_dir or launch_agents_dir()) / f"{spec.label}.plist"
    _write_atomic(path, launchd_plist(spec))
    _make_log_dir(spec)
    domain = _gui_domain()
    target = f"{domain}/{spec.label}"
    _call(runner, ["launchctl", "bootout", target], check=False)
    _wait_until_unloaded(runner, target, spec.exit_timeout_seconds + 10)
    _call(runner, ["launchctl", "enable", target])
    _call(runner, ["launchctl", "bootstrap", domain, str(path)])
    return path


def uninstall_launchd(
    label: str = LABEL, *, agents_dir: Path | None = None, runner: CommandRunner = run_command
) -> Path | None:
    """Boot the agent out (ignored if not loaded) and remove its plist; its path or None."""
    _check_label(label)
    path = (agents_dir or launch_agents_dir()) / f"{label}.plist"
    _call(runner, ["launchctl", "bootout", f"{_gui_domain()}/{label}"], check=False)
    return _remove(path)


# --------------------------------------------------------------------------- systemd


def install_systemd(
    spec: ServiceSpec, *, unit_dir: Path | None = None, runner: CommandRunner = run_command
) -> Path:
    """Write ``<unit_dir>/<label>.service``, reload, enable and start it. Returns the path."""
    path = (unit_dir or systemd_user_dir()) / f"{spec.label}.service"
    _write_atomic(path, systemd_unit(spec).encode("utf-8"))
    _make_log_dir(spec)
    _call(runner, ["systemctl", "--user", "daemon-reload"])
    _call(runner, ["systemctl", "--user", "enable", "--now", path.name])
    return path


def uninstall_systemd(
    label: str = LABEL, *, unit_dir: Path | None = None, runner: CommandRunner = run_command
) -> Path | None:
    """Disable and stop (ignored if not loaded), remove the unit, reload; its path or None."""
    _check_label(label)
    path = (unit_dir or systemd_user_dir()) / f"{label}.service"
    _call(runner, ["systemctl", "--user", "disable", "--now", path.name], check=False)
    removed = _remove(path)
    if removed is not None:
        _call(runner, ["systemctl", "--user", "daemon-reload"])
    return removed
