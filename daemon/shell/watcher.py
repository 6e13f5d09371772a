"""Inbox watcher: notices videos dropped into the inbox and hands over complete ones.

File-system events (watchdog: inotify on Linux, FSEvents on macOS) and periodic
rescans both feed one funnel, :meth:`InboxWatcher._consider`. Each candidate gets a
per-path settle task that waits until the file's ``(size, mtime_ns)`` has been still
for ``settle_seconds`` and ``can_open(path)`` agrees, then awaits ``on_ready(path)``
once for that file version. Nothing here knows how a video is decoded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import watchdog.observers
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver

__all__ = ["InboxWatcher", "NotTaken", "is_candidate"]

log = logging.getLogger("aud.watcher")

Signature = tuple[int, int]  # (st_size, st_mtime_ns)

_TEMP_SUFFIXES = (".part", ".crdownload", ".download", ".tmp")
_OBSERVER_JOIN_SECONDS = 5.0


class NotTaken(Exception):  # noqa: N818 (an outcome, not a fault)
    """Raised by ``on_ready`` when the file could not be taken now (the reason already reported): the
    watcher considers it again on the next rescan."""


# --------------------------------------------------------------------------- filtering


def normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """``(".MP4", "mov")`` -> ``{"mp4", "mov"}``."""
    return frozenset(e.lower().lstrip(".") for e in extensions if e.strip("."))


def _relative_parts(path: Path, inbox: Path) -> tuple[str, ...] | None:
    """Components of ``path`` below ``inbox``, or None if it is not strictly inside."""
    try:
        parts = path.relative_to(inbox).parts
    except ValueError:
        return None
    return parts or None


def _is_temporary_name(name: str) -> bool:
    """Names used by Finder, browsers and editors for files still being written."""
    lower = name.lower()
    return (
        name == ".DS_Store"
        or name.startswith(("._", "~"))
        or lower.endswith(_TEMP_SUFFIXES)
    )


def _crosses_symlinked_dir(inbox: Path, parts: tuple[str, ...]) -> bool:
    """True if a directory between ``inbox`` and the file is a symlink."""
    current = inbox
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            return True
    return False


def _is_regular_file(path: Path, follow_symlinks: bool) -> bool:
    """Regular file test; a symlink counts only when followed to a regular file."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            if not follow_symlinks:
                return False
            st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode)


def is_candidate(path: Path, inbox: Path, extensions: Iterable[str], follow_symlinks: bool) -> bool:
    """True if ``path`` is a regular video file in ``inbox`` worth watching.

    Rejects hidden components (so ``.done/`` and ``.failed/`` are never watched),
    temporary download names, other extensions, directories, and symlinks unless
    ``follow_symlinks`` (then only those resolving to a regular file).
    """
    parts = _relative_parts(path, inbox)
    if parts is None or any(p.startswith(".") for p in parts):
        return False
    name = parts[-1]
    if _is_temporary_name(name):
        return False
    allowed = extensions if isinstance(extensions, frozenset) else normalise_extensions(extensions)
    if Path(name).suffix.lower().lstrip(".") not in allowed:
        return False
    if not follow_symlinks and _crosses_symlinked_dir(inbox, parts):
        return False
    return _is_regular_file(path, follow_symlinks)


def file_signature(path: Path) -> Signature | None:
    """``(size, mtime_ns)`` of a regular file, or None if it is gone (or not a file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


def walk_candidates(
    root: Path, inbox: Path, extensions: frozenset[str], follow_symlinks: bool
) -> list[Path]:
    """All candidates under ``root`` (blocking; run it in a thread). Skips hidden dirs."""
    found: list[Path] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
        if follow_symlinks:  # guard against symlink loops
            real = os.path.realpath(dirpath)
            if real in seen_dirs:
                dirnames[:] = []
                continue
            seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if is_candidate(path, inbox, extensions, follow_symlinks):
                found.append(path)
    return found


# --------------------------------------------------------------------------- events


class _EventHandler(FileSystemEventHandler):
    """Runs in the observer thread; forwards file paths to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: Callable[[Path], None]) -> None:
        self._loop = loop
        self._sink = sink

    def _forward(self, raw: bytes | str) -> None:
        try:
            self._loop.call_soon_threadsafe(self._sink, Path(os.fsdecode(raw)))
        except RuntimeError:  # loop closed while the observer was stopping
            pass

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._forward(event.src_path)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._forward(event.src_path)

    def on_attrib(self, event: FileSystemEvent) -> None:  # e.g. touch / utime
        if not event.is_directory:
            self._forward(event.src_path)

    def on_closed(self, event: FileSystemEvent) -> None:  # closed after writing
        if not event.is_directory:
            self._forward(event.src_path)

    def on_moved(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._forward(event.dest_path)


# --------------------------------------------------------------------------- watcher


@dataclass
class _Settling:
    """A running settle task and its "something happened to this path" flag."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class InboxWatcher:
    """Watches ``inbox`` and awaits ``on_ready(path)`` once per settled file version."""

    def __init__(
        self,
        inbox: Path,
        on_ready: Callable[[Path], Awaitable[None]],
        *,
        extensions: Iterable[str],
        settle_seconds: float,
        rescan_seconds: float,
        follow_symlinks: bool = False,
        can_open: Callable[[Path], bool] = lambda p: True,
        on_unopenable: Callable[[Path], None] = lambda p: None,
        observer_factory: Callable[[], BaseObserver] = watchdog.observers.Observer,
    ) -> None:
        if settle_seconds < 0 or rescan_seconds <= 0:
            raise ValueError("settle_seconds must be >= 0 and rescan_seconds > 0")
        self.inbox = Path(inbox).expanduser().resolve()
        self._on_ready = on_ready
        self._extensions = normalise_extensions(extensions)
        self._settle_seconds = settle_seconds
        self._rescan_seconds = rescan_seconds
        self._follow_symlinks = follow_symlinks
        self._can_open = can_open
        self._on_unopenable = on_unopenable
        self._observer_factory = observer_factory
        self._running = False
        self._backlog: list[Path] = []  # poked before run() started
        self._settling: dict[Path, _Settling] = {}
        self._delivered: dict[Path, Signature] = {}
        self._unopenable: dict[Path, Signature] = {}
        self.delivered_count = 0
        self.scan_count = 0

    # ------------------------------------------------------------------ introspection

    @property
    def settling(self) -> frozenset[Path]:
        """Paths currently waiting to settle (or being checked/delivered)."""
        return frozenset(self._settling)

    @property
    def unopenable(self) -> frozenset[Path]:
        """Settled paths that ``can_open`` refused; re-checked on change or rescan."""
        return frozenset(self._unopenable)

    # ------------------------------------------------------------------ public

    async def run(self) -> None:
        """Watch until cancelled: observer, start-up scan, then a rescan every period."""
        if not self.inbox.is_dir():
            raise FileNotFoundError(
                f"inbox {self.inbox} does not exist or is not a directory; create it first"
            )
        observer = self._start_observer(asyncio.get_running_loop())
        self._running = True
        try:
            self._drain_backlog()
            while True:
                await self._scan()
                await asyncio.sleep(self._rescan_seconds)
        finally:
            self._running = False
            await self._stop_observer(observer)
            await self._cancel_settling()

    def poke(self, path: Path) -> None:
        """Consider ``path`` now (e.g. after ``aud submit``); call from the loop thread."""
        path = _absolute(Path(path), self.inbox)
        if not self._running:
            self._backlog.append(path)
            return
        if not is_candidate(path, self.inbox, self._extensions, self._follow_symlinks):
            log.info("poke ignored, not a candidate in %r: %r", str(self.inbox), str(path))
            return
        self._consider(path, force=True)

    def forget(self, path: Path) -> None:
        """The file at ``path`` was taken away (e.g. moved to .done or .failed): whatever appears there
        next is new, even with the same size and mtime (a failed video moved back in). Loop thread."""
        path = _absolute(Path(path), self.inbox)
        self._delivered.pop(path, None)
        self._unopenable.pop(path, None)

    # ------------------------------------------------------------------ observer

    def _start_observer(self, loop: asyncio.AbstractEventLoop) -> BaseObserver | None:
        """Start watchdog; without it (e.g. inotify limits) fall back to rescans only."""
        observer = self._observer_factory()
        try:
            observer.schedule(_EventHandler(loop, self._on_event), str(self.inbox), recursive=True)
            observer.start()
        except OSError as exc:
            log.warning(
                "file events unavailable for %s (%s); relying on rescans every %gs",
                self.inbox, exc, self._rescan_seconds,
            )
            observer.unschedule_all()
            return None
        log.debug("watching %s with %s", self.inbox, type(observer).__name__)
        return observer

    @staticmethod
    async def _stop_observer(observer: BaseObserver | None) -> None:
        """Stop the observer thread and join it without blocking the loop."""
        if observer is None:
            return
        observer.stop()
        await asyncio.to_thread(observer.join, _OBSERVER_JOIN_SECONDS)
        if observer.is_alive():
            log.warning("watchdog observer did not stop within %.0fs", _OBSERVER_JOIN_SECONDS)

    def _on_event(self, path: Path) -> None:
        """Loop-thread side of an observer event."""
        if self._running:
            self._consider(path)

    # ------------------------------------------------------------------ scanning

    def _drain_backlog(self) -> None:
        backlog, self._backlog = self._backlog, []
        for path in backlog:
            self.poke(path)

    async def _scan(self) -> None:
        """Walk the inbox (in a thread), consider every candidate, prune forgotten paths."""
        paths = await asyncio.to_thread(
            walk_candidates, self.inbox, self.inbox, self._extensions, self._follow_symlinks
        )
        self.scan_count += 1
        for path in paths:
            self._consider(path, force=True)
        self._prune(set(paths))

    def _prune(self, present: set[Path]) -> None:
        """Forget delivery/refusal records of paths no longer in the inbox."""
        for book in (self._delivered, self._unopenable):
            for path in [p for p in book if p not in present and p not in self._settling]:
                del book[path]

    # ------------------------------------------------------------------ settling

    def _consider(self, path: Path, *, force: bool = False) -> None:
        """Start settling ``path`` unless it is settling, already delivered, or refused.

        ``force`` re-checks a version ``can_open`` refused before (rescan, poke).
        """
        entry = self._settling.get(path)
        if entry is not None:
            entry.changed.set()
            return
        if not is_candidate(path, self.inbox, self._extensions, self._follow_symlinks):
            return
        signature = file_signature(path)
        if signature is None or signature == self._delivered.get(path):
            return
        if not force and signature == self._unopenable.get(path):
            return
        entry = _Settling()
        entry.task = asyncio.create_task(self._settle(path, entry), name=f"aud-settle:{path.name}")
        self._settling[path] = entry

    async def _settle(self, path: Path, entry: _Settling) -> None:
        """Per-path task: wait until still and openable, then deliver once."""
        finished = False
        try:
            await self._settle_and_deliver(path, entry)
            finished = True
        finally:
            del self._settling[path]
            if finished and entry.changed.is_set() and self._running:
                self._consider(path)  # touched while being checked or delivered

    async def _settle_and_deliver(self, path: Path, entry: _Settling) -> None:
        while True:
            signature = await self._wait_until_still(path, entry.changed)
            if signature is None:
                log.debug("vanished before settling: %r", str(path))
                return
            opened = await self._check_open(path)
            if file_signature(path) == signature:
                break
            # changed while can_open ran: settle again
        if not opened:
            log.info("not openable yet, will re-check on change or rescan: %r", str(path))
            self._unopenable[path] = signature
            self._on_unopenable(path)
            return
        self._unopenable.pop(path, None)
        self._delivered[path] = signature
        await self._deliver(path)

    async def _wait_until_still(self, path: Path, changed: asyncio.Event) -> Signature | None:
        """Return the signature once unchanged for ``settle_seconds``; None if it vanished.

        Woken early by events; a changed signature restarts the period.
        """
        loop = asyncio.get_running_loop()
        signature = file_signature(path)
        deadline = loop.time() + self._settle_seconds
        while signature is not None:
            changed.clear()
            remaining = deadline - loop.time()
            if remaining > 0:
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    pass
            current = file_signature(path)
            if current != signature:
                signature, deadline = current, loop.time() + self._settle_seconds
            elif loop.time() >= deadline:
                return signature
        return None

    async def _check_open(self, path: Path) -> bool:
        """``can_open`` in a thread; an exception counts as "not yet"."""
        try:
            return bool(await asyncio.to_thread(self._can_open, path))
        except Exception:
            log.warning("can_open raised for %r; will re-check later", str(path), exc_info=True)
            return False

    async def _deliver(self, path: Path) -> None:
        """Await ``on_ready``; its failures are never fatal, and never strand the file: a file that was
        not taken (``NotTaken``, or any other exception, logged) is considered again on the next rescan."""
        self.delivered_count += 1
        log.info("settled: %r", str(path))
        try:
            await self._on_ready(path)
        except NotTaken:
            self._delivered.pop(path, None)
        except Exception:
            log.exception("on_ready failed for %r; it is considered again on the next rescan", str(path))
            self._delivered.pop(path, None)

    async def _cancel_settling(self) -> None:
        tasks = [e.task for e in self._settling.values() if e.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _absolute(path: Path, inbox: Path) -> Path:
    """Absolute form of ``path``; its parent is resolved only if that puts it in ``inbox``."""
    path = Path(os.path.abspath(path.expanduser()))
    if _relative_parts(path, inbox) is None:
        path = path.parent.resolve() / path.name
    return path
