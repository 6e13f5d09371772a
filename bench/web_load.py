"""How fast the morning view opens with a large outbox, in Debian's headless Chromium.

Makes ``--results`` (default 1,000) fake but well-formed result triplets (CSV, sidecar JSON, a
plot-sized PNG; tests/webfakes.py) in a temporary outbox, seeds the view from it as the daemon does at
start, serves the live page on 127.0.0.1 (the daemon's own aiohttp server, in a thread here), and times:

* live: navigation start -> the first page of result cards rendered (``PAGE_SIZE``), and -> the
  thumbnails on screen decoded; then every result card rendered ("Show more" until the end);
* static: ``index.html`` (written by the view, as after a job) from file:// -> its load event.

Each is the median of ``--runs`` fresh page loads. Run:

    PYTHONPATH=$PWD .venv/bin/python bench/web_load.py [--results 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from daemon import protocol as msg
from daemon.config import Settings
from daemon.jobs.store import JobStore
from daemon.shell import summary, web
from daemon.shell.view import MorningView
from tests.webfakes import CHROMIUM, chromium_page, fake_results


def serve(settings: Settings, ready: threading.Event, box: dict, stop: threading.Event) -> None:
    async def status(command: msg.Command) -> dict:
        return msgspec.to_builtins(msg.StatusReply(
            state="ready", paused=False, queued=[], running=[], waiting=[], duplicates=[], recent_failures=[],
            workers=msg.Workers(count=2, provider="cpu", providers=["cpu"], restarts=0, executor="process",
                                state="ok"),
            counts={"done": len(box.get("view").results) if box.get("view") else 0}, versions={},
            inbox=str(settings.inbox), outbox=str(settings.outbox)))

    async def main() -> None:
        store = JobStore(settings.database_path)
        view = MorningView(settings, store, status)
        box["view"] = view
        started = time.perf_counter()
        await view.seed()
        box["seed_s"] = time.perf_counter() - started
        page = web.WebPage(view, web.load_or_create_token(settings.state), 0, status, store, settings.outbox,
                           settings.inbox)
        box["url"] = await page.start()
        box["token"] = page.token
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)  # a bench's server thread: checks its stop flag
        await page.close()
        await view.close()
        store.close()

    asyncio.run(main())


def time_live(page, url: str) -> tuple[float, float, float]:
    page.goto(url, wait_until="commit")
    page.wait_for_function(f"() => document.querySelectorAll('#results .result').length >= "
                           f"Math.min({web.PAGE_SIZE}, Number(document.getElementById('results-count').textContent))"
                           " && Number(document.getElementById('results-count').textContent) > 0", timeout=120_000)
    first = page.evaluate("() => performance.now()")
    page.wait_for_function("""() => [...document.querySelectorAll('#results .result img')]
        .filter(img => { const r = img.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; })
        .every(img => img.complete && img.naturalWidth > 0)""", timeout=120_000)
    images = page.evaluate("() => performance.now()")
    page.evaluate("""async () => {  // "Show more" until every card is there, each page once it is rendered
        const box = document.getElementById('results');
        const total = () => Number(document.getElementById('results-count').textContent);
        while (box.querySelectorAll('.result').length < total()) {
            const grew = new Promise(r => new MutationObserver((_, o) => { o.disconnect(); r(); })
                .observe(box, {childList: true}));
            document.getElementById('more').click();
            await grew;
        } }""")
    every = page.evaluate("() => performance.now()")
    return first / 1000, images / 1000, every / 1000


def time_static(page, index: Path) -> float:
    page.goto(index.as_uri(), wait_until="load")
    return page.evaluate("() => performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="aud-web-bench-"))
    settings = Settings(inbox=root / "inbox", outbox=root / "outbox", state=root / "state", web_port=0)
    settings.ensure_dirs()
    made = time.perf_counter()
    fake_results(settings.outbox, args.results)
    print(f"{args.results} result triplets in {time.perf_counter() - made:.1f} s ({settings.outbox})")
    ready, stop, box = threading.Event(), threading.Event(), {}
    thread = threading.Thread(target=serve, args=(settings, ready, box, stop), daemon=True)
    thread.start()
    if not ready.wait(300):
        print("the page did not start", file=sys.stderr)
        return 1
    url = web.page_url(box["url"], box["token"])
    index = settings.outbox / summary.INDEX_NAME
    rows = []
    try:
        with chromium_page() as page:
            for _ in range(args.runs):
                rows.append((*time_live(page, url), time_static(page, index)))
                page.context.clear_cookies()
    finally:
        stop.set()
        thread.join(30)
        size = (settings.outbox / summary.INDEX_NAME).stat().st_size
        shutil.rmtree(root, ignore_errors=True)
    cols = list(zip(*rows))
    med = [statistics.median(c) for c in cols]
    print(f"view seeded from the outbox (sidecars read) in {box['seed_s']:.2f} s")
    print(f"live page, median of {args.runs}: first {web.PAGE_SIZE} cards {med[0]:.2f} s, their thumbnails "
          f"{med[1]:.2f} s, all {args.results} cards ('Show more' to the end) {med[2]:.2f} s")
    print(f"static index.html ({size / 1e6:.2f} MB, {args.results} results, lazy thumbnails): "
          f"load event {med[3]:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
