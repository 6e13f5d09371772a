"""Checkpoints in the three official container formats, with random weights made in the test, and a
local HTTP server that serves them the way a mirror would (Range requests, a dropped connection)."""

from __future__ import annotations

import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from daemon.tools.checkpoints import OFFICIAL, Role, build, container_for


def write_checkpoints(directory: Path, seed: int = 0, detector_wrapped: bool = True,
                      roles: tuple[Role, ...] = tuple(Role)) -> Path:
    """Alignment_RetinaFace.pth, MTL_backbone.pth and Landmark_98.pkl with random weights. With
    ``detector_wrapped`` the detector is saved as ``{"state_dict": {"module.<key>": …}}`` (the
    DataParallel form the official loader also accepts), else as a plain state dict. ``roles`` limits
    the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    for spec in (s for s in OFFICIAL if s.role in roles):
        state = build(spec.role).state_dict()
        if spec.role is Role.DETECTOR and detector_wrapped:
            content: object = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
        else:
            content = container_for(spec.role, state)
        torch.save(content, directory / spec.filename)
    return directory


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 running ``handler`` on a daemon thread until ``close``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], daemon_threads: bool = False) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = daemon_threads
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@dataclass
class Mirror:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``files`` (name -> bytes). A name in ``drop_once`` gets,
    at its first request, the headers of the whole file and half the body, then the connection is closed.
    ``requests`` logs (name, Range header or None) for every GET."""

    files: dict[str, bytes]
    drop_once: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = urllib.parse.unquote(self.path.lstrip("/"))
                wanted = self.headers.get("Range")
                mirror.requests.append((name, wanted))
                data = mirror.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if name in mirror.drop_once and not match:
                    mirror.drop_once.discard(name)
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

            def log_message(self, *args) -> None:
                pass

        self.server = LocalServer(Handler)

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.server.close()


def served(directory: Path) -> dict[str, bytes]:
    return {spec.filename: (directory / spec.filename).read_bytes() for spec in OFFICIAL}
