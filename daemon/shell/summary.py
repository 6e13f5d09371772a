"""The outbox's results as data, and ``index.html``: the static summary beside them.

A result is a main CSV with its sidecar JSON (``<stem>.json``) and, when plots are on, its PNG
(``<stem>.png``) beside it (``daemon.output.files.write_outputs`` writes them in that order, the CSV
last). ``scan`` reads every sidecar of the outbox once; ``render`` turns results and failures into
one self-contained page (the stylesheet inlined, links and thumbnails relative to the outbox), so it
opens with a double click when the daemon is off; ``write`` replaces it atomically.
"""

from __future__ import annotations

import html
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..core.atomic import atomic_write_text

log = logging.getLogger("aud.summary")

INDEX_NAME = "index.html"
RESULT_SUFFIXES = (".csv", ".json", ".png")
"""The files of a result the page links to (and the only ones the live page serves)."""
SIDECAR_KEYS = ("job", "job_key", "frames")
"""A JSON in the outbox is a result's sidecar when it has these keys and its CSV is beside it."""
SIDECAR_MAX_BYTES = 1 << 20
STATIC_PACKAGE = "daemon.shell.web_static"


@dataclass(frozen=True)
class Run:
    """What shaped a set of results: the job key, the models (role -> sha256 and file) and the options."""

    key: str
    models: dict[str, dict[str, str]]
    options: dict[str, Any]
    providers: dict[str, str]
    packages: dict[str, str]


@dataclass(frozen=True)
class Result:
    """One finished job's files (paths relative to the outbox, POSIX) and what its sidecar says."""

    job: int
    name: str
    csv: str
    json: str
    png: str | None
    frames: int
    frames_with_face: int | None
    faces: int | None
    fps: float | None
    wall_seconds: float | None
    finished_at: str
    video: str
    key: str
    mtime: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Failure:
    """A job that failed (or was cancelled): why, in the words the user sees in ``.failed/``."""

    job: int
    file: str
    reason: str
    state: str = "failed"  # or "cancelled"
    error: str | None = None  # the text of <input>.error.txt beside the kept input, when there is one
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's JSON object, or None for any JSON that is not one (or cannot be read)."""
    try:
        if path.stat().st_size > SIDECAR_MAX_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or any(k not in data for k in SIDECAR_KEYS):
        return None
    return data


def read_result(outbox: Path, sidecar: Path) -> tuple[Result, Run] | None:
    """The result whose sidecar is ``sidecar`` (inside ``outbox``), with the run that made it; None
    when the JSON is no sidecar or its CSV is not there (a result is complete once its CSV is)."""
    data = read_sidecar(sidecar)
    csv = sidecar.with_suffix(".csv")
    if data is None or not csv.is_file():
        return None
    png = sidecar.with_suffix(".png")
    rel = sidecar.parent.relative_to(outbox)
    video = str(data.get("video") or data.get("received_as") or "")
    try:
        mtime = csv.stat().st_mtime
    except OSError:
        mtime = 0.0
    result = Result(
        job=_int(data.get("job")) or 0,
        name=Path(video).name or csv.stem,
        csv=(rel / csv.name).as_posix(),
        json=(rel / sidecar.name).as_posix(),
        png=(rel / png.name).as_posix() if png.is_file() else None,
        frames=_int(data.get("frames")) or 0,
        frames_with_face=_int(data.get("frames_with_face")),
        faces=_int(data.get("faces")),
        fps=_float(data.get("frames_per_second")),
        wall_seconds=_float(data.get("wall_seconds")),
        finished_at=str(data.get("finished_at") or ""),
        video=video,
        key=str(data.get("job_key") or ""),
        mtime=mtime,
    )
    models = data.get("models")
    models = models if isinstance(models, dict) else {}
    run = Run(key=result.key,
              models={role: {"sha256": str(m.get("sha256", "")), "file": Path(str(m.get("path", ""))).name}
                      for role, m in sorted(models.items()) if isinstance(m, dict)},
              options=dict(data.get("options") or {}), providers=dict(data.get("providers") or {}),
              packages=dict(data.get("packages") or {}))
    return result, run


def scan(outbox: Path) -> tuple[list[Result], dict[str, Run]]:
    """Every result in the outbox (newest first) and the runs that made them (by job key)."""
    results: list[Result] = []
    runs: dict[str, Run] = {}
    for folder, dirs, names in os.walk(outbox):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or not name.endswith(".json"):
                continue
            found = read_result(outbox, Path(folder) / name)
            if found is not None:
                results.append(found[0])
                runs.setdefault(found[1].key, found[1])
    results.sort(key=newest_first)
    return results, runs


def newest_first(result: Result) -> tuple[float, int]:
    return (-result.mtime, -result.job)


# --------------------------------------------------------------------------- index.html


def stylesheet() -> str:
    """The page's stylesheet (package data, shared with the live page)."""
    return resources.files(STATIC_PACKAGE).joinpath("style.css").read_text(encoding="utf-8")


def render(results: list[Result], failures: Iterable[Failure], runs: dict[str, Run],
           generated: float | None = None) -> str:
    """The static summary: results with their thumbnails, failures, and each run's settings and models."""
    failures = list(failures)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(generated or time.time()))
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>aud results</title>",
        f"<style>{stylesheet()}</style>",
        '</head><body class="static">',
        '<header class="top"><div class="brand"><h1>aud <span class="sub">results</span></h1></div>',
        f'<div class="tiles"><div class="tile done"><b>{len(results)}</b><span>results</span></div>'
        f'<div class="tile failed"><b>{sum(f.state == "failed" for f in failures)}</b><span>failed</span></div>'
        f'<div class="tile"><b>{sum(f.state == "cancelled" for f in failures)}</b><span>cancelled</span></div></div>',
        f'<p class="meta">written {_e(stamp)} by aud after its last job · while the daemon runs, '
        "<code>aud open</code> shows the live page</p></header>",
        "<main>",
        _failures_section(failures),
        _results_section(results),
        _runs_section(runs, results),
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def write(outbox: Path, results: list[Result], failures: Iterable[Failure], runs: dict[str, Run]) -> Path:
    """Replace ``<outbox>/index.html`` atomically (a reader sees the old page or the new one)."""
    path = outbox / INDEX_NAME
    atomic_write_text(path, render(results, failures, runs))
    return path


def _results_section(results: list[Result]) -> str:
    if not results:
        return '<section id="results"><h2>Results</h2><p class="empty">No results yet.</p></section>'
    cards = "\n".join(_result_card(r) for r in results)
    return f'<section id="results"><h2>Results <span class="count">{len(results)}</span></h2>' \
           f'<div class="cards">\n{cards}\n</div></section>'


def _result_card(r: Result) -> str:
    thumb = (f'<a class="thumb" href="{_href(r.png)}"><img src="{_href(r.png)}" loading="lazy" '
             f'decoding="async" alt="plot of {_e(r.name)}"></a>' if r.png else '<div class="thumb none">no plot</div>')
    facts = [f"{r.frames} frames"]
    if r.frames_with_face is not None:
        facts.append(f"face in {r.frames_with_face}")
    if r.fps:
        facts.append(f"{r.fps:.2f} frames/s")
    links = [f'<a href="{_href(r.csv)}">CSV</a>', f'<a href="{_href(r.json)}">sidecar</a>']
    if r.png:
        links.append(f'<a href="{_href(r.png)}">PNG</a>')
    return (f'<article class="card result" data-job="{r.job}">{thumb}<div class="body">'
            f'<h3 title="{_e(r.video)}">{_e(r.name)}</h3>'
            f'<p class="facts">job {r.job} · {" · ".join(_e(f) for f in facts)}</p>'
            f'<p class="when">{_e(r.finished_at.replace("T", " ")[:16])} · run <code>{_e(r.key)}</code></p>'
            f'<p class="links">{" ".join(links)}</p></div></article>')


def _failures_section(failures: list[Failure]) -> str:
    if not failures:
        return ""
    rows = "\n".join(
        f'<article class="failure {_e(f.state)}" data-job="{f.job}"><div class="head"><h3>{_e(f.file)} '
        f'<span class="tag">{_e(f.state)}</span></h3><p class="facts">job {f.job} · {_e(_when(f.at))}</p></div>'
        f'<p class="reason">{_e(f.reason)}</p>'
        + (f"<details><summary>error text</summary><pre>{_e(f.error)}</pre></details>" if f.error else "")
        + "</article>" for f in failures)
    return f'<section id="failures"><h2>Failures <span class="count">{len(failures)}</span></h2>' \
           f'<div class="failures">\n{rows}\n</div></section>'


def _runs_section(runs: dict[str, Run], results: list[Result]) -> str:
    if not runs:
        return ""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.key] = counts.get(r.key, 0) + 1
    blocks = []
    for key, run in runs.items():
        models = "".join(f"<tr><th>{_e(role)}</th><td>{_e(m['file'])}</td><td><code>{_e(m['sha256'][:16])}</code>"
                         f"</td></tr>" for role, m in run.models.items())
        options = "".join(f"<tr><th>{_e(k)}</th><td colspan=\"2\">{_e(_show(v))}</td></tr>"
                          for k, v in sorted(run.options.items()) if v is not None)
        providers = ", ".join(sorted(set(run.providers.values())))
        blocks.append(f'<details class="run"><summary>run <code>{_e(key)}</code> · {counts.get(key, 0)} results'
                      f'{" · " + _e(providers) if providers else ""}</summary>'
                      f'<table class="kv"><tbody>{models}{options}</tbody></table></details>')
    return '<section id="runs"><h2>Settings and models</h2>' + "\n".join(blocks) + "</section>"


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _href(rel: str | None) -> str:
    return _e(quote(rel or ""))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
