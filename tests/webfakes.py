"""For the page's tests and bench/web_load.py: well-formed fake results, and Debian's Chromium under
Playwright (never a downloaded browser)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CSV_HEADER = "frame,timestamp,face_id,confidence,success,AU01_r,AU02_r,AU45_r\n"


def plot_png(seed: int = 0, width: int = 1000, height: int = 620) -> bytes:
    """A PNG shaped like a result's plot (white, axes, a few curves): about the weight of a real one."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 255, np.uint8)
    rows = 4
    for r in range(rows):
        top, bottom = 30 + r * (height - 40) // rows, 20 + (r + 1) * (height - 40) // rows
        cv2.rectangle(img, (60, top), (width - 20, bottom), (90, 90, 90), 1)
        for c, colour in enumerate(((180, 119, 31), (14, 127, 255), (44, 160, 44))):
            ys = np.cumsum(rng.normal(0, 2.5, width - 80)) + (top + bottom) / 2 + c * 6
            ys = np.clip(ys, top + 2, bottom - 2)
            pts = np.stack([np.arange(60, width - 20), ys], 1).astype(np.int32)
            cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)
        cv2.putText(img, f"AU{r + 1:02d}", (8, (top + bottom) // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()


def sidecar(job: int, name: str, frames: int, key: str = "0123456789abcdef") -> dict:
    """The keys a result's sidecar has (daemon.jobs.runner.Runner._write, daemon.jobs.spec.runner_config)."""
    return {
        "video": f"/inbox/.done/{name}.mp4", "received_as": f"/inbox/{name}.mp4",
        "video_properties": {"width": 640, "height": 360, "fps": 25.0, "frames": frames},
        "fingerprint": f"{job:016x}", "job": job, "job_key": key, "frames": frames, "rows": frames,
        "frames_with_face": frames - 1, "faces": 1,
        "models": {role: {"path": f"/models/{role}.onnx", "sha256": f"{role:0<64}"[:64]}
                   for role in ("detector", "mtl", "landmarks")},
        "providers": {"detector": "CPUExecutionProvider", "mtl": "CPUExecutionProvider",
                      "landmarks": "CPUExecutionProvider"},
        "options": {"au45": True, "faces": "primary", "csv_style": "aud", "plots": True, "batch_size": 4},
        "packages": {"aud": "0.1.0"}, "note": "fake result for the page's tests",
        "wall_seconds": 12.5, "frames_per_second": round(frames / 12.5, 3),
        "finished_at": f"2026-12-05T{(job // 60) % 24:02d}:{job % 60:02d}:00+0000",
    }


def fake_results(outbox: Path, count: int, folders: int = 4) -> list[Path]:
    """``count`` result triplets (CSV, sidecar, PNG) in ``outbox``, spread over a few sub-folders."""
    png = plot_png()
    csvs = []
    for job in range(1, count + 1):
        folder = outbox / (f"session {job % folders}" if folders > 1 else "")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"participant {job:04d}"
        csv = folder / f"{name}.csv"
        csv.write_text(CSV_HEADER + "".join(f"{f},{f / 25:.3f},0,0.98,1,0.1,0.2,0.3\n" for f in range(5)))
        (folder / f"{name}.json").write_text(json.dumps(sidecar(job, name, 5 + job % 300), indent=2))
        (folder / f"{name}.png").write_bytes(png)
        csvs.append(csv)
    return csvs


@contextmanager
def chromium_page(width: int = 1280, height: int = 800) -> Iterator:
    """A Playwright page in Debian's headless Chromium with a fresh profile (the caller skips when absent)."""
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="aud-chromium-"))
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                viewport={"width": width, "height": height})
            try:
                yield context.pages[0] if context.pages else context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
