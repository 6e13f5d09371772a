"""The live page: an aiohttp server on 127.0.0.1 inside the daemon's own loop.

It shows the morning view (``view.py``): a snapshot as JSON, live changes as Server-Sent Events, the
results in pages, and the outbox's result files (CSV, sidecar, PNG; nothing else, nothing outside the
outbox). Every asset is package data (``web_static/``): no CDN, nothing from the internet.

Access: every request carries the state directory's token (``<state>/web.token``, 0600), as
``?token=`` once (answered with an HttpOnly SameSite=Strict cookie and a redirect that drops it from
the address) or as that cookie; compared in constant time. No token: 401; a wrong one: 403. The page
is read-only except cancel and re-run, which are POSTs that also need a same-origin request
(``Sec-Fetch-Site: same-origin``, else an ``Origin`` equal to the page's own).

A port that is taken is logged and the daemon runs on without the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import protocol as msg
from ..jobs.store import JobState, JobStore
from . import files, summary
from .errors import CommandError
from .view import MorningView

log = logging.getLogger("aud.web")

TOKEN_FILE = "web.token"
COOKIE = "aud_token"
HOST = "127.0.0.1"
PAGE_SIZE = 60
"""Results per page of /api/results (the page asks for more as the user scrolls)."""
STREAM_QUEUE = 512
"""Messages an event stream may owe before it is closed (the browser reconnects and starts afresh)."""
STATIC = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
FILE_TYPES = {".csv": "text/csv; charset=utf-8", ".json": "application/json", ".png": "image/png"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def token_path(state: Path) -> Path:
    return Path(state) / TOKEN_FILE


def load_or_create_token(state: Path) -> str:
    """The state directory's page token; made (``secrets.token_urlsafe``, mode 0600) when missing."""
    path = token_path(state)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(state)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_token(state: Path) -> str:
    path = token_path(state)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{path} is empty")
    return token


def page_url(base: str, token: str) -> str:
    return f"{base}/?token={token}"


def _asset(name: str) -> bytes:
    return resources.files(summary.STATIC_PACKAGE).joinpath(name).read_bytes()


class WebPage:
    """The page's HTTP server; ``start`` returns its address, or None when it could not listen."""

    def __init__(self, view: MorningView, token: str, port: int, handler: Callable[[msg.Command], Awaitable[Any]],
                 store: JobStore, outbox: Path, inbox: Path):
        self.view = view
        self.token = token
        self.port = port
        self.handler = handler
        self.store = store
        self.outbox = Path(outbox).resolve()
        self.inbox = Path(inbox)
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Queue[bytes | None]] = set()
        self._unwatch: Callable[[], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=4096)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/results", self._results)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/files/{path:.+}", self._file)
        app.router.add_post("/api/jobs/{job:\\d+}/cancel", self._cancel)
        app.router.add_post("/api/jobs/{job:\\d+}/rerun", self._rerun)
        return app

    async def start(self) -> str | None:
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, HOST, self.port)  # (SO_REUSEADDR: a restart binds past TIME_WAIT)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            log.warning("the page cannot listen on %s:%d (%s); the daemon runs on without it (set web_port, "
                        "or --web-port, to a free port; 0 turns the page off)", HOST, self.port,
                        exc.strerror or exc)
            return None
        self._runner = runner
        port = self.port or _bound_port(runner)
        self.url = f"http://{HOST}:{port}"
        self._unwatch = self.view.watch(self._fan_out)
        log.info("page on %s (`aud open` opens it with its token)", self.url)
        return self.url

    async def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
        for queue in list(self._streams):
            _offer(queue, None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ access

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        given = request.query.get("token")
        cookie = request.cookies.get(COOKIE)
        if given is None and cookie is None:
            raise web.HTTPUnauthorized(text="aud: this page needs its token; `aud open` prints the address "
                                            "with it\n", headers=_SECURITY)
        if not any(v is not None and hmac.compare_digest(v.encode(), self.token.encode()) for v in (given, cookie)):
            raise web.HTTPForbidden(text="aud: wrong token (`aud open` prints the right address)\n",
                                    headers=_SECURITY)
        if request.method != "GET" and not self._same_origin(request):
            raise web.HTTPForbidden(text="aud: cross-origin request refused\n", headers=_SECURITY)
        if given is not None and request.method == "GET" and request.path == "/":
            response: web.StreamResponse = web.Response(status=303, headers={**_SECURITY, "Location": "/"})
        else:  # (the redirect above drops the token from the address bar)
            response = await handler(request)
        if given is not None:
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return response

    def _same_origin(self, request: web.Request) -> bool:
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None:
            return site == "same-origin"
        origin = request.headers.get("Origin")
        return origin is not None and self.url is not None and origin in (self.url, self.url.replace(HOST,
                                                                                                    "localhost"))

    # ------------------------------------------------------------------ pages and data

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return _bytes(_asset("index.html"), "text/html; charset=utf-8")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return _bytes(_asset(name), STATIC[name])

    async def _state(self, request: web.Request) -> web.StreamResponse:
        return _json(self.view.state())

    async def _results(self, request: web.Request) -> web.StreamResponse:
        try:
            offset = max(0, int(request.query.get("offset", "0")))
            limit = min(500, max(1, int(request.query.get("limit", str(PAGE_SIZE)))))
        except ValueError:
            raise web.HTTPBadRequest(text="offset and limit are numbers\n") from None
        return _json(self.view.results_page(offset, limit))

    async def _file(self, request: web.Request) -> web.StreamResponse:
        path = self.result_file(request.match_info["path"])
        if path is None:
            raise web.HTTPNotFound(text="no such result file\n")
        return web.FileResponse(path, headers={**_SECURITY, "Content-Type": FILE_TYPES[path.suffix.lower()],
                                               "Cache-Control": "no-cache"})

    def result_file(self, rel: str) -> Path | None:
        """A CSV, JSON or PNG inside the outbox (after resolving links), or None."""
        if "\x00" in rel or rel.startswith("/"):
            return None
        parts = Path(rel).parts
        if any(part in ("..", "") or part.startswith(".") for part in parts):
            return None
        try:
            path = (self.outbox / rel).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not path.is_relative_to(self.outbox) or not path.is_file() or path.suffix.lower() not in FILE_TYPES:
            return None
        return path

    # ------------------------------------------------------------------ live events

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={**_SECURITY, "Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_QUEUE)
        self._streams.add(queue)
        try:
            await response.write(_sse("state", self.view.state()))
            while (data := await queue.get()) is not None:
                await response.write(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(queue)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    def _fan_out(self, kind: str, data: dict[str, Any]) -> None:
        line = _sse(kind, data)
        for queue in list(self._streams):
            if not _offer(queue, line):
                self._streams.discard(queue)  # too far behind: end it, the browser reconnects afresh
                _offer(queue, None, force=True)

    # ------------------------------------------------------------------ actions

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        return await self._command(msg.Cancel(job=int(request.match_info["job"])))

    async def _rerun(self, request: web.Request) -> web.StreamResponse:
        job_id = int(request.match_info["job"])
        path = await asyncio.to_thread(self.rerun_input, job_id)
        if path is None:
            return _json({"ok": False, "error": f"job {job_id}: its video is no longer where aud left it"}, 409)
        return await self._command(msg.Submit(path=str(path), force=True))

    def rerun_input(self, job_id: int) -> Path | None:
        """Where an ended job's video is now: beside the result's sidecar says, in .failed/, or its source."""
        job = self.store.get(job_id)
        if job is None or job.state in (JobState.QUEUED, JobState.RUNNING):
            return None
        candidates = []
        if job.csv_path:
            data = summary.read_sidecar(Path(job.csv_path).with_suffix(".json"))
            if data and data.get("video"):
                candidates.append(Path(str(data["video"])))
        candidates += [self.inbox / files.FAILED_DIR / job.subdir / job.name, self.inbox / files.DONE_DIR /
                       job.subdir / job.name, Path(job.source)]
        return next((p for p in candidates if p.is_file()), None)

    async def _command(self, command: msg.Command) -> web.StreamResponse:
        try:
            data = await self.handler(command)
        except CommandError as exc:
            return _json({"ok": False, "error": str(exc)}, 409)
        return _json({"ok": True, "data": data})


_SECURITY = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
             "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


def _bytes(body: bytes, content_type: str) -> web.Response:
    return web.Response(body=body, headers={**_SECURITY, "Content-Type": content_type})


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data, default=str).encode(), status=status,
                        headers={**_SECURITY, "Content-Type": "application/json"})


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _offer(queue: asyncio.Queue[bytes | None], item: bytes | None, force: bool = False) -> bool:
    try:
        queue.put_nowait(item)
        return True
    except asyncio.QueueFull:
        if force:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(item)
        return False


def _bound_port(runner: web.AppRunner) -> int:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        for sock in getattr(server, "sockets", None) or []:
            return int(sock.getsockname()[1])
    raise RuntimeError("the page's server has no socket")


async def start_page(view: MorningView, settings: Any, handler: Callable[[msg.Command], Awaitable[Any]],
                     store: JobStore) -> WebPage | None:
    """The daemon's hook: the page on ``settings.web_port`` (0: none), its address on the view."""
    if not settings.web_port:
        return None
    page = WebPage(view, load_or_create_token(settings.state), settings.web_port, handler, store,
                   settings.outbox, settings.inbox)
    view.url = await page.start()
    return page if view.url else None
