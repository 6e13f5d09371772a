"""The live page's server (a real aiohttp server on 127.0.0.1, a real HTTP client), the morning view
it shows and the outbox's index.html: access, file serving, actions, live events."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from daemon import protocol as msg
from daemon.cli.open import open_page
from daemon.config import Settings
from daemon.jobs.store import JobStore
from daemon.shell import summary, web
from daemon.shell.errors import CommandError
from daemon.shell.view import MorningView
from tests.webfakes import fake_results

pytestmark = pytest.mark.usefixtures("isolated_config")
TIMEOUT = 20.0


def make_folders(settings: Settings) -> None:
    """The daemon's folders, as ``aud run`` makes them at start-up."""
    for folder in (settings.inbox, settings.outbox, settings.state):
        folder.mkdir(parents=True, exist_ok=True)


class FakeDaemon:
    """The commands a page may send, answered like the daemon's Commands (recorded for the test)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.commands: list[msg.Command] = []
        self.running: list[msg.RunningJob] = []

    async def handle(self, command: msg.Command) -> dict[str, Any] | None:
        self.commands.append(command)
        if isinstance(command, msg.Status):
            return msgspec.to_builtins(msg.StatusReply(
                state="ready", paused=False, queued=[msg.JobLine(job=9, file="next.mp4")], running=self.running,
                waiting=[msg.WaitingFile(file="copying.mp4", reason="still being copied")], duplicates=[],
                recent_failures=[], workers=msg.Workers(count=2, provider="cpu", providers=["cpu"], restarts=0,
                                                        executor="process", state="ok"),
                counts={"done": 0}, versions={}, inbox=str(self.settings.inbox), outbox=str(self.settings.outbox)))
        if isinstance(command, msg.Cancel):
            if command.job != 7:
                raise CommandError(f"no job {command.job}")
            return {"job": 7, "state": "cancelled"}
        if isinstance(command, msg.Submit):
            return {"job": 99, "file": Path(command.path).name, "state": "queued", "outcome": "queued"}
        return None


def run_page(tmp_path: Path, body: Callable[..., Awaitable[Any]], results: int = 0) -> Any:
    """Start a view and its page on a free port around ``body(page, view, daemon, session, base)``."""
    settings = Settings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", state=tmp_path / "state")
    make_folders(settings)
    if results:
        fake_results(settings.outbox, results)

    async def main() -> Any:
        store = JobStore(settings.database_path)
        daemon = FakeDaemon(settings)
        view = MorningView(settings, store, daemon.handle)
        await view.seed()
        page = web.WebPage(view, web.load_or_create_token(settings.state), 0, daemon.handle, store,
                           settings.outbox, settings.inbox)
        base = await page.start()
        assert base is not None
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
                return await asyncio.wait_for(body(page, view, daemon, session, base), TIMEOUT)
        finally:
            await page.close()
            await view.close()
            store.close()

    return asyncio.run(main())


def cookie(page: web.WebPage) -> dict[str, str]:
    return {"Cookie": f"{web.COOKIE}={page.token}"}


# --------------------------------------------------------------------------- token


def test_token_is_made_once_private_and_random(tmp_path: Path) -> None:
    token = web.load_or_create_token(tmp_path)
    assert stat.S_IMODE(os.stat(web.token_path(tmp_path)).st_mode) == 0o600
    assert len(token) >= 40 and web.load_or_create_token(tmp_path) == token
    (tmp_path / "other").mkdir()
    assert web.load_or_create_token(tmp_path / "other") != token


def test_requests_without_the_token_are_refused(tmp_path: Path) -> None:
    async def body(page, view, daemon, session, base):
        paths = ["/", "/api/state", "/api/results", "/api/events", "/static/app.js",
                 f"/files/{summary.INDEX_NAME}", "/files/session%201/participant%200001.csv"]
        for path in paths:
            async with session.get(base + path) as r:
                assert r.status == 401, path
            async with session.get(base + path, headers={"Cookie": f"{web.COOKIE}=wrong"}) as r:
                assert r.status == 403, path
            async with session.get(base + path + ("&" if "?" in path else "?") + "token=wrong") as r:
                assert r.status == 403, path
        async with session.post(base + "/api/jobs/7/cancel", headers={"Sec-Fetch-Site": "same-origin"}) as r:
            assert r.status == 401
        assert not any(isinstance(c, msg.Cancel) for c in daemon.commands)

    run_page(tmp_path, body, results=1)


def test_the_token_once_then_a_strict_cookie(tmp_path: Path) -> None:
    async def body(page, view, daemon, session, base):
        async with session.get(f"{base}/?token={page.token}", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/"  # the token leaves the address bar
            set_cookie = r.headers["Set-Cookie"]
        assert f"{web.COOKIE}={page.token}" in set_cookie
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        async with session.get(base + "/", headers=cookie(page)) as r:
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]
            html = await r.text()
            assert "Content-Security-Policy" in r.headers
        assert 'src="/static/app.js"' in html and "http" not in html.replace("http-equiv", "")  # nothing remote
        for name in ("app.js", "style.css", "favicon.svg"):
            async with session.get(f"{base}/static/{name}", headers=cookie(page)) as r:
                assert r.status == 200, name
                text = (await r.text()).replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
                assert "http://" not in text and "https://" not in text

    run_page(tmp_path, body)


# --------------------------------------------------------------------------- files


def test_result_files_are_served_from_the_outbox_only(tmp_path: Path) -> None:
    secret = tmp_path / "outside.csv"
    secret.write_text("not yours\n")

    async def body(page, view, daemon, session, base):
        folder = page.outbox / "session 1"
        (folder / "link.csv").symlink_to(secret)
        (folder / "movie.mp4").write_bytes(b"x")
        (folder / ".hidden.csv").write_text("x")
        good = "/files/session%201/participant%200001.csv"
        async with session.get(base + good, headers=cookie(page)) as r:
            assert r.status == 200 and (await r.text()).startswith("frame,")
        async with session.get(base + good.replace(".csv", ".png"), headers=cookie(page)) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/png"
        refused = ["/files/../state/web.token", "/files/%2e%2e/state/web.token", "/files/..%2fstate%2fweb.token",
                   "/files/session%201/..%2f..%2foutside.csv", "/files/session%201/link.csv",
                   "/files/session%201/movie.mp4", "/files/session%201/.hidden.csv", "/files//etc/passwd",
                   "/files/%2fetc%2fpasswd", "/files/session%201/nothing.csv"]
        for path in refused:
            async with session.get(base + path, headers=cookie(page)) as r:
                assert r.status in (400, 403, 404), path
                assert "not yours" not in await r.text() and page.token not in await r.text()
        assert page.result_file("../outside.csv") is None and page.result_file("session 1/link.csv") is None

    run_page(tmp_path, body, results=2)


# --------------------------------------------------------------------------- actions


def test_cancel_and_rerun_need_a_same_origin_post(tmp_path: Path) -> None:
    async def body(page, view, daemon, session, base):
        url = base + "/api/jobs/7/cancel"
        async with session.get(url, headers=cookie(page)) as r:
            assert r.status == 405
        for headers in ({}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                        {"Origin": "http://evil.example"}, {"Origin": "null"}):
            async with session.post(url, headers={**cookie(page), **headers}) as r:
                assert r.status == 403, headers
        assert not any(isinstance(c, msg.Cancel) for c in daemon.commands)
        async with session.post(url, headers={**cookie(page), "Sec-Fetch-Site": "same-origin"}) as r:
            assert r.status == 200 and (await r.json())["data"]["state"] == "cancelled"
        async with session.post(base + "/api/jobs/8/cancel", headers={**cookie(page), "Origin": base}) as r:
            assert r.status == 409 and (await r.json())["error"] == "no job 8"
        assert [c.job for c in daemon.commands if isinstance(c, msg.Cancel)] == [7, 8]

    run_page(tmp_path, body)


def test_rerun_submits_the_kept_video_with_force(tmp_path: Path) -> None:
    async def body(page, view, daemon, session, base):
        kept = page.inbox / ".failed" / "talk.mp4"
        kept.parent.mkdir(parents=True)
        kept.write_bytes(b"video")
        job, _ = page.store.add_job("f" * 16, page.inbox / "talk.mp4", "", "talk.mp4")
        page.store.fail(job.id, "no face")
        async with session.post(f"{base}/api/jobs/{job.id}/rerun",
                                headers={**cookie(page), "Sec-Fetch-Site": "same-origin"}) as r:
            assert r.status == 200, await r.text()
        submit = [c for c in daemon.commands if isinstance(c, msg.Submit)]
        assert submit == [msg.Submit(path=str(kept), force=True)]
        kept.unlink()
        async with session.post(f"{base}/api/jobs/{job.id}/rerun",
                                headers={**cookie(page), "Sec-Fetch-Site": "same-origin"}) as r:
            assert r.status == 409 and "no longer" in (await r.json())["error"]

    run_page(tmp_path, body)


# --------------------------------------------------------------------------- the view and its stream


def test_the_stream_starts_with_the_state_then_carries_events(tmp_path: Path) -> None:
    async def body(page, view, daemon, session, base):
        async with session.get(base + "/api/events", headers=cookie(page)) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            kind, state = await next_event(r)
            assert kind == "state" and state["queued"] == [{"job": 9, "file": "next.mp4"}]
            assert state["waiting"][0]["reason"] == "still being copied" and state["results_total"] == 3
            view.publish(msg.JobProgress(job=5, file="a.mp4", frames_done=10, frames_total=40, fps=2.0, eta_s=15.0))
            kind, progress = await next_event(r)
            assert kind == "progress" and progress["frames_done"] == 10 and progress["eta_s"] == 15.0
            daemon.running = [msg.RunningJob(job=5, file="a.mp4", frames_done=8, frames_total=40, fps=2.0)]
            view.publish(msg.JobStarted(job=6, file="b.mp4"))
            kind, state = await next_event(r)
            assert kind == "state" and state["running"][0]["frames_done"] == 10  # the live progress wins
            new = fake_results(page.outbox / "new", 1, folders=1)[0]
            daemon.running = []
            view.publish(msg.JobDone(job=1, file="participant 0001.mp4", csv=str(new), frames=6, fps=1.0))
            kinds = {}
            while "result" not in kinds:
                kind, data = await next_event(r)
                kinds[kind] = data
            assert kinds["result"]["csv"] == "new/participant 0001.csv"
        assert view.results[0].csv == "new/participant 0001.csv" and len(view.results) == 4

    run_page(tmp_path, body, results=3)


async def next_event(response: aiohttp.ClientResponse) -> tuple[str, dict]:
    kind, data = "", ""
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and kind:
            return kind, json.loads(data)


def test_results_come_in_pages_newest_first(tmp_path: Path) -> None:
    async def body(page, view, daemon, session, base):
        async with session.get(base + "/api/results?offset=0&limit=60", headers=cookie(page)) as r:
            first = await r.json()
        async with session.get(base + "/api/results?offset=60&limit=60", headers=cookie(page)) as r:
            second = await r.json()
        async with session.get(base + "/api/results?offset=x", headers=cookie(page)) as r:
            assert r.status == 400
        assert first["total"] == 75 and len(first["results"]) == 60 and len(second["results"]) == 15
        jobs = [x["job"] for x in first["results"] + second["results"]]
        assert sorted(jobs) == list(range(1, 76))
        one = first["results"][0]
        assert one["csv"].endswith(".csv") and one["json"].endswith(".json") and one["png"].endswith(".png")

    run_page(tmp_path, body, results=75)


def test_a_failure_keeps_its_reason_and_error_text(tmp_path: Path) -> None:
    async def body(page, view, daemon, session, base):
        job, _ = page.store.add_job("e" * 16, page.inbox / "junk.mp4", "", "junk.mp4")
        page.store.fail(job.id, "not a video")
        kept = page.inbox / ".failed" / "junk.mp4"
        kept.parent.mkdir(parents=True)
        kept.write_bytes(b"junk")
        kept.with_name("junk.mp4.error.txt").write_text("aud could not process junk.mp4.\n\nReason: not a video\n")
        view.publish(msg.JobFailed(job=job.id, file="junk.mp4", reason="not a video"))
        await view.close()  # the event taken in and index.html written
        failure = view.failures[0]
        assert (failure.job, failure.reason, failure.state) == (job.id, "not a video", "failed")
        assert "Reason: not a video" in (failure.error or "")
        index = (page.outbox / summary.INDEX_NAME).read_text()
        assert "junk.mp4" in index and "Reason: not a video" in index

    run_page(tmp_path, body)


def test_a_busy_port_is_logged_and_the_page_stays_off(tmp_path: Path, caplog) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(inbox=tmp_path / "i", outbox=tmp_path / "o", state=tmp_path / "s", web_port=port)
        make_folders(settings)

        async def main() -> None:
            store = JobStore(settings.database_path)
            daemon = FakeDaemon(settings)
            view = MorningView(settings, store, daemon.handle)
            assert await web.start_page(view, settings, daemon.handle, store) is None
            assert view.url is None
            store.close()

        asyncio.run(main())
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
    off = Settings(inbox=tmp_path / "i", outbox=tmp_path / "o", state=tmp_path / "s", web_port=0)
    assert asyncio.run(web.start_page(None, off, None, None)) is None  # type: ignore[arg-type]


# --------------------------------------------------------------------------- index.html


def test_index_html_lists_results_relatively_and_escapes_names(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    fake_results(outbox, 3)
    odd = outbox / "<b>odd & name<b>.csv"
    odd.write_text("frame\n")
    (outbox / "<b>odd & name<b>.json").write_text(json.dumps({"job": 50, "job_key": "k", "frames": 1,
                                                               "video": "/in/<b>odd & name<b>.mp4"}))
    (outbox / "not a sidecar.json").write_text("[1, 2]")
    results, runs = summary.scan(outbox)
    assert len(results) == 4 and set(runs) == {"0123456789abcdef", "k"}
    failures = [summary.Failure(job=60, file="junk.mp4", reason="not a video <script>", error="Reason: x")]
    path = summary.write(outbox, results, failures, runs)
    text = path.read_text()
    assert "<b>odd" not in text and "&lt;b&gt;odd &amp; name&lt;b&gt;" in text and "<script>" not in text
    assert 'href="session%201/participant%200001.csv"' in text and 'loading="lazy"' in text
    assert str(outbox) not in text.replace(str(outbox / ""), "")  # links are relative
    assert "not a video &lt;script&gt;" in text and "detector" in text and "csv_style" in text
    assert not list(outbox.glob(".*.tmp"))


# --------------------------------------------------------------------------- aud open, aud status


class Printed:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, text: object = "", **_: object) -> None:
        self.lines.append(str(text))


def test_aud_open_without_a_daemon_offers_the_static_summary(tmp_path: Path) -> None:
    settings = Settings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", state=tmp_path / "state")
    make_folders(settings)
    out, err = Printed(), Printed()
    assert open_page(settings, settings.socket_path, out, err, browse=False) == 1
    assert "not running" in err.lines[-1]
    summary.write(settings.outbox, [], [], {})
    assert open_page(settings, settings.socket_path, out, err, browse=False) == 0
    assert (settings.outbox / summary.INDEX_NAME).as_uri() in err.lines[-1] and not out.lines


def test_aud_status_says_where_the_page_is() -> None:
    from rich.console import Console

    from daemon.cli.client import render_status

    console = Console(record=True, width=200)
    render_status({"state": "ready", "web": "http://127.0.0.1:8765", "counts": {}}, console)
    text = console.export_text()
    assert "page    http://127.0.0.1:8765" in text
