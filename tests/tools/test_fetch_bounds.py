"""``aud models fetch`` is bounded (issue 22 item 6; issue 26 item 5): against real HTTP servers on
127.0.0.1 serving an endless body, an endless SHA256SUMS, a cross-origin redirect, a SHA256SUMS that
misses a file, an updated mirror; and a planted symlink at the partial file's name."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from daemon.core.provenance import Verified
from daemon.tools import fetch
from daemon.tools.checkpoints import OFFICIAL
from tests.tools.checkpoint_files import LocalServer

Route = Callable[[BaseHTTPRequestHandler], None]


class Server(LocalServer):
    """A ThreadingHTTPServer on 127.0.0.1; ``routes`` maps a path ("/name") to a handler function, and
    ``requests`` logs every path asked for."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.requests: list[str] = []
        self.stop = threading.Event()  # ends endless bodies when the test is over
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                path = urllib.parse.unquote(self.path)
                server.requests.append(path)
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def log_message(self, *args) -> None:
                pass

        super().__init__(Handler, daemon_threads=True)

    def close(self) -> None:
        self.stop.set()
        super().close()


@pytest.fixture
def server() -> Iterator[Callable[[dict[str, Route]], Server]]:
    made: list[Server] = []

    def make(routes: dict[str, Route]) -> Server:
        made.append(Server(routes))
        return made[-1]

    yield make
    for s in made:
        s.close()


def body(data: bytes) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    return route


def endless(stop: threading.Event, announce: int | None = None, pause: float = 0.0) -> Route:
    """A body that never ends (no Content-Length, or a huge announced one)."""
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if announce is not None:
            h.send_header("Content-Length", str(announce))
        h.end_headers()
        block = b"\0" * (1 << 16)
        while not stop.is_set():
            h.wfile.write(block)
            if pause:
                stop.wait(pause)
    return route


def redirect(to: str) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", to)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return route


def quiet(*args) -> None:
    pass


def sums_text(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()).encode()


def payloads(seed: int) -> dict[str, bytes]:
    return {spec.filename: f"{spec.filename} version {seed} ".encode() * 100 for spec in OFFICIAL}


# --- size caps, deadline, partial files -------------------------------------------------------------

def test_an_endless_body_stops_at_the_size_cap_and_leaves_no_partial_file(server, tmp_path):
    s = server({})
    s.routes["/big.pth"] = endless(s.stop)
    dest = tmp_path / "big.pth"
    with pytest.raises(fetch.FetchError, match=r"more than 1048576 bytes"):
        fetch.download(s.url + "big.pth", dest, quiet, retries=0, limits=fetch.Limits(file_cap=1 << 20))
    assert sorted(os.listdir(tmp_path)) == []  # neither the file nor its .part


def test_an_official_file_of_known_size_is_capped_at_that_size():
    name = "Alignment_RetinaFace.pth"
    assert fetch.cap_for(name, fetch.Limits(), official=True) == fetch.KNOWN[name][0]
    assert fetch.cap_for(name, fetch.Limits(), official=False) == fetch.FILE_CAP  # a mirror's may differ
    assert fetch.cap_for("MTL_backbone.pth", fetch.Limits(), official=True) == fetch.FILE_CAP


def test_an_announced_size_over_the_cap_is_refused_before_reading(server, tmp_path):
    s = server({})
    s.routes["/big.pth"] = endless(s.stop, announce=50 << 30)
    with pytest.raises(fetch.FetchError, match="announces 53687091200 bytes"):
        fetch.download(s.url + "big.pth", tmp_path / "big.pth", quiet, retries=0)
    assert os.listdir(tmp_path) == []


def test_the_deadline_stops_a_slow_endless_download(server, tmp_path):
    s = server({})
    s.routes["/slow.pth"] = endless(s.stop, pause=0.05)  # ~1.3 MB/s: under any size cap for a long time
    began = time.monotonic()
    with pytest.raises(fetch.FetchError, match="deadline"):
        fetch.download(s.url + "slow.pth", tmp_path / "slow.pth", quiet, retries=3,
                       limits=fetch.Limits(deadline_seconds=1.0))
    assert time.monotonic() - began < 30  # bounded (generous: the machine is shared)
    assert os.listdir(tmp_path) == []


def test_an_endless_sha256sums_is_refused_after_a_small_cap(server):
    s = server({})
    s.routes["/SHA256SUMS"] = endless(s.stop)
    with pytest.raises(fetch.FetchError, match=f"larger than {fetch.SUMS_CAP} bytes"):
        fetch.read_sums(s.url)


def test_a_partial_file_planted_as_a_symlink_is_not_written_through(server, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the user's own file\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "x.pth.part").symlink_to(victim)
    s = server({"/x.pth": body(b"checkpoint bytes" * 10)})
    fetch.download(s.url + "x.pth", cache / "x.pth", quiet, retries=0)
    assert victim.read_bytes() == b"the user's own file\n"
    assert (cache / "x.pth").read_bytes() == b"checkpoint bytes" * 10
    assert not os.path.lexists(cache / "x.pth.part")


# --- redirects ----------------------------------------------------------------------------------------

def test_a_redirect_to_another_origin_is_refused_unless_named(server, tmp_path):
    other = server({"/x.pth": body(b"from elsewhere")})
    s = server({"/x.pth": redirect(other.url + "x.pth"), "/here.pth": redirect("/x-local.pth"),
                "/x-local.pth": body(b"same origin")})
    with pytest.raises(fetch.FetchError, match="another origin") as refused:
        fetch.download(s.url + "x.pth", tmp_path / "x.pth", quiet, retries=0)
    assert f"--allow-redirect {fetch.origin(other.url)}" in str(refused.value)
    assert other.requests == [] and os.listdir(tmp_path) == []
    # the same origin is followed; another one when the user names it
    fetch.download(s.url + "here.pth", tmp_path / "here.pth", quiet, retries=0)
    assert (tmp_path / "here.pth").read_bytes() == b"same origin"
    allowed = fetch.Limits(allowed_origins=frozenset({fetch.origin(other.url)}))
    fetch.download(s.url + "x.pth", tmp_path / "x.pth", quiet, retries=0, limits=allowed)
    assert (tmp_path / "x.pth").read_bytes() == b"from elsewhere"


def test_the_official_source_may_redirect_only_to_hugging_face_hosts():
    limits = fetch.Limits()
    assert fetch.redirect_allowed(fetch.OFFICIAL_URL, "https://cdn-lfs.huggingface.co/repos/x", limits)
    assert fetch.redirect_allowed(fetch.OFFICIAL_URL, "https://cas-bridge.xethub.hf.co/x", limits)
    assert not fetch.redirect_allowed(fetch.OFFICIAL_URL, "http://cdn-lfs.huggingface.co/x", limits)  # downgrade
    assert not fetch.redirect_allowed(fetch.OFFICIAL_URL, "https://huggingface.co.evil.example/x", limits)
    assert not fetch.redirect_allowed("https://mirror.lab/w/", "https://cdn-lfs.huggingface.co/x", limits)


# --- SHA256SUMS and the cache -------------------------------------------------------------------------

def test_a_sha256sums_that_misses_a_file_stops_the_fetch_before_any_download(server, tmp_path):
    files = payloads(1)
    listed = {n: d for n, d in files.items() if n != "MTL_backbone.pth"}
    s = server({f"/{n}": body(d) for n, d in files.items()} | {"/SHA256SUMS": body(sums_text(listed))})
    with pytest.raises(fetch.FetchError, match="does not list MTL_backbone.pth"):
        fetch.fetch_checkpoints(s.url, tmp_path / "cache", quiet, quiet, retries=0)
    assert s.requests == ["/SHA256SUMS"]


def test_an_updated_mirror_replaces_the_stale_cached_copy_in_one_run(server, tmp_path):
    """Issue 26 item 5: the cached copy from before the mirror was updated used to be checked against the
    new SHA256SUMS, deleted, and the run failed; only a second run succeeded."""
    cache = tmp_path / "cache"
    old, new = payloads(1), payloads(2)
    s = server({f"/{n}": body(d) for n, d in old.items()} | {"/SHA256SUMS": body(sums_text(old))})
    fetch.fetch_checkpoints(s.url, cache, quiet, quiet, retries=0)
    s.routes.update({f"/{n}": body(d) for n, d in new.items()} | {"/SHA256SUMS": body(sums_text(new))})
    s.requests.clear()
    said: list[str] = []
    got = fetch.fetch_checkpoints(s.url, cache, quiet, said.append, retries=0)
    assert {f.path.name: f.path.read_bytes() for f in got} == new
    assert sorted(s.requests) == sorted(["/SHA256SUMS", *(f"/{n}" for n in new)])
    assert all(f.verified == Verified.SUMS for f in got)
    assert sum("downloading it again" in line for line in said) == 3
    # unchanged now: every file comes from the cache
    s.requests.clear()
    fetch.fetch_checkpoints(s.url, cache, quiet, quiet, retries=0)
    assert s.requests == ["/SHA256SUMS"]


def test_without_sha256sums_nothing_is_claimed_verified(server, tmp_path):
    files = payloads(3)
    s = server({f"/{n}": body(d) for n, d in files.items()})
    got = fetch.fetch_checkpoints(s.url, tmp_path / "cache", quiet, quiet, retries=0)
    assert [f.verified for f in got] == [Verified.NOTHING] * 3
