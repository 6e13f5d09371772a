"""Every run option with every other (issue 26 item 1): ``aud extract`` as a user runs it, one real subprocess
per combination of faces (primary, best, all) × mirror (off, on) × csv-style (aud, openface2) × detect-every (1, 3) ×
AU45 (on, off), with the AU models' default (the model set holds OpenFace 2.2's files, so "both" with AU45 on,
"openface3" with it off); then --au-models openface3 and openface2 for each faces × mirror × csv-style with
detect-every 1 and AU45 on (the default already runs "both" there, and with detect-every 3), and the au-models
refusals (openface2/both with --no-au45; openface2 and both on a model set without OpenFace 2.2's files). Each
either writes all its files — the CSV, the sidecar, the plot, and with ``--mirror`` the two hemi-face CSVs — with
the header of its style and AU models and the rows the sidecar reports, or is refused up front (exit 2, a message
naming the options that clash, nothing written).

Cheap by construction: the tiny stand-in models of ``tests/tinymodels.py`` (two faces, so ``--faces all`` has
two ids to follow) with the stand-in OpenFace 2.2 files of ``tests/core/openface2au/standins.py``, a 3-frame
96×64 video, one worker; the 76 runs go two at a time (CPU-bound start-up imports dominate each run).
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

from daemon.core.openface2au.predict import AUS_C as OF2_NAMES_C
from daemon.core.openface2au.predict import AUS_R as OF2_NAMES_R
from daemon.core.schema import AUS_C, AUS_R, FOLLOWING, MIRROR_COLUMNS, OF2_AUS, SIDES, columns
from daemon.output import openface2
from tests import tinymodels
from tests.conftest import PROJECT, frame_pattern
from tests.core.openface2au import standins

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
    au_models: str | None = None  # None: not given (the default for the model set)
    of2_files: bool = True  # whether the model set holds OpenFace 2.2's AU files

    def flags(self) -> list[str]:
        flags = ["--faces", self.faces, "--csv-style", self.style, "--detect-every", str(self.detect_every)]
        flags += ["--au-models", self.au_models] if self.au_models else []
        return flags + (["--mirror"] if self.mirror else []) + ([] if self.au45 else ["--no-au45"])

    @property
    def name(self) -> str:
        return "-".join([self.faces, "mirror" if self.mirror else "whole", self.style, f"every{self.detect_every}",
                         "au45" if self.au45 else "noau45", self.au_models or "default",
                         *(() if self.of2_files else ("noof2files",))])

    @property
    def resolved_au_models(self) -> str:
        """The AU models the run uses: as given, else "both" when STAR runs and the OpenFace 2.2 files are there."""
        return self.au_models or ("both" if self.au45 and self.of2_files else "openface3")

    def refusal(self) -> tuple[str, ...]:
        """The words a refusal names (AU45 or OpenFace 2.2's files, and the options that clash); none: it must run.
        Hemi-face analysis, following faces between detections and OpenFace 2.2's AUs all need STAR's
        landmarks, which --no-au45 turns off; OpenFace 2.2's AUs need its files."""
        if self.au_models in ("openface2", "both") and not self.of2_files:
            return ("openface 2.2's au files", "au_models")
        if self.au45:
            return ()
        clashing = (("mirror",) if self.mirror else ()) + (("detect_every",) if self.detect_every > 1 else ())
        return (("au45",) + clashing + (("au_models",) if self.au_models in ("openface2", "both") else ())
                if clashing or self.au_models in ("openface2", "both") else ())


COMBINATIONS = [Combination(*c) for c in itertools.product(("primary", "best", "all"), (False, True),
                                                            ("aud", "openface2"), (1, 3), (True, False))]
# the au-models dimension once, at detect-every 1 with AU45 on ("both" is the default above, at every setting)
COMBINATIONS += [Combination(faces, mirror, style, 1, True, au_models)
                 for faces, mirror, style, au_models in itertools.product(
                     ("primary", "best", "all"), (False, True), ("aud", "openface2"), ("openface3", "openface2"))]
# the refusals: OpenFace 2.2's AUs without STAR, or without its files
COMBINATIONS += [Combination("primary", False, "aud", 1, False, "openface2"),
                 Combination("all", True, "openface2", 1, False, "both"),
                 Combination("primary", False, "aud", 1, True, "openface2", of2_files=False),
                 Combination("best", True, "openface2", 1, True, "both", of2_files=False)]


@dataclass(frozen=True)
class Run:
    returncode: int
    stderr: str
    folder: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """Every combination's run, made once for the module (two subprocesses at a time)."""
    import cv2

    base = tmp_path_factory.mktemp("combinations")
    plain = tinymodels.write_set(base / "models", det=tinymodels.detector(FACES))
    models = base / "models-of2"  # the same networks (links), with OpenFace 2.2's stand-in files
    models.mkdir()
    for f in plain.iterdir():
        (models / f.name).symlink_to(f)
    standins.make_model_set(models)
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
                "--models", str(models if c.of2_files else plain), "--provider", "cpu", "--workers", "1", *c.flags()]
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
    named = c.refusal()
    if named:
        assert run.returncode == 2, run.stderr
        message = " ".join(run.stderr.lower().replace("-", "_").split())
        assert named[0].replace("-", "_") in message and any(option in message for option in named[1:]), run.stderr
        assert "Traceback" not in run.stderr
        assert not run.folder.exists() or not any(run.folder.iterdir()), "a refused run wrote files"
        return
    assert run.returncode == 0, run.stderr
    main = run.folder / "clip.csv"
    sides = [run.folder / f"clip.{side}.csv" for side in SIDES] if c.mirror else []
    expected = sorted(["clip.csv", "clip.json", "clip.png", *(p.name for p in sides)])
    assert sorted(p.name for p in run.folder.iterdir()) == expected
    assert (run.folder / "clip.png").read_bytes()[:8] == PNG_MAGIC

    main_header, side_header = _headers(c)
    assert _header(main) == main_header
    rows = _rows(main)
    frames = sorted({int(r["frame"]) for r in rows})
    assert frames == list(range(1, FRAMES + 1))
    faces = {r["face_id"].strip() for r in rows}
    assert faces == ({"0", "1"} if c.faces == "all" else {"0"})
    for side in sides:
        assert _header(side) == side_header
        assert len(_rows(side)) == len(rows)  # one hemi-face row per main row
    au45 = [r["aud_AU45_r" if c.style == "openface2" and c.resolved_au_models != "openface3" else "AU45_r"]
            for r in rows]
    assert all(au45) if c.au45 else not any(au45)
    if c.resolved_au_models != "openface3":  # OpenFace 2.2's intensities, 0-5, in every table
        of2_r = [f"{a}_r" for a in OF2_NAMES_R] if c.style == "openface2" else [f"of2_{a}_r" for a in OF2_NAMES_R]
        for table in (main, *sides):
            values = [float(r[name]) for r in _rows(table) for name in of2_r]
            assert values and all(0 <= v <= 5 for v in values), table.name

    sidecar = json.loads((run.folder / "clip.json").read_text())
    assert sidecar["rows"] == len(rows) and sidecar["frames"] == FRAMES
    options = sidecar["options"]
    recorded = (options["faces"], options["mirror"], options["csv_style"], options.get("detect_every", 1),
                options["au45"], options.get("au_models", "openface3"))
    assert recorded == (c.faces, c.mirror, c.style, c.detect_every, c.au45, c.resolved_au_models)


def _headers(c: Combination) -> tuple[list[str], list[str]]:
    """The main and hemi-face CSVs' headers for ``c``. The face_detected column (detect-every > 1) comes after
    the identity (aud) or at the end (openface2). With OpenFace 2.2's AUs: aud's style appends ``of2_AU01_r`` …
    (OpenFace 3.0's AU columns left out with "openface2", aud's AU45 kept); the openface2 style writes them under
    OpenFace 2.2's own names in its order (``AU01_r`` … ``AU45_r``, ``AU01_c`` … ``AU45_c``), then OpenFace 3.0's
    under ``of3_`` (not with "openface2") and aud's AU45 under ``aud_``."""
    following = c.detect_every > 1
    au_models = c.resolved_au_models
    if c.style == "aud":
        dropped = set(AUS_R + AUS_C) if au_models == "openface2" else set()
        added = list(OF2_AUS) if au_models != "openface3" else []
        main = [n for n in columns(following) if n not in dropped] + added
        return main, [n for n in MIRROR_COLUMNS if n not in dropped] + added
    if au_models == "openface3":
        return [*openface2.COLUMNS, *(FOLLOWING if following else ())], list(openface2.HEMI_COLUMNS)
    main, side = list(openface2.COLUMNS_WITH_OF2), list(openface2.HEMI_COLUMNS_WITH_OF2)
    if au_models == "openface2":
        main, side = ([n for n in names if not n.startswith("of3_")] for names in (main, side))
    official = [f"{a}_r" for a in OF2_NAMES_R] + [f"{a}_c" for a in OF2_NAMES_C]
    of3 = [] if au_models == "openface2" else [f"of3_{n}" for n in AUS_R]
    tail = [*of3, "aud_AU45_r", *([] if au_models == "openface2" else [f"of3_{n}" for n in AUS_C]), "aud_AU45_c"]
    for names in (main, side):  # OpenFace 2.2's AUs in its order, then OpenFace 3.0's and aud's AU45
        assert [n for n in names if n.startswith("AU")] == official
        assert names[-len(tail):] == tail
    return [*main, *(FOLLOWING if following else ())], side
