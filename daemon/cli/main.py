"""The ``aud`` command line: one sub-command per job, each a small function."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Coroutine
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape

from ..config import DAEMON, MODEL, RUN, ConfigError, Settings, load_settings, options
from ..tools import commands as model_tools  # fetch/export: torch only when run

T = TypeVar("T")
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)  # messages hold [N,98,2]
out = Console(highlight=False, soft_wrap=True)


# --- shared flags ---------------------------------------------------------------------------------

def add_options(p: argparse.ArgumentParser, *groups: str) -> None:
    """The options of ``groups``, each as its ``Settings`` field declares it (``config.OPTIONS``)."""
    for o in options(*groups):
        if o.action == "value":
            typed: dict[str, Any] = {"type": o.type} if o.type is not None else {}
            p.add_argument(o.flag, dest=o.name, choices=o.choices, metavar=o.metavar, help=o.help, **typed)
        else:
            p.add_argument(o.flag, dest=o.name, action="store_const", const=o.action == "on", help=o.help)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML configuration file")
    add_options(p, MODEL)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    add_model_flags(p)
    add_options(p, RUN)


RUN_SETTINGS = tuple(o.name for o in options(MODEL, RUN))
DAEMON_SETTINGS = tuple(o.name for o in options(DAEMON))


def add_daemon_flags(p: argparse.ArgumentParser) -> None:
    """The daemon's folders (``aud run`` and the services that run it)."""
    add_options(p, DAEMON)


def add_socket_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--state", type=Path, help="the daemon's state directory")
    p.add_argument("--socket", type=Path, help="the daemon's socket (default: <state>/aud.sock)")


def settings_from(args: argparse.Namespace, *names: str) -> Settings:
    flags = {n: getattr(args, n, None) for n in names}
    return load_settings(getattr(args, "config", None), **flags)


def socket_path(args: argparse.Namespace) -> Path:
    if args.socket:
        return args.socket
    return settings_from(args, "state").socket_path


# --- commands -------------------------------------------------------------------------------------

def cmd_extract(args: argparse.Namespace) -> int:
    from ..core.models import ModelError
    from ..core.providers import ProviderError
    from ..core.video import VideoError
    from ..jobs.extract import expand, extract
    from ..jobs.plan import TimeSelection

    problem = selection_problem(args.start, args.end, args.every)
    if problem:
        err.print(f"aud extract: {problem}")
        return 2
    settings = settings_from(args, *RUN_SETTINGS)
    videos = expand([Path(v) for v in args.videos])
    if not videos:
        err.print("aud extract: no videos found in " + ", ".join(args.videos))
        return 2
    selection = TimeSelection(args.start or 0.0, args.end, args.every or 1)
    last: dict[int, int] = {}

    def progress(event) -> None:
        from .. import protocol as msg

        if isinstance(event, msg.JobProgress) and event.frames_done != last.get(event.job):
            last[event.job] = event.frames_done
            err.print(f"{event.file}: {event.frames_done}/{event.frames_total} frames")
        elif isinstance(event, msg.JobFailed):
            err.print(f"{event.file}: failed: {event.reason}")

    try:
        report = run_loop(extract(videos, Path(args.output) if args.output else None, settings, selection, progress))
    except (VideoError, ModelError, ProviderError, ValueError) as exc:
        err.print(f"aud extract: {exc}")
        return 2
    for o in report.outcomes:
        if o.csv is not None:
            err.print(f"{o.video.name}: {o.frames} frames in {report.wall_seconds:.1f} s "
                      f"({o.fps:.2f} frames/s) -> {o.csv}")
    failed = [o for o in report.outcomes if o.error]
    for o in failed:
        err.print(f"aud extract: {o.video}: {o.error}")
    return 2 if failed else 0


def selection_problem(start: float | None, end: float | None, every: int | None) -> str | None:
    """Why ``--start``/``--end``/``--every`` select nothing (or nothing sensible), before any video is read."""
    if every is not None and every < 1:
        return f"--every {every}: must be 1 (every frame) or more"
    if start is not None and start < 0:
        return f"--start {start:g}: must be 0 or more (seconds from the beginning)"
    if end is not None and end <= (start or 0.0):
        return (f"--start {start or 0:g} is at or after --end {end:g}: no frames lie between them "
                "(--end is the second to stop at, not a duration)")
    return None


def cmd_models_check(args: argparse.Namespace) -> int:
    from ..core.models import ROLES, ModelError, load_model_set
    from ..core.providers import ProviderError, choose

    settings = settings_from(args, "models", "provider")
    try:
        models = load_model_set(settings.models)
        plan = choose(settings.provider, settings.coreml_cache_dir)
    except (ModelError, ProviderError) as exc:
        err.print(f"aud models check: {exc}")
        check_openface2(settings.models, openface3_complete=False)
        return 2
    out.print(f"model set: {models.directory}")
    for role in ROLES:
        f = models.files[role]
        assert f.signature is not None  # load_model_set reads every signature
        out.print(f"[bold]{role}[/bold]: {escape(str(f.path))}")
        out.print(f"  size: {f.size} bytes   sha256: {f.sha256}")
        out.print("  inputs: " + ", ".join(str(s) for s in f.signature.inputs), markup=False)
        out.print("  outputs: " + ", ".join(str(s) for s in f.signature.outputs), markup=False)
        out.print(f"  provider: {plan.primary}")
    out.print("ok: all three models have the expected signatures")
    return check_openface2(settings.models, openface3_complete=True)


def check_openface2(models_dir: Path, openface3_complete: bool) -> int:
    """The OpenFace 2.2 part of ``aud models check``: its files with their hashes, and which family is
    complete; 2 when its files are there but not whole."""
    from ..tools.openface2_files import OPENFACE2_DIR
    from ..tools.openface2_set import State, fetch_hint, inspect

    status = inspect(models_dir)
    if status.state is not State.ABSENT:
        out.print(f"[bold]openface2[/bold]: {escape(str(status.directory / OPENFACE2_DIR))}"
                  + (f"   source: {escape(status.source)}" if status.source else ""))
        for f in status.files:
            what = (f"{f.size} bytes   sha256: {f.sha256}" + ("   (official)" if f.official else "")
                    if f.size is not None else "missing")
            out.print(f"  {escape(f.path)}   {what}" + (f"   [red]{escape(f.problem)}[/red]" if f.problem else ""))
    out.print(f"family openface3: {'complete' if openface3_complete else 'not complete'}")
    out.print(f"family openface2: {status.state.value}"
              + (f" ({len(status.problems)} problems)" if status.problems else ""))
    if status.state is State.INCOMPLETE:
        err.print(f"aud models check: the OpenFace 2.2 files in {status.directory} are not whole: "
                  f"{'; '.join(status.problems[:3])}; {fetch_hint(status.directory)}")
        return 2
    return 0


def cmd_models_quantize(args: argparse.Namespace) -> int:
    from ..core.models import ModelError
    from ..tools.quantize import QuantizeError, quantize_model_set, usage_hint

    settings = settings_from(args, "models")
    method = args.method or ("static" if args.calibration else "dynamic")
    if method == "dynamic" and not args.method:
        err.print("no --calibration given: dynamic INT8 (static quantisation, calibrated with "
                  "--calibration VIDEO, runs faster on CPU)")
    try:
        result = quantize_model_set(settings.models, args.output, method=method,
                                    calibration_sources=args.calibration, samples=args.samples)
    except (ModelError, QuantizeError, OSError) as exc:
        err.print(f"aud models quantize: {exc}", markup=False)
        return 2
    out.print(f"{result.method} INT8: {result.source} ({result.source_bytes / 1e6:.1f} MB) -> "
              f"{result.output} ({result.output_bytes / 1e6:.1f} MB) in {result.seconds:.1f} s"
              + (f", calibrated on {result.calibration_samples} face crops" if result.calibration_samples else ""),
              markup=False)
    out.print(usage_hint(settings.models, result.output), markup=False)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..core.models import ModelError
    from ..core.providers import ProviderError
    from ..jobs.executor import ExecutorError
    from ..jobs.store import StoreError
    from ..shell.app import AlreadyRunning, Daemon

    settings = settings_from(args, *DAEMON_SETTINGS, *RUN_SETTINGS)
    logging.getLogger().setLevel(getattr(logging, settings.log_level.upper(), logging.INFO)
                                 if not args.verbose else logging.DEBUG)
    try:
        return run_loop(Daemon(settings).run())
    except (AlreadyRunning, StoreError, ModelError, ProviderError, ExecutorError, OSError, ValueError) as exc:
        err.print(f"aud run: {exc}")
        return 2


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """uvloop where it is installed, asyncio's own loop elsewhere."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on macOS and Linux
        import asyncio

        return asyncio.run(coro)
    return uvloop.run(coro)


def _client_call(args: argparse.Namespace, command) -> dict[str, Any]:
    from .client import ClientError, request

    reply = run_loop(request(socket_path(args), command))
    if not reply.ok:
        raise ClientError(reply.error or "the daemon refused the command")
    return reply.data or {}


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from .. import protocol
    from .client import render_status

    data = _client_call(args, protocol.Status()) or {}
    if args.json:
        out.print_json(json.dumps(data))
    else:
        render_status(data, out)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from .client import tail

    run_loop(tail(socket_path(args), out, as_json=args.json))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from .. import protocol

    for path in args.paths:
        data = _client_call(args, protocol.Submit(path=str(Path(path).expanduser().resolve()), force=args.force))
        if data["outcome"] == "duplicate":
            out.print(f"{path}: already job {data['job']} ({data['state']}) with the same models and settings; "
                      f"`aud submit --force` runs it again")
        else:
            out.print(f"{path}: job {data['job']} ({data['outcome']})")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from .. import protocol

    data = _client_call(args, protocol.Cancel(job=args.job))
    out.print(f"job {data['job']}: {data['state']}")
    return 0


def cmd_open(args: argparse.Namespace) -> int:
    """``aud open``: the live page's address with its token, opened in the default browser."""
    from .open import open_page

    return open_page(settings_from(args, "state", "outbox"), socket_path(args), out, err,
                     browse=not args.print_only)


def add_service_run_flags(p: argparse.ArgumentParser) -> None:
    """What a service passes to ``aud run``: the same flag builders."""
    add_run_flags(p)
    add_daemon_flags(p)


SERVICE_GROUPS = (MODEL, RUN, DAEMON)


def service_run_args(args: argparse.Namespace) -> list[str]:
    """The ``aud run`` options given to ``aud launchd|systemd``, as the service's command line (paths
    absolute: a service does not start in this directory)."""
    argv: list[str] = []
    if getattr(args, "config", None) is not None:
        argv += ["--config", os.path.abspath(args.config.expanduser())]
    for o in options(*SERVICE_GROUPS):
        value = getattr(args, o.name, None)
        if value is not None:
            argv += o.argv(value)
    return argv


def service_settings(args: argparse.Namespace) -> Settings:
    """The settings the service will run with (the same flags, config file and AUD_* variables)."""
    return settings_from(args, *(o.name for o in options(*SERVICE_GROUPS)))


def _service_spec(args: argparse.Namespace):
    import platformdirs

    from .service import check_settings, default_spec

    if args.action != "uninstall":
        check_settings(service_settings(args))
    log_dir = args.log_dir or Path(platformdirs.user_log_dir("aud"))
    return default_spec(service_run_args(args), log_dir)


SERVICE_TOOLS = {"launchd": "launchctl", "systemd": "systemctl"}
"""The manager's own command that install and uninstall drive."""


def _service_command(args: argparse.Namespace, runner, render, install, uninstall) -> int:
    from . import service

    tool = SERVICE_TOOLS[args.command]
    if args.action != "print" and runner is None and shutil.which(tool) is None:  # refuse before writing
        other = "systemd" if args.command == "launchd" else "launchd"
        err.print(f"aud {args.command} {args.action}: {tool} is not on this system ({args.command} is "
                  f"{'macOS' if args.command == 'launchd' else 'Linux'}'s service manager); nothing was written. "
                  f"`aud {other} {args.action}` is this system's, if it has {SERVICE_TOOLS[other]}; "
                  f"`aud {args.command} print` shows the file anyway")
        return 2
    try:
        spec = _service_spec(args)
    except service.ServiceSetupError as exc:
        err.print(f"aud {args.command} {args.action}: {exc}")
        return 2
    runner = runner or service.run_command
    if args.action == "print":
        sys.stdout.write(render(spec))
    elif args.action == "install":
        out.print(f"installed and started {install(spec, runner=runner)}", markup=False)
        out.print("it runs: " + shlex.join(spec.program), markup=False)
    else:
        removed = uninstall(spec.label, runner=runner)
        out.print(f"removed {removed}" if removed else "not installed", markup=False)
    return 0


def cmd_launchd(args: argparse.Namespace, runner=None) -> int:
    """``runner``: the CommandRunner that drives launchctl (tests pass a fake)."""
    from . import service

    return _service_command(args, runner, lambda spec: service.launchd_plist(spec).decode(),
                            service.install_launchd, service.uninstall_launchd)


def cmd_systemd(args: argparse.Namespace, runner=None) -> int:
    """``runner``: the CommandRunner that drives systemctl (tests pass a fake)."""
    from . import service

    return _service_command(args, runner, service.systemd_unit, service.install_systemd,
                            service.uninstall_systemd)


def cmd_plot(args: argparse.Namespace) -> int:
    """``aud plot CSV [-o PNG]``: the picture of one result (its hemi-face CSVs are found beside it)."""
    from ..output.plot import PlotError, plot_csv

    try:
        png = plot_csv(Path(args.csv), Path(args.output) if args.output else None)
    except (PlotError, OSError) as exc:
        err.print(f"aud plot: {exc}")
        return 2
    err.print(f"{args.csv} -> {png}")
    return 0


def add_plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw a result CSV as a PNG (AUs, blinks, gaze, head pose, emotion)")
    p.add_argument("csv", help="an aud (or OpenFace 2.2-style) result CSV")
    p.add_argument("-o", "--output", help="the PNG to write (default: the CSV's name with .png)")
    p.set_defaults(func=cmd_plot)


# --- parser ---------------------------------------------------------------------------------------

def aud_version() -> str:
    """The installed distribution's version (the project's own when run from a checkout)."""
    try:
        return metadata.version("au-daemon")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aud", description="Facial Action Unit extraction (OpenFace 3.0).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"aud {aud_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="extract videos to CSVs (one-shot)")
    p.add_argument("videos", nargs="+", help="video files, or folders of videos")
    p.add_argument("-o", "--output", help="the CSV to write (one video), or a folder for the CSVs "
                                          "(default: beside each video)")
    p.add_argument("--start", type=float, help="first second to measure (default: 0)")
    p.add_argument("--end", type=float, help="second to stop at (default: the end)")
    p.add_argument("--every", type=int, help="measure every Nth frame only: a speed switch that breaks "
                                             "frame-by-frame comparability (AU45's baseline, face ids)")
    add_run_flags(p)
    p.set_defaults(func=cmd_extract)

    models = sub.add_parser("models", help="model set handling").add_subparsers(dest="models_command",
                                                                                required=True)
    p = models.add_parser("check", help="check the model set and print its signatures")
    add_model_flags(p)
    p.set_defaults(func=cmd_models_check)
    p = models.add_parser("quantize", help="write an INT8 copy of the STAR landmark model (faster AU45)")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--models", type=Path, help="directory holding the model set")
    p.add_argument("--output", type=Path, help="the file to write (default: <models>/star.int8.onnx)")
    p.add_argument("--calibration", type=Path, action="append", default=[], metavar="FILE",
                   help="a video or image with faces to calibrate on (repeatable; enables static INT8)")
    p.add_argument("--method", choices=("static", "dynamic"),
                   help="static (needs --calibration; the default with it) or dynamic (the default without)")
    p.add_argument("--samples", type=int, default=32, help="face crops to calibrate on (default 32)")
    p.set_defaults(func=cmd_models_quantize)
    p = models.add_parser("fetch", help="download the official OpenFace 3.0 checkpoints and export them")
    model_tools.add_fetch_flags(p)
    p.set_defaults(func=model_tools.fetch_command)
    p = models.add_parser("export", help="export OpenFace 3.0 checkpoints (.pth/.pkl) to the ONNX model set")
    model_tools.add_export_flags(p)
    p.set_defaults(func=model_tools.export_command)

    p = sub.add_parser("run", help="run the daemon in the foreground (what launchd/systemd run)")
    add_run_flags(p)
    add_daemon_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="queue, running jobs, failures and workers")
    add_socket_flags(p)
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tail", help="follow progress live")
    add_socket_flags(p)
    p.add_argument("--json", action="store_true", help="print raw JSON events")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("submit", help="queue videos by path")
    add_socket_flags(p)
    p.add_argument("paths", nargs="+")
    p.add_argument("--force", action="store_true",
                   help="run again even when this video was done with the same models and settings")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("cancel", help="cancel a job")
    add_socket_flags(p)
    p.add_argument("job", type=int)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("open", help="open the live page in the browser (prints its address with the token)")
    add_socket_flags(p)
    p.add_argument("--outbox", type=Path, help="the outbox (its index.html opens when the daemon is not running)")
    p.add_argument("--print-only", action="store_true", help="print the address, do not open a browser")
    p.set_defaults(func=cmd_open)

    for name, func in (("launchd", cmd_launchd), ("systemd", cmd_systemd)):
        p = sub.add_parser(name, help=f"the {name} service: install, uninstall or print",
                           description=f"install|print take the flags of `aud run`: the {name} service "
                                       f"runs `aud run` with them (paths made absolute)")
        p.add_argument("action", choices=("install", "uninstall", "print"))
        add_service_run_flags(p)
        p.add_argument("--log-dir", type=Path, help="where the service's logs go")
        p.set_defaults(func=func)
    add_plot_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("watchdog").setLevel(logging.INFO)
    try:
        return args.func(args)
    except ConfigError as exc:
        err.print(f"aud: {exc}")
        return 2
    except RuntimeError as exc:  # ClientError, ServiceError: already plain words
        err.print(f"aud {args.command}: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
