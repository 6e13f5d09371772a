"""The OpenFace 2.2 part of ``aud models fetch``: arguments in, exit status out (``commands.fetch_command``
calls these; the flags are registered in ``commands.add_fetch_flags``)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from ..config import ConfigError, load_settings
from .fetch import FetchError, terminal_ask
from .fetch import ensure_licence as ensure_openface3_licence
from .fetch_openface2 import LICENCE, cache_dir, ensure_licence, fetch_openface2, is_official, source_url
from .openface2_files import EXPECTED_PATHS, REF
from .openface2_set import InstallError, install


def accept_licence_command(args: argparse.Namespace, err: Console) -> int:
    """Every licence of the families asked for, before anything is downloaded (OpenFace 3.0's first)."""
    try:
        settings = load_settings(args.config)
        if getattr(args, "family", "both") == "both":
            ensure_openface3_licence(settings.state, args.accept_license, terminal_ask(), err.print)
        ensure_licence(LICENCE, settings.state, args.accept_license, terminal_ask(), err.print)
    except (FetchError, ConfigError, OSError) as exc:
        err.print(f"aud models fetch: {exc}")
        return 2
    return 0


def fetch_command(args: argparse.Namespace, err: Console) -> int:
    try:
        settings = load_settings(args.config)
        base = source_url(args.openface2_source)
        cache = cache_dir(base, args.cache)
        err.print(f"OpenFace 2.2 files from {base}" + (f" (tag {REF})" if is_official(base) else ""))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                      transient=False) as bar:
            task = bar.add_task("OpenFace 2.2 files", total=len(EXPECTED_PATHS))
            seen: set[str] = set()

            def progress(path: str, done: int, total: int | None) -> None:
                if total is not None and done >= total and path not in seen:
                    seen.add(path)
                    bar.update(task, completed=len(seen), total=max(len(seen), len(EXPECTED_PATHS)))

            files = fetch_openface2(base, cache, progress, err.print)
        target = args.to or settings.models
        install(target, {f.path: (f.local, str(f.how)) for f in files}, base, is_official(base), err.print)
    except (FetchError, InstallError, ConfigError, ValueError, OSError) as exc:
        err.print(f"aud models fetch: {exc}")
        return 2
    err.print(f"check them with: aud models check --models {target}")
    return 0
