"""Every run option with every other (issue 26 item 1): ``aud extract`` as a user runs it, one real subprocess
per combination of faces (primary, best, all) × mirror (off, on) × csv-style (aud, openface2) × detect-every (1, 3) ×
AU45 (on, off). Each either writes all its files — the CSV, the sidecar, the plot, and with ``--mirror`` the two
hemi-face CSVs — with the header of its style and the rows the sidecar reports, or is refused up front (exit 2,
a message naming the options that clash, nothing written).

Cheap by construction: the tiny stand-in models of ``tests/tinymodels.py`` (two faces, so ``--faces all`` has
two ids to follow), a 3-frame 96×64 video, one worker; the 48 runs go two at a time (CPU-bound start-up
imports dominate each run).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.core.schema import FOLLOWING, MIRROR_COLUMNS, SIDES, columns
from daemon.output import openface2
from tests import tinymodels
from tests.conftest import PROJECT, frame_pattern

FRAMES = 3
FACES = (tinymodels.Face((0.05, 0.1, 0.45, 0.9), 0.9), tinymodels.Face((0.55, 0.15, 0.95, 0.95), 0.8))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Combination:
    faces: str
    mirror: bool
    style: str
    detect_every: int
    au45: bool

    def flags(self) -> list[str]:
        flags = ["--faces", self.faces, "--csv-style", self.style, "--detect-every", str(self.detect_every)]
        return flags + (["--mirror"] if self.mirror else []) + ([] if self.au45 else ["--no-au45"])

    @property
    def name(self) -> str:
        return "-".join([self.faces, "mirror" if self.mirror else "whole", self.style, f"every{self.detect_every}",
                         "au45" if self.au45 else "noau45"])

    def refusal(self) -> tuple[str, ...]:
        """The options that clash with --no-au45 (the refusal names AU45 and one of them); none: it must run.
        Both hemi-face analysis and following faces between detections need STAR's landmarks, which
        --no-au45 turns off."""
        if self.au45:
            return ()
        return (("mirror",) if self.mirror else ()) + (("detect_every",) if self.detect_every > 1 else ())


COMBINATIONS = [Combination(*c) for c in itertools.product(("primary", "best", "all"), (False, True),
                                                            ("aud", "openface2"), (1, 3), (True, False))]


@dataclass(frozen=True)
class Run:
    returncode: int
    stderr: str
    folder: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """Every combination's run, made once for the module (32 subprocesses, two at a time)."""
    import cv2

    base = tmp_path_factory.mktemp("combinations")
    models = tinymodels.write_set(base / "models", det=tinymodels.detector(FACES))
    video = base / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (96, 64))
    for i in range(FRAMES):
        writer.write(frame_pattern(i, 96, 64))
    writer.release()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUD_")}
    env.update(PYTHONPATH=str(PROJECT), HOME=str(base / "home"), XDG_CONFIG_HOME=str(base / "xdg-config"),
               XDG_STATE_HOME=str(base / "xdg-state"), XDG_DATA_HOME=str(base / "xdg-data"))

    def run(c: Combination) -> tuple[str, Run]:
        folder = base / c.name
        argv = [sys.executable, "-m", "daemon", "extract", str(video), "-o", str(folder / "clip.csv"),
                "--models", str(models), "--provider", "cpu", "--workers", "1", *c.flags()]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)
        return c.name, Run(proc.returncode, proc.stderr, folder)

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(run, COMBINATIONS))


def _header(path: Path) -> list[str]:
    return [name.strip() for name in path.read_text(encoding="utf-8").splitlines()[0].split(",")]


def _rows(path: Path) -> list[dict[str, str]]:
    """Either style's rows (OpenFace 2.2's separator is ", ")."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, skipinitialspace=True))


@pytest.mark.parametrize("c", COMBINATIONS, ids=lambda c: c.name)
def test_combination_writes_all_its_files_or_is_refused_up_front(runs, c: Combination):
    run = runs[c.name]
    clashing = c.refusal()
    if clashing:
        assert run.returncode == 2, run.stderr
        message = run.stderr.lower().replace("-", "_")
        assert "au45" in message and any(option in message for option in clashing), run.stderr
        assert "Traceback" not in run.stderr
        assert not run.folder.exists() or not any(run.folder.iterdir()), "a refused run wrote files"
        return
    assert run.returncode == 0, run.stderr
    main = run.folder / "clip.csv"
    sides = [run.folder / f"clip.{side}.csv" for side in SIDES] if c.mirror else []
    expected = sorted(["clip.csv", "clip.json", "clip.png", *(p.name for p in sides)])
    assert sorted(p.name for p in run.folder.iterdir()) == expected
    assert (run.folder / "clip.png").read_bytes()[:8] == PNG_MAGIC

    following = c.detect_every > 1  # the face_detected column: after the identity (aud), at the end (openface2)
    main_header = list(columns(following)) if c.style == "aud" else \
        [*openface2.COLUMNS, *(FOLLOWING if following else ())]
    side_header = list(MIRROR_COLUMNS) if c.style == "aud" else list(openface2.HEMI_COLUMNS)
    assert _header(main) == main_header
    rows = _rows(main)
    frames = sorted({int(r["frame"]) for r in rows})
    assert frames == list(range(1, FRAMES + 1))
    faces = {r["face_id"].strip() for r in rows}
    assert faces == ({"0", "1"} if c.faces == "all" else {"0"})
    for side in sides:
        assert _header(side) == side_header
        assert len(_rows(side)) == len(rows)  # one hemi-face row per main row
    au45 = [r["AU45_r"] for r in rows]
    assert all(au45) if c.au45 else not any(au45)

    sidecar = json.loads((run.folder / "clip.json").read_text())
    assert sidecar["rows"] == len(rows) and sidecar["frames"] == FRAMES
    options = sidecar["options"]
    recorded = (options["faces"], options["mirror"], options["csv_style"], options.get("detect_every", 1),
                options["au45"])
    assert recorded == (c.faces, c.mirror, c.style, c.detect_every, c.au45)
