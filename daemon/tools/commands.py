"""The ``aud models fetch`` and ``aud models export`` commands: arguments in, exit status out.
``daemon/cli/main.py`` only registers the flags and calls :func:`fetch_command` / :func:`export_command`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from ..config import ConfigError, load_settings
from ..core.provenance import EXPORT_INSTALL

err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
FAMILIES = ("openface3", "openface2", "both")


def add_fetch_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", type=Path, help="model directory to write (default: the configured models directory)")
    p.add_argument("--accept-license", action="store_true",
                   help="accept the licence terms of the model families fetched (OpenFace 3.0, OpenFace 2.2)")
    p.add_argument("--source", help="base URL of the checkpoints: http(s)://… mirror or file://… folder "
                                    "(default: $AUD_WEIGHTS_URL, else Hugging Face nutPace/openface_weights)")
    p.add_argument("--cache", type=Path, help="where the downloaded checkpoints are kept")
    p.add_argument("--family", choices=FAMILIES, default="both",
                   help="which models to fetch: openface3 (the ONNX set), openface2 (OpenFace 2.2.0's AU "
                        "files) or both (default)")
    p.add_argument("--openface2-source", help="base URL of the OpenFace 2.2 files, laid out at OpenFace's "
                                              "repository paths with a SHA256SUMS at its root: http(s)://… "
                                              "or file://… (default: $AUD_OPENFACE2_URL, else GitHub "
                                              "TadasBaltrusaitis/OpenFace at OpenFace_2.2.0)")
    p.add_argument("--allow-redirect", action="append", default=[], metavar="ORIGIN",
                   help="another origin (https://host[:port]) the source may redirect to; by default redirects "
                        "stay on the source's own origin")
    p.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="give up a fetch that takes longer than this (default: 3 hours)")
    p.add_argument("--image", type=Path, help="picture with a face to verify the export on")
    p.add_argument("--config", type=Path, help="TOML configuration file")


def add_export_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source_dir", type=Path, required=True,
                   help="folder holding Alignment_RetinaFace.pth, MTL_backbone.pth and Landmark_98.pkl")
    p.add_argument("--to", type=Path, help="model directory to write (default: the configured models directory)")
    p.add_argument("--image", type=Path, help="picture with a face to verify the export on")
    p.add_argument("--config", type=Path, help="TOML configuration file")


def _image(path: Path | None):
    if path is None:
        return None
    import cv2

    image = cv2.imread(str(path))
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return image


def _say(text: str) -> None:
    err.print(text)


def _torch_missing() -> str | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return f"PyTorch is not installed; install the export extra from aud's folder: {EXPORT_INSTALL}"
    return None


def export_command(args: argparse.Namespace) -> int:
    if problem := _torch_missing():
        err.print(f"aud models export: {problem}")
        return 2
    from .checkpoints import CheckpointError
    from .export import ExportError, export_set

    try:
        target = args.to or load_settings(args.config).models
        report = export_set(args.source_dir, target, image=_image(args.image), say=_say)
    except (CheckpointError, ExportError, ConfigError, ValueError, OSError) as exc:
        err.print(f"aud models export: {exc}")
        return 2
    err.print(f"model set written to {report.directory}; check it with: aud models check --models "
              f"{report.directory}")
    return 0


def fetch_command(args: argparse.Namespace) -> int:
    """``aud models fetch``: the families asked for (every licence accepted before anything is downloaded)."""
    family = getattr(args, "family", "both")
    if family != "openface3":
        from .commands_openface2 import accept_licence_command

        if status := accept_licence_command(args, err):
            return status
    if family != "openface2" and (status := _fetch_openface3(args)):
        return status
    if family != "openface3":
        from .commands_openface2 import fetch_command as fetch_openface2_command

        return fetch_openface2_command(args, err)
    return 0


def _fetch_openface3(args: argparse.Namespace) -> int:
    if problem := _torch_missing():
        err.print(f"aud models fetch: {problem}")
        return 2
    from .checkpoints import CheckpointError
    from .export import ExportError, Source, SourceFile, check_replaceable, export_set, provenance_of
    from .fetch import (
        REVISION,
        FetchError,
        Limits,
        cache_dir,
        ensure_licence,
        fetch_checkpoints,
        is_official,
        origin,
        source_url,
        terminal_ask,
    )

    try:
        settings = load_settings(args.config)
        target = Path(args.to or settings.models).expanduser().absolute()
        check_replaceable(target)  # before anything is downloaded: the export would refuse it after
        base = source_url(args.source)
        ensure_licence(settings.state, args.accept_license, terminal_ask(), _say)
        cache = cache_dir(base, args.cache)
        err.print(f"checkpoints from {base}")
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=err, transient=False) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(name: str, done: int, total: int | None) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=done, total=total)

            limits = Limits(allowed_origins=frozenset(origin(o) for o in args.allow_redirect))
            if args.deadline is not None:
                limits = Limits(deadline_seconds=args.deadline, allowed_origins=limits.allowed_origins)
            files = fetch_checkpoints(base, cache, progress, _say, limits=limits)
        source = Source(base, REVISION if is_official(base) else None,
                        tuple(SourceFile(f.spec.role, f.spec.filename, f.sha256, f.size, f.verified) for f in files))
        report = export_set(cache, target, source=source, image=_image(args.image), say=_say)
    except (FetchError, CheckpointError, ExportError, ConfigError, ValueError, OSError) as exc:
        err.print(f"aud models fetch: {exc}")
        return 2
    err.print(f"models ready in {report.directory}: {provenance_of(source)}")
    err.print(f"next: aud run --models {report.directory}   (or aud extract VIDEO --models {report.directory})")
    return 0
