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
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .checkpoints import OFFICIAL, CheckpointSpec

REPOSITORY = "nutPace/openface_weights"
REVISION = "3844412b54706ed0a930b99589508ed3c101f39e"
OFFICIAL_URL = f"https://huggingface.co/{REPOSITORY}/resolve/{REVISION}/"
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
    marker.write_text(f"accepted {time.strftime('%Y-%m-%d %H:%M:%S')}\nterms {LICENSE_URL}\n")
    say(f"licence accepted (remembered in {marker})")


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
    return offset + int(length) if length is not None else None


def _download_once(url: str, part: Path, progress: Progress, name: str, timeout: float) -> None:
    """One request: resumes ``part`` from its size with a Range request; raises on a short read."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if offset and getattr(response, "status", None) != 206:
            offset = 0  # the server (or a file:// URL) sent the whole file: start again
        total = _total_from(response, offset)
        with open(part, "ab" if offset else "wb") as out:
            done = offset
            progress(name, done, total)
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                progress(name, done, total)
            out.flush()
            os.fsync(out.fileno())
    if total is not None and done != total:
        raise http.client.IncompleteRead(b"", total - done)


def download(url: str, dest: Path, progress: Progress, retries: int = 4, backoff: float = 1.0,
             timeout: float = 60.0) -> None:
    """``url`` to ``dest`` through ``dest.part``, resumed after a dropped connection, retried ``retries``
    times with exponential backoff; FetchError naming the URL and the last cause otherwise."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _download_once(url, part, progress, dest.name, timeout)
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
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)  # pacing retries, not synchronisation
    raise FetchError(f"cannot download {url}: {describe(last)} (after {retries + 1} attempts; are you "
                     f"offline? a lab mirror or a local folder can be given with --source)")


def read_sums(base: str, timeout: float = 60.0) -> dict[str, str] | None:
    """The source's ``SHA256SUMS`` as {file name: sha256}, or None when it serves none."""
    url = base + SUMS_FILE
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500:  # not served (Hugging Face answers 404, some servers 401 or 403)
            return None
        raise FetchError(f"cannot read {url}: {describe(exc)}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError) or "No such file" in str(exc.reason):
            return None
        raise FetchError(f"cannot read {url}: {describe(exc)}") from exc
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


def check_file(spec: CheckpointSpec, path: Path, sums: dict[str, str] | None, official: bool,
               say: Callable[[str], None]) -> str:
    """The file's sha256 once it matches SHA256SUMS and, for the official source, the known hash."""
    digest = sha256_file(path)
    listed = (sums or {}).get(spec.filename)
    if listed and listed != digest:
        path.unlink()
        raise FetchError(f"{spec.filename}: sha256 {digest} does not match SHA256SUMS ({listed}); the file "
                         f"was deleted and the model set left as it was")
    known = KNOWN.get(spec.filename)
    if known and (path.stat().st_size, digest) != known:
        if official:
            path.unlink()
            raise FetchError(f"{spec.filename}: {path.stat().st_size} bytes, sha256 {digest}, is not the "
                             f"official file ({known[0]} bytes, sha256 {known[1]}); deleted")
        say(f"note: {spec.filename} from this source is not the official file (sha256 {digest}, "
            f"official {known[1]}); its hash is recorded in the manifest")
    return digest


def fetch_checkpoints(base: str, cache: Path, progress: Progress, say: Callable[[str], None],
                      retries: int = 4, backoff: float = 1.0) -> list[Downloaded]:
    """The three official files in ``cache`` (downloaded unless already there), each checked."""
    cache.mkdir(parents=True, exist_ok=True)
    sums = read_sums(base)
    if sums is not None:
        say(f"checking against {base}{SUMS_FILE} ({len(sums)} entries)")
    files = []
    for spec in OFFICIAL:
        path = cache / spec.filename
        if path.is_file():
            say(f"{spec.filename}: in the cache ({cache})")
        else:
            download(base + urllib.parse.quote(spec.filename), path, progress, retries, backoff)
        digest = check_file(spec, path, sums, is_official(base), say)
        files.append(Downloaded(spec, path, digest, path.stat().st_size))
    return files


def terminal_ask() -> Callable[[str], str] | None:
    return (lambda prompt: input(prompt)) if sys.stdin.isatty() else None
