"""``aud models fetch`` for the OpenFace 2.2.0 AU files (:mod:`.openface2_files`): downloaded once into a cache,
each checked, then installed with :mod:`.openface2_set`.

Sources: the official repository at ``openface2_files.REF`` (raw files from GitHub), or a lab mirror
(``--openface2-source URL`` / ``AUD_OPENFACE2_URL``; http(s) or ``file://``, or a plain folder) that serves the
same files at the same repository-relative paths.

Which hash holds a file:

* a mirror's ``SHA256SUMS`` at its root (``sha256sum`` format, paths relative to the root) governs every file
  when it is served, and must list all of them; a file that differs from a pinned official hash is reported
  (a lab may serve its own models) and its hash recorded;
* otherwise the pinned hash (``openface2_files.PINNED``);
* a file with neither (``AU_all_best.txt`` and the ``svm_combined`` models, whose official hashes are not
  known here) is accepted only from the official source, and its hash recorded in the manifest; a mirror
  without ``SHA256SUMS`` is refused for it.

Guarantees, as for the OpenFace 3.0 checkpoints (:mod:`.fetch`, whose ``download`` does the requests:
resume with HTTP Range, retries with backoff, a clear error naming the URL when offline): every file is
bounded (its pinned size when held to a pinned hash, else the cap of its kind; ``SHA256SUMS`` by
``SUMS_CAP``) and the whole fetch by a deadline, both enforced while bytes arrive; a file that fails its
check is deleted and named, and the installed files are left as they were.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import platformdirs

from . import fetch
from .fetch import FetchError, Progress, raise_unless_not_served, sha256_file
from .openface2_files import (
    AU_LIST_PATH,
    FIXED_PATHS,
    LICENSE_SUMMARY,
    LICENSE_URL,
    OFFICIAL_URL,
    PINNED,
    REF,
    SUMS_CAP,
    AUListError,
    differs_from_known,
    set_paths,
    size_cap,
)

SOURCE_ENV = "AUD_OPENFACE2_URL"
SUMS_FILE = "SHA256SUMS"
DEADLINE_SECONDS = 30 * 60.0  # the whole OpenFace 2.2 fetch (about 2.7 MB): a stalled source is not waited on
TIMEOUT_SECONDS = 60.0  # one request
OFFLINE_HINT = ("for the OpenFace 2.2 files a lab mirror or a local folder can be given with "
                "--openface2-source, or they can be left out with --family openface3")


class TooLarge(FetchError):
    """The source sends more bytes than the file may have."""


class Verification(StrEnum):
    """How a file's hash was held (recorded in the manifest as ``checked``)."""

    SUMS = "SHA256SUMS"
    PINNED = "pinned"
    RECORDED = "recorded"  # official source, no pinned hash: recorded as fetched


@dataclass(frozen=True)
class Expected:
    sha256: str | None
    how: Verification


@dataclass(frozen=True)
class FetchedFile:
    path: str  # repository-relative
    local: Path  # in the cache
    sha256: str
    size: int
    how: Verification


@dataclass(frozen=True)
class Licence:
    name: str
    marker: str  # file name in the state directory
    summary: str
    url: str


LICENCE = Licence("OpenFace 2.2", "openface2-license-accepted", LICENSE_SUMMARY, LICENSE_URL)


def ensure_licence(licence: Licence, state_dir: Path, accepted_flag: bool, ask: Callable[[str], str] | None,
                   say: Callable[[str], None]) -> None:
    """Go on only once ``licence`` is accepted: remembered, ``--accept-license``, or "yes" typed at a terminal
    (``ask`` is None when there is none); as :func:`.fetch.ensure_licence` does for OpenFace 3.0."""
    marker = state_dir / licence.marker
    if marker.is_file():
        return
    say(licence.summary)
    if not accepted_flag:
        if ask is None:
            raise FetchError(f"the {licence.name} licence (above) must be accepted: run again with "
                             f"--accept-license if you agree to its terms")
        if ask('Type "yes" to accept these terms: ').strip().lower() != "yes":
            raise FetchError(f"the {licence.name} licence was not accepted: nothing was downloaded")
    state_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"accepted {time.strftime('%Y-%m-%d %H:%M:%S')}\nterms {licence.url}\n")
    say(f"{licence.name} licence accepted (remembered in {marker})")


def source_url(flag: str | None) -> str:
    """The base URL: the flag, else ``AUD_OPENFACE2_URL``, else the official one (normalised as
    :func:`.fetch.source_url` does: a folder becomes ``file://``, always a trailing ``/``)."""
    return fetch.source_url(flag or os.environ.get(SOURCE_ENV) or OFFICIAL_URL)


def is_official(base: str) -> bool:
    return base == OFFICIAL_URL


def cache_dir(base: str, flag: Path | None) -> Path:
    """``<--cache>/openface2``, else the user cache folder, one sub-folder per source (mirrors never mix)."""
    if flag:
        return Path(flag).expanduser() / "openface2"
    key = REF if is_official(base) else hashlib.sha256(base.encode()).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir("aud")) / "openface2" / key


@dataclass
class Deadline:
    seconds: float
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def check(self, doing: str) -> None:
        if time.monotonic() - self.started > self.seconds:
            raise FetchError(f"the OpenFace 2.2 fetch took longer than {self.seconds:.0f} s (stopped while "
                             f"{doing}); what was downloaded is kept in the cache and resumed next time")


# --- SHA256SUMS ---------------------------------------------------------------------------------------

def read_sums(base: str, timeout: float = TIMEOUT_SECONDS) -> dict[str, str] | None:
    """The mirror's ``SHA256SUMS`` as {repository path: sha256}, or None when it serves none; at most
    ``SUMS_CAP`` bytes are read."""
    url = base + SUMS_FILE
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(SUMS_CAP + 1)
    except OSError as exc:
        raise_unless_not_served(url, exc, f" (are you offline? {OFFLINE_HINT})")
        return None  # not served
    if len(data) > SUMS_CAP:
        raise FetchError(f"{url}: larger than {SUMS_CAP} bytes; not a SHA256SUMS for these files")
    sums: dict[str, str] = {}
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if not match:
            raise FetchError(f"{url}: line {number} is not '<sha256>  <path>': {line[:80]!r}")
        path = match.group(2).strip()
        sums[path[2:] if path.startswith("./") else path] = match.group(1).lower()
    return sums


def expectations(base: str, sums: dict[str, str] | None, paths: tuple[str, ...]) -> dict[str, Expected]:
    """The hash each of ``paths`` is held to; FetchError when the source cannot vouch for every one."""
    if sums is not None:
        missing = [p for p in paths if p not in sums]
        if missing:
            raise FetchError(f"{base}{SUMS_FILE} does not list {len(missing)} of the OpenFace 2.2 files, e.g. "
                             f"{', '.join(missing[:3])}; it must list every file it is used for")
        return {p: Expected(sums[p], Verification.SUMS) for p in paths}
    unpinned = [p for p in paths if p not in PINNED]
    if unpinned and not is_official(base):
        raise FetchError(f"{base} serves no {SUMS_FILE}, and {len(unpinned)} of the OpenFace 2.2 files have no "
                         f"pinned hash (e.g. {', '.join(unpinned[:2])}): a mirror must serve a {SUMS_FILE} "
                         f"at its root listing every file (sha256sum format, repository-relative paths)")
    return {p: Expected(PINNED[p][1], Verification.PINNED) if p in PINNED else Expected(None, Verification.RECORDED)
            for p in paths}


# --- downloading and checking -------------------------------------------------------------------------

def bounded_download(url: str, dest: Path, path: str, cap: int, deadline: Deadline, progress: Progress,
                     retries: int, backoff: float) -> None:
    """:func:`.fetch.download`, stopped as soon as the source announces or sends more than ``cap`` bytes
    (the partial file is deleted) or the deadline passes (the partial file is kept for a resume)."""
    def watch(name: str, done: int, total: int | None) -> None:
        if done > cap or (total is not None and total > cap):
            raise TooLarge(f"{path}: the source sends {max(done, total or 0)} bytes or more, but this file has "
                           f"at most {cap}; refused (nothing was installed)")
        deadline.check(f"downloading {path}")
        progress(path, done, total)

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fetch.download(url, dest, watch, retries, backoff, TIMEOUT_SECONDS)
    except TooLarge:
        dest.with_name(dest.name + ".part").unlink(missing_ok=True)
        raise
    except FetchError as exc:  # fetch.download's advice names --source (the OpenFace 3.0 flag): name ours
        text = str(exc).replace("a lab mirror or a local folder can be given with --source", OFFLINE_HINT)
        raise FetchError(text if OFFLINE_HINT in text else f"{text}; {OFFLINE_HINT}") from exc


def check(path: str, local: Path, expected: Expected) -> str:
    """The file's sha256 once it matches what it is held to; otherwise it is deleted and FetchError names it."""
    digest = sha256_file(local)
    if expected.sha256 is not None and digest != expected.sha256:
        local.unlink()
        raise FetchError(f"{path}: sha256 {digest} does not match the {expected.how} hash {expected.sha256}; the "
                         f"download was deleted and the installed OpenFace 2.2 files were left as they were")
    return digest


def notes(files: list[FetchedFile]) -> list[str]:
    """What the user should know about hashes that were not held to the pinned official ones."""
    unofficial = [f.path for f in files if f.path in PINNED and PINNED[f.path][1] != f.sha256]
    recorded = [f.path for f in files if f.how == Verification.RECORDED]
    said = []
    if unofficial:
        said.append(f"note: {len(unofficial)} files from this source are not the official OpenFace 2.2.0 files "
                    f"(e.g. {unofficial[0]}); the source's SHA256SUMS vouches for them and their hashes are "
                    f"recorded in the manifest")
    if recorded:
        said.append(f"{len(recorded)} files have no pinned hash (e.g. {recorded[0]}): their sha256 as fetched "
                    f"from the official source is recorded in the manifest")
    return said


def fetch_openface2(base: str, cache: Path, progress: Progress, say: Callable[[str], None],
                    deadline_seconds: float = DEADLINE_SECONDS, retries: int = 4,
                    backoff: float = 1.0) -> list[FetchedFile]:
    """Every file of the set in ``cache`` (at its repository path), downloaded unless a cached copy passes its
    check, each checked: ``AU_all_best.txt`` first (checked, then read: what it lists is what is fetched), then
    the PDM, the triangulation and the listed models."""
    deadline = Deadline(deadline_seconds)
    sums = None if is_official(base) else read_sums(base)
    if sums is not None:
        say(f"checking against {base}{SUMS_FILE} ({len(sums)} entries)")
    expected = expectations(base, sums, (AU_LIST_PATH,))
    au_list = fetch_one(base, cache, AU_LIST_PATH, expected[AU_LIST_PATH], deadline, progress, retries, backoff)
    text = au_list.local.read_text(encoding="utf-8", errors="replace")
    try:
        paths = set_paths(text, f"{base}{AU_LIST_PATH}")
    except AUListError as exc:
        au_list.local.unlink()
        raise FetchError(f"{exc} (nothing was installed)") from exc
    if differs_from_known(text):
        say(f"note: {AU_LIST_PATH} from this source lists other models than OpenFace 2.2.0's as known to aud "
            f"({len(paths) - len(FIXED_PATHS)} models); fetching what it lists")
    expected = expectations(base, sums, paths)
    files = [au_list] + [fetch_one(base, cache, path, expected[path], deadline, progress, retries, backoff)
                         for path in paths[1:]]
    for note in notes(files):
        say(note)
    return files


def fetch_one(base: str, cache: Path, path: str, expected: Expected, deadline: Deadline, progress: Progress,
              retries: int, backoff: float) -> FetchedFile:
    """``path`` in ``cache``: the cached copy when it passes its check (else it is fetched again), or
    downloaded; FetchError naming it when it does not match."""
    deadline.check(f"starting {path}")
    local = cache / path
    cap = size_cap(path, exact=expected.how == Verification.PINNED)
    if local.is_file():
        if expected.sha256 in (None, sha256_file(local)) and local.stat().st_size <= cap:
            progress(path, local.stat().st_size, local.stat().st_size)
        else:
            local.unlink()  # a cached copy that went bad, or of another release: fetched again
    if not local.is_file():
        bounded_download(base + urllib.parse.quote(path), local, path, cap, deadline, progress, retries, backoff)
    digest = check(path, local, expected)
    return FetchedFile(path, local, digest, local.stat().st_size, expected.how)
