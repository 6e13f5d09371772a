"""``aud models fetch``: the official OpenFace 3.0 checkpoints, downloaded once into a cache, checked, and
exported into the model directory.

Downloads use the standard library's ``urllib``: huggingface_hub only talks to a Hugging Face hub (no
``file://`` folder, no plain lab web server, no ``SHA256SUMS``), and pooch neither resumes a partial
download with an HTTP Range request nor reads ``SHA256SUMS``; what is needed here (Range, retries,
``file://``, a checksum list) is a few small functions on top of ``urllib``.

Sources: the Hugging Face repository ``nutPace/openface_weights`` at a pinned revision, or any base URL
(``--source`` / ``AUD_WEIGHTS_URL``): a lab mirror over http(s) or a local folder as ``file://``. A source
that serves ``SHA256SUMS`` (``sha256sum`` format) is held to it. The official source is also held to the
hashes known here; a mirror whose file differs from a known official hash is reported, and the hash
recorded, but not refused (a lab may mirror its own retrained weights).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from ..core.atomic import atomic_write_text
from ..core.provenance import OFFICIAL_URL, REVISION, Verified
from .checkpoints import OFFICIAL, CheckpointSpec

SOURCE_ENV = "AUD_WEIGHTS_URL"
SUMS_FILE = "SHA256SUMS"
# (size, sha256) of official files known before download
KNOWN = {
    "Alignment_RetinaFace.pth": (1_789_735, "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220"),
}
CHUNK = 1 << 16
LICENSE_URL = "https://github.com/CMU-MultiComp-Lab/OpenFace-3.0/blob/main/LICENSE"
LICENSE_SUMMARY = f"""\
The OpenFace 3.0 model weights are licensed by Carnegie Mellon University under the OpenFace 3.0
Software License Agreement, for ACADEMIC OR NON-PROFIT NONCOMMERCIAL RESEARCH USE ONLY:
  - you may use them only for your own noncommercial internal research;
  - you may not distribute, copy (beyond that use), sell, sublicense or give third parties access to
    them, or to anything derived from them — including the ONNX files aud exports;
  - they come without warranty; the licence ends if you break its terms, and you must then delete them.
Full terms: {LICENSE_URL}"""


class FetchError(RuntimeError):
    """A download or check failed; the message names the URL or file and the cause."""


@dataclass(frozen=True)
class Downloaded:
    spec: CheckpointSpec
    path: Path
    sha256: str
    size: int
    verified: Verified = Verified.NOTHING  # what the file was checked against


Progress = Callable[[str, int, int | None], None]  # (file name, bytes so far, total or None)


def source_url(flag: str | None) -> str:
    """The base URL: the flag, else ``AUD_WEIGHTS_URL``, else the pinned official one; a plain folder path
    becomes a ``file://`` URL. Always ends with ``/``."""
    url = flag or os.environ.get(SOURCE_ENV) or OFFICIAL_URL
    if "://" not in url:
        url = Path(url).expanduser().absolute().as_uri()
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise FetchError(f"{url}: unsupported source (use http://, https:// or file://)")
    return url if url.endswith("/") else url + "/"


def is_official(url: str) -> bool:
    return url == OFFICIAL_URL


def cache_dir(url: str, flag: Path | None) -> Path:
    """``--cache``, else the user cache folder, one sub-folder per source (so mirrors never mix)."""
    if flag:
        return Path(flag).expanduser()
    key = REVISION if is_official(url) else hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir("aud")) / "checkpoints" / key


# --- licence ------------------------------------------------------------------------------------------

def licence_marker(state_dir: Path) -> Path:
    return state_dir / "openface3-license-accepted"


def ensure_licence(state_dir: Path, accepted_flag: bool, ask: Callable[[str], str] | None,
                   say: Callable[[str], None]) -> None:
    """Go on only once the licence is accepted: remembered, ``--accept-license``, or "yes" typed at a
    terminal (``ask`` is None when there is none)."""
    marker = licence_marker(state_dir)
    if marker.is_file():
        return
    say(LICENSE_SUMMARY)
    if not accepted_flag:
        if ask is None:
            raise FetchError("the OpenFace 3.0 licence (above) must be accepted: run again with "
                             "--accept-license if you agree to its terms")
        if ask('Type "yes" to accept these terms: ').strip().lower() != "yes":
            raise FetchError("licence not accepted: nothing was downloaded")
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, f"accepted {time.strftime('%Y-%m-%d %H:%M:%S')}\nterms {LICENSE_URL}\n")
    say(f"licence accepted (remembered in {marker})")


# --- bounds -------------------------------------------------------------------------------------------

FILE_CAP = 2 << 30  # bytes: any one checkpoint (the official ones are a few hundred MB at most)
SUMS_CAP = 64 << 10  # bytes: a SHA256SUMS for three files is a few hundred bytes
DEADLINE_SECONDS = 3 * 3600.0  # the whole fetch, retries included


@dataclass(frozen=True)
class Limits:
    """How much a fetch may download and for how long, and which other origins a redirect may go to."""

    file_cap: int = FILE_CAP
    sums_cap: int = SUMS_CAP
    deadline_seconds: float = DEADLINE_SECONDS
    allowed_origins: frozenset[str] = frozenset()  # "https://host[:port]" the user named (--allow-redirect)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.remaining() <= 0:
            raise FetchError(f"{what}: the fetch took longer than its deadline ({self.seconds:g} s); stopped "
                             f"(a slow or endless download)")


def cap_for(name: str, limits: Limits, official: bool) -> int:
    """A file's size cap: from the official source, its known size where known; else the general cap (a
    mirror may hold other weights of another size)."""
    known = KNOWN.get(name) if official else None
    return known[0] if known else limits.file_cap


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL (the default port left out)."""
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{(parts.hostname or '').lower()}{port}"


def _official_cdn(url: str) -> bool:
    """Hugging Face serves the official files from its own hosts (LFS and Xet storage behind redirects)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and (host in ("huggingface.co", "hf.co")
                                        or host.endswith((".huggingface.co", ".hf.co")))


def redirect_allowed(base: str, target: str, limits: Limits) -> bool:
    if origin(target) == origin(base) or origin(target) in limits.allowed_origins:
        return True
    return is_official(base) and _official_cdn(target)


def opener(base: str, limits: Limits) -> urllib.request.OpenerDirector:
    """urllib with redirects kept to the source's own origin (and the origins the user named)."""

    class SameOrigin(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            target = urllib.parse.urljoin(req.full_url, newurl)
            if not redirect_allowed(base, target, limits):
                fp.close()
                raise FetchError(f"{req.full_url} redirects to {target}, another origin than {origin(base)}; "
                                 f"refused (if you trust it, run again with --allow-redirect {origin(target)})")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(SameOrigin)


# --- downloading --------------------------------------------------------------------------------------

def describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return f"{reason.__class__.__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__


def _total_from(response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    match = re.match(r"bytes \d+-\d+/(\d+)", content_range)
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None and length.isdigit() else None


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _part_size(part: Path) -> int:
    """The size of a partial download to resume; anything but a regular file there is removed."""
    try:
        st = os.lstat(part)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(st.st_mode):
        part.unlink()
        return 0
    return st.st_size


def _open_part(part: Path, offset: int) -> int:
    """The partial file for writing, never through a symlink: appended to when resuming, else created
    new and exclusively (whatever was there is removed first)."""
    if offset:
        return os.open(part, os.O_WRONLY | os.O_APPEND | _NOFOLLOW)
    part.unlink(missing_ok=True)
    return os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)


def _download_once(url: str, part: Path, progress: Progress, name: str, timeout: float, cap: int,
                   deadline: Deadline, open_url: Callable[..., Any]) -> None:
    """One request: resumes ``part`` from its size with a Range request; raises on a short read, and
    FetchError past the size cap or the deadline."""
    offset = _part_size(part)
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    with open_url(request, timeout=max(0.1, min(timeout, deadline.remaining()))) as response:
        if offset and getattr(response, "status", None) != 206:
            offset = 0  # the server (or a file:// URL) sent the whole file: start again
        total = _total_from(response, offset)
        if total is not None and total > cap:
            raise FetchError(f"{url}: the server announces {total} bytes, more than the {cap} bytes this file "
                             f"may have; refused")
        with os.fdopen(_open_part(part, offset), "wb") as out:
            done = offset
            progress(name, done, total)
            read = getattr(response, "read1", response.read)  # what has arrived: a slow drip cannot stall
            while block := read(CHUNK):
                done += len(block)
                if done > cap:
                    raise FetchError(f"{url}: more than {cap} bytes (the most this file may have); stopped")
                deadline.check(url)
                out.write(block)
                progress(name, done, total)
            out.flush()
            os.fsync(out.fileno())
    if total is not None and done != total:
        raise http.client.IncompleteRead(b"", total - done)


def download(url: str, dest: Path, progress: Progress, retries: int = 4, backoff: float = 1.0,
             timeout: float = 60.0, limits: Limits | None = None, deadline: Deadline | None = None,
             open_url: Callable[..., Any] | None = None) -> None:
    """``url`` to ``dest`` through ``dest.part``, resumed after a dropped connection, retried ``retries``
    times with exponential backoff; FetchError naming the URL and the last cause otherwise. Bounded by the
    file's size cap and the deadline; the partial file is removed when the download fails."""
    limits = limits or Limits()
    deadline = deadline or Deadline(limits.deadline_seconds)
    open_url = open_url or opener(url, limits).open
    part = dest.with_name(dest.name + ".part")
    cap = cap_for(dest.name, limits, url.startswith(OFFICIAL_URL))
    try:
        for attempt in range(retries + 1):
            try:
                _download_once(url, part, progress, dest.name, timeout, cap, deadline,
                               open_url)
                os.replace(part, dest)
                return
            except urllib.error.HTTPError as exc:
                if exc.code == 416:  # our Range starts at or past the end: the partial file is suspect
                    part.unlink(missing_ok=True)
                elif exc.code < 500 and exc.code not in (408, 429):
                    raise FetchError(f"cannot download {url}: {describe(exc)}") from exc
                last: BaseException = exc
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                last = exc
            pause = backoff * 2 ** attempt
            if attempt < retries and pause < deadline.remaining():
                time.sleep(pause)  # pacing retries, not synchronisation
            elif attempt < retries:
                deadline.check(url)
                break
        raise FetchError(f"cannot download {url}: {describe(last)} (after {attempt + 1} attempts; are you "
                         f"offline? a lab mirror or a local folder can be given with --source)")
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def raise_unless_not_served(url: str, exc: Exception, hint: str = "") -> None:
    """A failed read of a source's ``SHA256SUMS`` at ``url``: returns where the source serves none (an HTTP
    4xx, as Hugging Face answers 404 and some servers 401 or 403; a missing local file), else raises a
    FetchError naming ``url`` (``hint`` follows the reason of a failure that is not an HTTP answer)."""
    if isinstance(exc, urllib.error.HTTPError):
        if 400 <= exc.code < 500:
            return
        raise FetchError(f"cannot read {url}: {describe(exc)}") from exc
    if isinstance(exc, urllib.error.URLError) and (isinstance(exc.reason, FileNotFoundError)
                                                   or "No such file" in str(exc.reason)):
        return
    raise FetchError(f"cannot read {url}: {describe(exc)}{hint}") from exc


def read_sums(base: str, timeout: float = 60.0, limits: Limits | None = None, deadline: Deadline | None = None,
              open_url: Callable[..., Any] | None = None) -> dict[str, str] | None:
    """The source's ``SHA256SUMS`` as {file name: sha256}, or None when it serves none. At most
    ``limits.sums_cap`` bytes are read."""
    limits = limits or Limits()
    deadline = deadline or Deadline(limits.deadline_seconds)
    open_url = open_url or opener(base, limits).open
    url = base + SUMS_FILE
    try:
        with open_url(url, timeout=max(0.1, min(timeout, deadline.remaining()))) as response:
            data = b""
            while len(data) <= limits.sums_cap and (block := response.read(min(CHUNK, limits.sums_cap + 1))):
                data += block
                deadline.check(url)
    except (http.client.HTTPException, OSError) as exc:
        raise_unless_not_served(url, exc)
        return None  # not served
    if len(data) > limits.sums_cap:
        raise FetchError(f"{url}: larger than {limits.sums_cap} bytes, not a checksum list for "
                         f"{len(OFFICIAL)} files; refused")
    text = data.decode("utf-8", "replace")
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if not match:
            raise FetchError(f"{url}: line {number} is not '<sha256>  <file name>': {line[:80]!r}")
        sums[match.group(2).strip()] = match.group(1).lower()
    return sums


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _problem(spec: CheckpointSpec, size: int, digest: str, sums: dict[str, str] | None,
             official: bool) -> str | None:
    """Why a file with this size and hash cannot be used (None: it can)."""
    listed = (sums or {}).get(spec.filename)
    if listed and listed != digest:
        return f"sha256 {digest} does not match SHA256SUMS ({listed})"
    known = KNOWN.get(spec.filename)
    if known and official and (size, digest) != known:
        return f"{size} bytes, sha256 {digest}, is not the official file ({known[0]} bytes, sha256 {known[1]})"
    return None


def verification(spec: CheckpointSpec, size: int, digest: str, sums: dict[str, str] | None) -> Verified:
    """What a usable file was verified against (the strongest check it passed)."""
    if KNOWN.get(spec.filename) == (size, digest):
        return Verified.PINNED
    if (sums or {}).get(spec.filename) == digest:
        return Verified.SUMS
    return Verified.NOTHING


def check_file(spec: CheckpointSpec, path: Path, sums: dict[str, str] | None, official: bool,
               say: Callable[[str], None]) -> str:
    """The file's sha256 once it matches SHA256SUMS and, for the official source, the known hash; a file
    that does not is deleted (FetchError)."""
    digest = sha256_file(path)
    size = path.stat().st_size
    if problem := _problem(spec, size, digest, sums, official):
        path.unlink()
        raise FetchError(f"{spec.filename}: {problem}; the file was deleted and the model set left as it was")
    known = KNOWN.get(spec.filename)
    if known and (size, digest) != known:
        say(f"note: {spec.filename} from this source is not the official file (sha256 {digest}, "
            f"official {known[1]}); its hash is recorded in the manifest")
    return digest


def fetch_checkpoints(base: str, cache: Path, progress: Progress, say: Callable[[str], None],
                      retries: int = 4, backoff: float = 1.0, limits: Limits | None = None) -> list[Downloaded]:
    """The three official files in ``cache`` (downloaded unless already there and still what the source
    lists), each checked; bounded by ``limits`` (sizes, the whole fetch's deadline, redirects)."""
    limits = limits or Limits()
    deadline = Deadline(limits.deadline_seconds)
    open_url = opener(base, limits).open
    cache.mkdir(parents=True, exist_ok=True)
    sums = read_sums(base, limits=limits, deadline=deadline, open_url=open_url)
    official = is_official(base)
    if sums is not None:
        missing = [spec.filename for spec in OFFICIAL if spec.filename not in sums]
        if missing:
            raise FetchError(f"{base}{SUMS_FILE} does not list {', '.join(missing)}: a checksum list must cover "
                             f"every file it is used for; nothing was downloaded")
        say(f"checking against {base}{SUMS_FILE} ({len(sums)} entries)")
    files = []
    for spec in OFFICIAL:
        path = cache / spec.filename
        if path.is_file():
            problem = _problem(spec, path.stat().st_size, sha256_file(path), sums, official)
            if problem is None:
                say(f"{spec.filename}: in the cache ({cache})")
            else:  # e.g. the mirror was updated since: the source's file is wanted, not the stale copy
                say(f"{spec.filename}: the cached copy is not the source's file now ({problem}); downloading "
                    f"it again")
                path.unlink()
        if not path.is_file():
            download(base + urllib.parse.quote(spec.filename), path, progress, retries, backoff,
                     limits=limits, deadline=deadline, open_url=open_url)
        digest = check_file(spec, path, sums, official, say)
        size = path.stat().st_size
        files.append(Downloaded(spec, path, digest, size, verification(spec, size, digest, sums)))
    return files


def terminal_ask() -> Callable[[str], str] | None:
    return (lambda prompt: input(prompt)) if sys.stdin.isatty() else None
