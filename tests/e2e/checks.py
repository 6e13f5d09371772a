"""What every reliability test checks afterwards: the daemon serves, results are complete and single,
bad inputs sit in .failed with a reason, and the outbox holds nothing partial."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np

from daemon.output import read_csv
from tests.e2e.daemonproc import DaemonProcess, Subscriber, is_summary

ENDS = ("job_done", "job_failed", "job_cancelled")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ended(sub: Subscriber, name: str, job: int | None = None, timeout: float = 120.0, after: float = 0.0) -> dict:
    """The end event (done, failed or cancelled) of the job for ``name`` (and ``job``, if given) that
    happened after ``after`` (a time.time())."""
    return sub.wait_for(lambda e: e["type"] in ENDS and e["file"] == name and job in (None, e["job"])
                        and e["ts"] > after, timeout)


def queued(sub: Subscriber, name: str) -> list[dict]:
    """The job_queued events seen so far for ``name``."""
    return [e for e in sub.events if e["type"] == "job_queued" and e["file"] == name]


def assert_alive(d: DaemonProcess) -> dict:
    """The daemon process runs and answers ``status``."""
    assert d.proc.poll() is None, "the daemon exited:\n" + "".join(d.log[-40:])
    return d.status()


def assert_outbox_clean(outbox: Path, d: DaemonProcess | None = None) -> None:
    """Only finished results: every main CSV has its sidecar and plot and the other way round (hemi-face
    CSVs and inspection videos belong to a main CSV); no temp files. With ``d``, first wait until it has
    no job queued or running (a result being written is a sidecar without its CSV for a moment, and a
    temp file before that)."""
    if d is not None:
        wait_until(lambda: not (s := d.status())["running"] and not s["queued"], 120, "no job queued or running")
    names = [p.relative_to(outbox) for p in outbox.rglob("*") if p.is_file() and not is_summary(p, outbox)]
    stray = [n for n in names if n.name.startswith(".") or n.suffix not in (".csv", ".json", ".png", ".mp4")]
    assert not stray, f"partial or temporary files in the outbox: {stray}"
    sides = (".left_mirrored", ".right_mirrored", ".midline")
    main = {n.with_suffix("") for n in names if n.suffix == ".csv" and not n.stem.endswith(sides)}
    parts = {n.with_suffix(""): n for n in names if n.stem.endswith(sides)}
    sidecars = {n.with_suffix("") for n in names if n.suffix == ".json"}
    assert main == sidecars, f"CSV without sidecar or sidecar without CSV: {main ^ sidecars}"
    plots = {n.with_suffix("") for n in names if n.suffix == ".png"}
    assert plots <= main, f"a plot without its CSV: {plots - main}"
    for stem, part in parts.items():
        owner = stem.with_name(stem.name.rsplit(".", 1)[0])
        assert owner in main, f"{part} without its main CSV"


def assert_done(d: DaemonProcess, sub: Subscriber, name: str, frames: int, job: int | None = None,
                timeout: float = 120.0, times_queued: int = 1,
                after: float = 0.0) -> tuple[dict, list[dict], dict]:
    """The job for ``name`` finished with a complete CSV (every frame once, in order), was queued
    ``times_queued`` times (as this subscriber saw), its input in .done. Returns the event, the CSV rows
    and the sidecar."""
    event = ended(sub, name, job, timeout, after)
    assert event["type"] == "job_done", event
    assert event["frames"] == frames, event
    csv_path = Path(event["csv"])
    rows = read_csv(csv_path)
    assert [int(r["frame"]) for r in rows] == list(range(1, frames + 1))
    sidecar = json.loads(csv_path.with_suffix(".json").read_text())
    assert sidecar["frames"] == frames and sidecar["job"] == event["job"]
    assert len([e for e in queued(sub, name) if e["job"] == event["job"]]) == times_queued
    assert (d.inbox / ".done" / name).is_file()
    assert not (d.inbox / name).exists()
    assert_outbox_clean(d.outbox, d)
    return event, rows, sidecar


def assert_failed(d: DaemonProcess, sub: Subscriber, name: str, *reason: str, timeout: float = 120.0) -> dict:
    """The job for ``name`` failed naming ``reason``; the input is in .failed beside a readable
    ``<name>.error.txt``; no result for it in the outbox."""
    event = ended(sub, name, timeout=timeout)
    assert event["type"] == "job_failed", event
    for part in reason:
        assert part in event["reason"], event
    assert (d.inbox / ".failed" / name).is_file()
    assert not (d.inbox / name).exists()
    error = (d.inbox / ".failed" / f"{name}.error.txt").read_text(encoding="utf-8")
    assert name in error and event["reason"] in error, error
    assert not [p for p in d.outbox.rglob("*") if p.stem == Path(name).stem]
    assert_outbox_clean(d.outbox, d)
    return event


def wait_until(condition, timeout: float, what: str, poll: float = 0.1):
    """Poll ``condition`` (for outcomes no event announces); its truthy value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def no_face_video(path: Path, seed: int, frames: int = 1, size: int = 64) -> Path:
    """A tiny video of flat colour (no face anywhere), its colour picked by ``seed``."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, 3).tolist()
    image = np.empty((size, size, 3), np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (size, size))
    for i in range(frames):
        image[:] = colour
        image[: 4 + i] = 255 - image[: 4 + i]
        writer.write(image)
    writer.release()
    return path
