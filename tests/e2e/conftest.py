"""Session-wide end-to-end material: `aud extract` on the full shared clip runs once and is reused."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import SHARED, require_shared
from tests.e2e.daemonproc import DaemonProcess

CLIP = "media/hamilton_clip.mp4"
MODELS = "models/openface3"


@pytest.fixture(scope="session")
def full_clip_extract(tmp_path_factory):
    """The CSV `aud extract --faces best` writes for the whole shared clip (2 workers, CPU): the best face of each
    frame, OpenFace 3.0's own choice, which the parity test holds against the reference."""
    require_shared(CLIP, f"{MODELS}/retinaface.onnx", f"{MODELS}/mtl.onnx", f"{MODELS}/star.onnx")
    out = tmp_path_factory.mktemp("extract") / "hamilton.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "extract", str(SHARED / CLIP), "-o", str(out),
         "--models", str(SHARED / MODELS), "--workers", "2", "--provider", "cpu", "--faces", "best"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def daemon():
    """Factory of `aud run` subprocesses (``DaemonProcess(**kw)``), all stopped and cleaned up after."""
    procs = []

    def make(**kw) -> DaemonProcess:
        proc = DaemonProcess(**kw)
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        proc.stop()
    for root in {proc.root for proc in procs}:
        shutil.rmtree(root, ignore_errors=True)
