"""``aud open``: the daemon's live page in the default browser (the address with its token), or, with no
daemon or no page, the outbox's static ``index.html``."""

from __future__ import annotations

import asyncio
import webbrowser
from pathlib import Path
from typing import Any

from .. import protocol as msg
from ..shell import summary
from ..shell.web import page_url, read_token
from .client import ClientError, request


def open_page(settings: Any, socket: Path, out: Any, err: Any, browse: bool = True) -> int:
    """``aud open``: ask the daemon where its page is, print the address with the token, open it. With
    no daemon (or no page), the outbox's static index.html is opened instead, when there is one."""
    base: str | None = None
    try:
        reply = asyncio.run(request(socket, msg.Status()))
        base = (reply.data or {}).get("web") if reply.ok else None
        why = "the daemon has no page (web_port = 0, or its port was taken: see its log)"
    except ClientError as exc:
        why = f"the daemon is not running ({exc})"
    if base is None:
        index = Path(settings.outbox) / summary.INDEX_NAME
        if not index.is_file():
            err.print(f"aud open: {why}; no {index} either")
            return 1
        err.print(f"aud open: {why}; the static summary instead: {index.as_uri()}")
        if browse:
            webbrowser.open(index.as_uri())
        return 0
    try:
        url = page_url(base, read_token(settings.state))
    except (OSError, ValueError) as exc:
        err.print(f"aud open: cannot read the page's token: {exc}")
        return 1
    out.print(url, markup=False)
    if browse and not webbrowser.open(url):
        err.print("aud open: no browser could be started here; open the address above")
    return 0
