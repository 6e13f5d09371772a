"""aud from Python (a notebook, a script): run an extraction, load a result as a pandas DataFrame.

    >>> from daemon import api
    >>> outcomes = api.extract(["session1.mp4", "session2.mp4"], output="results/", faces="all",
    ...                        progress=lambda p: print(p.video, p.frames_done, "/", p.frames_total))
    >>> result = api.load("results/session1.csv")
    >>> result.aus.mean()             # the AU columns (a DataFrame of the same rows)
    >>> result.group("emotion")       # any column group by name: result.groups lists them
    >>> result.sidecar["models"]      # the models, options and package versions that made it

``extract`` is ``aud extract`` without the command line: the same options (any run setting as a keyword:
``faces``, ``mirror``, ``au45``, ``detect_every``, ``csv_style``, ``models``, ``workers``, …, checked as
the configuration file's are; unset ones come from ``AUD_*`` variables and the configuration file, as
for ``aud extract``), one warm pool for every video, and a video that fails is reported with its reason
while the others are written. It runs on its own event loop, on a thread of its own when the caller
already has one running (Jupyter does).

``load`` returns a ``Result``: a DataFrame of the CSV whose column groups (py-feat's ``Fex`` is the
model) follow aud's schema (``daemon.core.schema.GROUPS``) for aud's CSVs, or OpenFace 2.2's column
families for ``csv_style = "openface2"``, with the sidecar JSON written beside it attached as
``result.sidecar``. pandas is needed for ``load`` only (``pip install pandas``).

The values are what the models compute: with the shared test networks (random MTL and STAR weights)
they are not AU estimates.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import protocol as msg
from .config import Settings, load_settings
from .core import schema
from .jobs.extract import Outcome, expand
from .jobs.extract import extract as _extract

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Progress", "Outcome", "extract", "load", "settings"]  # and Result, built on first use


@dataclass(frozen=True)
class Progress:
    """One video's progress: frames measured so far of its total, the rate, and the time left (s)."""

    video: str
    frames_done: int
    frames_total: int
    fps: float
    eta_s: float | None


def settings(config: str | Path | None = None, **options: Any) -> Settings:
    """The run's settings: ``options`` over ``AUD_*`` variables over the configuration file; an unknown
    option name is a TypeError naming it and the known ones."""
    unknown = sorted(set(options) - set(Settings.model_fields))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(Settings.model_fields))}")
    return load_settings(Path(config) if config is not None else None, **options)


def extract(videos: str | Path | Iterable[str | Path], output: str | Path | None = None, *,
            start: float = 0.0, end: float | None = None, every: int = 1,
            progress: Callable[[Progress], None] | None = None, config: str | Path | None = None,
            **options: Any) -> list[Outcome]:
    """Videos (or folders of videos) to CSVs, as ``aud extract``: ``output`` a folder, or one ``.csv`` for
    one video (default: beside each video). ``start``/``end`` (seconds) and ``every`` (every N-th frame)
    select frames. Returns one ``Outcome`` per video, in order: its ``csv`` (None when it failed), frames,
    frames/s and ``error`` (the reason, when it failed)."""
    from .jobs.plan import TimeSelection

    named = [videos] if isinstance(videos, str | Path) else list(videos)
    paths = expand([Path(v) for v in named])
    if not paths:
        raise ValueError(f"no videos found in {', '.join(str(v) for v in named)}")
    run_settings = settings(config, **options)
    selection = TimeSelection(start, end, every)

    def on_event(event: msg.Event) -> None:
        if progress is not None and isinstance(event, msg.JobProgress):
            progress(Progress(event.file, event.frames_done, event.frames_total, event.fps, event.eta_s))

    job = _extract(paths, Path(output) if output is not None else None, run_settings, selection, on_event)
    return _run(job).outcomes


def _run(coro):
    """``asyncio.run``, on a thread of its own when this thread already runs a loop (a notebook's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised on the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="aud-extract")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- loading a result ----------------------------------------------------------------------------

# OpenFace 2.2's column families (its wiki, "Output Format"): the names an openface2-style CSV uses
OPENFACE2_FAMILIES: dict[str, str] = {
    "identity": r"^(frame|face_id|timestamp|confidence|success)$",
    "gaze": r"^gaze_",
    "eye_landmarks": r"^eye_lmk_",
    "pose": r"^pose_",
    "landmarks": r"^[xyXYZ]_\d+$",
    "shape": r"^p_",
    "aus": r"^AU\d\d_[rc]$",
    "emotion": r"^emotion",
}


def _groups(columns: list[str], style: str) -> dict[str, list[str]]:
    if style == "openface2":
        return {name: [c for c in columns if re.match(pattern, c)] for name, pattern in OPENFACE2_FAMILIES.items()}
    return {name: [c for c in group if c in columns] for name, group in schema.GROUPS.items()}


def load(csv: str | Path) -> pd.DataFrame:
    """A result CSV as a ``Result`` (a pandas DataFrame) with its column groups and its sidecar."""
    import pandas as pd

    path = Path(csv)
    frame = pd.read_csv(path, skipinitialspace=True)  # OpenFace 2.2's header has ", " separators
    sidecar_path = path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
    style = sidecar.get("options", {}).get("csv_style", "aud")
    result = _result_type()(frame)
    result.sidecar = sidecar
    result.path = str(path)
    result.groups = {k: v for k, v in _groups(list(frame.columns), style).items() if v}
    return result


_RESULT: list[type] = []


def _result_type() -> type:
    """``Result``, built on first use, so importing this module does not import pandas."""
    if not _RESULT:
        _RESULT.append(_result_class())
    return _RESULT[0]


def _result_class() -> type:
    import pandas as pd

    class Result(pd.DataFrame):
        """A result CSV: a DataFrame, with ``groups`` (group name -> its columns), ``sidecar`` (the JSON
        written beside it: models, options, video, timings) and ``path``. Slicing keeps them."""

        _metadata = ["groups", "sidecar", "path"]

        @property
        def _constructor(self):
            return Result

        def group(self, name: str) -> pd.DataFrame:
            """The columns of one group (``result.groups`` lists them), as a plain DataFrame."""
            if name not in self.groups:
                raise KeyError(f"no column group {name!r} in {self.path}; groups: {', '.join(self.groups)}")
            return pd.DataFrame(self[self.groups[name]])

        @property
        def aus(self) -> pd.DataFrame:
            return self.group("aus")

        @property
        def emotions(self) -> pd.DataFrame:
            return self.group("emotion")

        @property
        def gaze(self) -> pd.DataFrame:
            return self.group("gaze")

        @property
        def pose(self) -> pd.DataFrame:
            return self.group("pose")

        @property
        def landmarks(self) -> pd.DataFrame:
            return self.group("landmarks")

        @property
        def models(self) -> dict:
            """The model files (path, sha256) that made this result, from the sidecar."""
            return self.sidecar.get("models", {})

    return Result


def __getattr__(name: str):
    if name == "Result":
        return _result_type()
    raise AttributeError(name)
