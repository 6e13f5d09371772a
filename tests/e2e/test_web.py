"""The live page in a real browser: Debian's headless Chromium (Playwright, no downloaded browser)
against a real `aud run` with the shared models. Waits are on the page's DOM (wait_for_function) or
the daemon's events, never on the clock.

``AUD_WEB_SCREENSHOTS=docs`` also writes the README's screenshots (docs/web_*.png) as the test goes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import SHARED, require_shared
from tests.e2e.checks import wait_until
from tests.e2e.daemonproc import DaemonProcess
from tests.media import cut_clip, drop
from tests.webfakes import CHROMIUM

pytestmark = pytest.mark.slow
CLIP = SHARED / "media" / "hamilton_clip.mp4"
SHOTS = os.environ.get("AUD_WEB_SCREENSHOTS")
WAIT_MS = 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: the page's browser tests need Debian's chromium "
                    "(`apt-get install chromium`; .ci/run installs it)")
    pytest.importorskip("playwright", reason="playwright (Python) drives the browser: pip install playwright")
    require_shared("media/hamilton_clip.mp4", "models/openface3/retinaface.onnx",
                   "models/openface3/mtl.onnx", "models/openface3/star.onnx")
    clips = tmp_path_factory.mktemp("clips")
    short = cut_clip(CLIP, clips / "short.mp4", 0, 12)
    long = cut_clip(CLIP, clips / "long.mp4", 20, 120)
    junk = clips / "junk.mp4"
    junk.write_bytes(os.urandom(64 * 1024))
    port = free_port()
    d = DaemonProcess(workers=1, web_port=port, shard_frames=4).start()
    from tests.webfakes import chromium_page

    try:
        with chromium_page() as page:
            yield {"d": d, "page": page, "port": port, "short": short, "long": long, "junk": junk}
    finally:
        d.stop()


def aud_open(d: DaemonProcess) -> str:
    """What `aud open --print-only` prints: the page's address with its token."""
    proc = subprocess.run([sys.executable, "-m", "daemon", "open", "--state", str(d.state), "--print-only"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def shot(page, name: str, full_page: bool = False) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"web_{name}.png"), full_page=full_page)


def test_status_and_aud_open_say_where_the_page_is(setup):
    d, port = setup["d"], setup["port"]
    assert d.status()["web"] == f"http://127.0.0.1:{port}"
    url = aud_open(d)
    assert url.startswith(f"http://127.0.0.1:{port}/?token=") and len(url.split("token=")[1]) >= 40
    token_file = d.state / "web.token"
    assert token_file.stat().st_mode & 0o077 == 0


def test_a_request_without_the_token_is_refused(setup):
    base = f"http://127.0.0.1:{setup['port']}"
    for path, code in (("/", 401), ("/api/state", 401), ("/api/events", 401), ("/?token=nope", 403),
                       ("/files/index.html?token=nope", 403)):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=10)
        assert refused.value.code == code, path


def test_progress_moves_then_the_thumbnail_and_csv_link(setup):
    d, page = setup["d"], setup["page"]
    page.goto(aud_open(d))
    assert "token=" not in page.url  # the token became a cookie; the address is clean
    page.wait_for_function("() => document.getElementById('pill').dataset.state === 'ready'", timeout=WAIT_MS)
    # every frames_done value the running job's card shows, recorded as the DOM changes
    page.evaluate("""() => { window.seen = new Set(); window.eta = [];
        new MutationObserver(() => document.querySelectorAll('#running .job').forEach(c => {
            window.seen.add(Number(c.dataset.done) + '/' + c.dataset.total);
            const text = c.querySelector('.numbers').textContent;
            if (text.includes(' left')) window.eta.push(text); }))
          .observe(document.getElementById('running'), {subtree: true, childList: true, attributes: true}); }""")
    drop(setup["short"], d.inbox, "short.mp4")
    page.wait_for_function("""() => { const v = [...window.seen].map(s => s.split('/').map(Number));
        return v.filter(([done, total]) => done > 0 && done < total).length >= 2; }""", timeout=WAIT_MS)
    assert page.evaluate("() => window.eta.length") > 0  # the time left, shown while it ran
    card = page.locator("#results .result", has_text="short.mp4")
    card.locator("img").wait_for(timeout=WAIT_MS)
    page.wait_for_function("""() => { const img = document.querySelector('#results .result img');
        return img && img.complete && img.naturalWidth > 0; }""", timeout=WAIT_MS)
    csv_href = card.locator("a.csv").get_attribute("href")
    assert csv_href.endswith("short.csv")
    fetched = page.evaluate("h => fetch(h).then(async r => [r.status, await r.text()])", csv_href)  # the cookie
    assert fetched[0] == 200 and fetched[1].startswith("frame,")
    assert card.locator("a.sidecar").get_attribute("href").endswith("short.json")
    assert card.locator("a.png").get_attribute("href").endswith("short.png")


def test_a_failed_video_shows_its_reason(setup):
    d, page = setup["d"], setup["page"]
    drop(setup["junk"], d.inbox, "junk.mp4")
    failure = page.locator("#failures .failure", has_text="junk.mp4")
    failure.wait_for(timeout=WAIT_MS)
    reason = failure.locator(".reason").text_content()
    stored = [f for f in d.status()["recent_failures"] if f["file"] == "junk.mp4"]
    assert stored and reason == stored[0]["reason"] and reason
    failure.locator("details summary").click()
    assert "Reason:" in failure.locator("pre").text_content()  # the .error.txt beside the kept input


def test_cancel_from_the_page_cancels_the_job(setup):
    d, page = setup["d"], setup["page"]
    sub = d.subscribe()
    drop(setup["long"], d.inbox, "long.mp4")
    job = page.locator("#running .job", has_text="long.mp4")
    page.wait_for_function("""() => { const c = [...document.querySelectorAll('#running .job')]
        .find(c => c.textContent.includes('long.mp4')); return c && Number(c.dataset.done) > 0; }""",
                           timeout=WAIT_MS)
    if SHOTS:  # a picture with the bar well under way
        page.wait_for_function("""() => [...document.querySelectorAll('#running .job')]
            .some(c => Number(c.dataset.done) >= 16)""", timeout=WAIT_MS)
    shot(page, "running")
    page.once("dialog", lambda dialog: dialog.accept())
    job.locator("button.cancel").click()
    cancelled = sub.wait_for(lambda e: e["type"] == "job_cancelled" and e["file"] == "long.mp4", timeout=120)
    page.locator("#failures .failure.cancelled", has_text="long.mp4").wait_for(timeout=WAIT_MS)
    page.wait_for_function("() => !document.querySelector('#running .job')", timeout=WAIT_MS)
    states = {j["job"] for j in d.status()["running"]}
    assert cancelled["job"] not in states
    sub.close()
    shot(page, "ended", full_page=True)


def test_the_static_index_opens_from_file_and_lists_the_same_results(setup):
    d, page = setup["d"], setup["page"]
    page.goto(aud_open(d))
    page.locator("#results .result").first.wait_for(timeout=WAIT_MS)
    live = sorted(page.locator("#results .result a.csv").evaluate_all("as => as.map(a => a.getAttribute('href'))"))
    index = d.outbox / "index.html"
    names = [h.rsplit("/", 1)[1] for h in live]
    wait_until(lambda: all(n in index.read_text() for n in names) and "long.mp4" in index.read_text(), 60,
               "index.html rewritten after the last job")  # a file's content: no event announces it
    page.goto(index.as_uri())
    page.locator(".result").first.wait_for(timeout=WAIT_MS)
    static = sorted("/files/" + h for h in page.locator(".result .links a:first-child").evaluate_all(
        "as => as.map(a => a.getAttribute('href'))"))
    assert static == live and live
    page.wait_for_function("""() => [...document.querySelectorAll('.result img')]
        .every(img => img.complete && img.naturalWidth > 0)""", timeout=WAIT_MS)
    assert page.locator(".failure", has_text="junk.mp4").count() == 1
    assert page.locator("#runs details.run").count() >= 1


def test_phone_width(setup):
    d, page = setup["d"], setup["page"]
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(aud_open(d))
    page.locator("#results .result img").first.wait_for(timeout=WAIT_MS)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide at a phone's 390 px: it scrolls sideways"
    shot(page, "phone")
    page.set_viewport_size({"width": 1280, "height": 800})
