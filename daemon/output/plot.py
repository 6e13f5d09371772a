"""A picture of one result: ``<stem>.png`` beside ``<stem>.csv`` (matplotlib's object API on the Agg canvas:
no pyplot, no display, no global figure state — safe in the headless daemon).

One column of panels per face (the longest-tracked faces first, at most ``MAX_FACES``; the title says how many
more there are), against time in seconds:

* **Action Units** — the eight ``AUxx_r`` traces (raw MTL scores) with the 0.5 line of aud's ``AUxx_c`` rule;
* **OpenFace 2.2 AUs** (``au_models`` "openface2"/"both") — the 17 ``of2_AUxx_r`` intensities, 0-5; with the
  mirror output, the left (solid) and right (dashed) hemi-faces' beside them;
* **AU45 (blink)** — ``AU45_r`` (0-5) with every blink marked at its peak (a blink is a run of frames with
  AU45_r ≥ ``schema.BLINK_AU45``);
* **Gaze** — yaw and pitch, in degrees;
* **Head pose** — pitch, yaw, roll (``pose_Rx, pose_Ry, pose_Rz``), in degrees (when the table has the
  columns; a face without any pose — AU45 off, so no landmarks — gets a panel that says so);
* **Emotion** — the eight probabilities, stacked to 1 (the legend lists them top to bottom, as stacked);
* **Left − right** (mirror output only) — per AU, the left hemi-face's score minus the right one's (0: symmetric);
* **AU45 per eye** (mirror output only) — each hemi-face's AU45_r, i.e. the subject's left and right eye.

A footnote under the panels says which models computed the values (the sidecar's ``models_provenance``: the
official trained OpenFace 3.0 weights, other weights, or the shared test networks — random weights, not AU
estimates); ``aud plot CSV`` reads it from the sidecar beside the CSV.

Grey bands in every panel: frames where that face was not found (in a single-face result: no face). A video
without any face gets a picture that says so.

**Long recordings.** A trace never holds more than ``2 · PLOT_BINS`` points: past that many frames the time
axis is cut into ``PLOT_BINS`` equal runs of frames (a panel is narrower than ``PLOT_BINS`` pixels) and each
trace is drawn as the line of its per-run mean over a light band from the run's min to its max (the min/max
envelope: every extreme the full trace would paint stays visible, and the eight AU lines stay apart instead of
filling the panel); the emotion stack shows each run's mean probabilities, the grey bands the runs where the
face is missing from at least half the frames, and the blink markers the highest blink of each run.

``read_table`` reads aud's CSVs and OpenFace 2.2-style ones (``gaze_angle_x/y`` become ``gaze_yaw/pitch``;
names and fields are stripped of spaces).
"""

from __future__ import annotations

import csv
import gc
import io
import json
import math
import textwrap
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..core.atomic import atomic_write
from ..core.blink import blinks
from ..core.schema import (
    AU45_R,
    AU_DESCRIPTIONS,
    AU_NUMBERS,
    AU_THRESHOLD,
    AUS_R,
    BLINK_AU45,
    EMOTION_PROBS,
    EMOTIONS,
    FACE_ID,
    FRAME,
    GAZE,
    GAZE_PITCH,
    GAZE_YAW,
    OF2_AUS_R,
    POSE_R,
    SIDES,
    SUCCESS,
    TEXT_COLUMNS,
    TIMESTAMP,
)
from .paths import plot_path, side_path, sidecar_path

MAX_FACES = 4
PLOT_BINS = 1000  # a panel is ~500 px wide at most per face: 2 runs per pixel column
ABSENT_IN_RUN = 0.5  # a run of frames is shaded "not found" when the face is missing from at least this share
NO_POSE = ("no head pose for this face: pose is fitted to STAR's landmarks,\n"
           "which --no-au45 turns off (or no frame gave a face-shaped fit)")
OPENFACE2_NAMES = {"gaze_angle_x": GAZE_YAW, "gaze_angle_y": GAZE_PITCH}  # OpenFace 2.2's names -> aud's
NO_FACE_COLOUR = "0.85"
NOT_FOUND = "face not found"
FOOTNOTE_INCHES = 0.35  # the strip under the panels that holds the models footnote

Table = Mapping[str, np.ndarray | Sequence]


class PlotError(ValueError):
    """A CSV or table that cannot be plotted (missing columns, unreadable file)."""


# --- reading ----------------------------------------------------------------------------------------------

def read_table(csv_path: Path) -> dict[str, Any]:
    """An aud-style or OpenFace 2.2-style CSV as columns: numbers as float arrays (NaN where empty), text
    columns (``emotion``) as lists of str."""
    path = Path(csv_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlotError(f"{path}: cannot read the CSV ({exc})") from exc
    rows = list(csv.reader(io.StringIO(text), skipinitialspace=True))
    if not rows:
        raise PlotError(f"{path}: the CSV is empty (no header)")
    names = [OPENFACE2_NAMES.get(n.strip(), n.strip()) for n in rows[0]]
    for required in (FRAME, TIMESTAMP, SUCCESS):
        if required not in names:
            raise PlotError(f"{path}: no {required!r} column, so this is not an aud or OpenFace 2.2 CSV")
    body = rows[1:]
    for line, row in enumerate(body, start=2):
        if len(row) != len(names):
            raise PlotError(f"{path}: line {line} has {len(row)} fields, the header has {len(names)}")
    table: dict[str, Any] = {}
    for k, name in enumerate(names):
        cells = [row[k].strip() for row in body]
        if name in TEXT_COLUMNS:
            table[name] = cells
            continue
        try:
            table[name] = np.array([float(c) if c else math.nan for c in cells], np.float64)
        except ValueError as exc:
            raise PlotError(f"{path}: column {name!r} holds a value that is not a number ({exc})") from exc
    if FACE_ID not in table:
        table[FACE_ID] = np.where(table[SUCCESS] > 0, 0.0, math.nan)
    return table


def mirror_paths(csv_path: Path) -> dict[str, Path]:
    """The hemi-face CSVs beside ``<stem>.csv`` that exist: {"left_mirrored": …, "right_mirrored": …}."""
    path = Path(csv_path)
    found = {}
    for side in SIDES:
        sibling = side_path(path, side)
        if sibling.exists():
            found[side] = sibling
    return found


def plot_csv(csv_path: Path, png_path: Path | None = None) -> Path:
    """Plot ``csv_path`` (with its mirror siblings, if any) to ``png_path`` (default ``<stem>.png`` beside it),
    written atomically. Returns the PNG's path."""
    path = Path(csv_path)
    out = Path(png_path) if png_path is not None else plot_path(path)
    tables = {"main": read_table(path)}
    tables.update({side: read_table(p) for side, p in mirror_paths(path).items()})
    png = render_png(tables, path.name, models_footnote(read_sidecar(path)))
    atomic_write(out, lambda f: f.write(png))
    return out


def read_sidecar(csv_path: Path) -> dict | None:
    """The sidecar ``<stem>.json`` beside ``csv_path``, or None when there is none (or it cannot be read:
    the plot then has no models footnote)."""
    try:
        data = json.loads(sidecar_path(csv_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def models_footnote(sidecar: Mapping | None) -> str | None:
    """"models: <where the weights came from>" from a sidecar's ``models_provenance``, or None without one."""
    record = (sidecar or {}).get("models_provenance")
    if isinstance(record, Mapping) and isinstance(record.get("text"), str) and record["text"]:
        return f"models: {record['text']}"
    return None


# --- preparing the series -----------------------------------------------------------------------------------

def _col(table: Table, name: str) -> np.ndarray:
    if name not in table:
        raise PlotError(f"the table has no column {name!r}")
    return np.asarray(table[name], dtype=np.float64)


class Timeline:
    """The video's frames (each once, in order) and their times; per-face series on it (NaN where absent)."""

    def __init__(self, table: Table):
        frame = _col(table, FRAME)
        self.frames, first = np.unique(frame, return_index=True)
        self.seconds = _col(table, TIMESTAMP)[first]
        self._frame = frame
        self._face = _col(table, FACE_ID) if FACE_ID in table else np.zeros(len(frame))
        self._ok = _col(table, SUCCESS) > 0
        self._slot = np.searchsorted(self.frames, frame)
        n = len(self.frames)
        # runs of frames, one per drawn column, for a long recording (None: every frame drawn)
        self._edges = np.linspace(0, n, PLOT_BINS + 1).round().astype(np.int64) if n > 2 * PLOT_BINS else None

    def __len__(self) -> int:
        return len(self.frames)

    def faces(self) -> list[tuple[int, int]]:
        """(face_id, frames with that face found), longest-tracked first."""
        ids, counts = np.unique(self._face[self._ok & np.isfinite(self._face)], return_counts=True)
        order = sorted(zip(ids.astype(int).tolist(), counts.tolist()), key=lambda p: (-p[1], p[0]))
        return order

    def rows_of(self, face_id: int) -> np.ndarray:
        return self._ok & (self._face == face_id)

    def series(self, table: Table, name: str, face_id: int) -> np.ndarray:
        """``name`` for ``face_id`` on the timeline (NaN where the face is absent)."""
        values = _col(table, name)
        rows = self.rows_of(face_id)
        out = np.full(len(self.frames), np.nan)
        out[self._slot[rows]] = values[rows]
        return out

    def present(self, face_id: int) -> np.ndarray:
        out = np.zeros(len(self.frames), bool)
        out[self._slot[self.rows_of(face_id)]] = True
        return out

    # --- what is drawn: every frame, or per run of frames for a long recording -------------------------

    def _runs(self) -> tuple[np.ndarray, np.ndarray]:
        """(first index of each run, the run's middle time)."""
        assert self._edges is not None
        starts = self._edges[:-1]
        return starts, (self.seconds[starts] + self.seconds[self._edges[1:] - 1]) / 2

    def times(self) -> np.ndarray:
        """The drawn columns' times: every frame's, or each run's middle."""
        return self.seconds if self._edges is None else self._runs()[1]

    @property
    def binned(self) -> bool:
        """A long recording: drawn per run of frames."""
        return self._edges is not None

    def envelope(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(t, low, mean, high) of ``values`` (one per frame, NaN where absent) per run of frames, at each
        run's middle time; NaN where the whole run is."""
        starts, middle = self._runs()
        low, high = np.fmin.reduceat(values, starts), np.fmax.reduceat(values, starts)  # NaN only if all are
        finite = np.isfinite(values)
        counts = np.add.reduceat(finite.astype(np.float64), starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.add.reduceat(np.where(finite, values, 0.0), starts) / counts
        return middle, low, np.where(counts > 0, mean, np.nan), high

    def mean(self, values: np.ndarray) -> np.ndarray:
        """``values`` (one per frame, no NaN) per drawn column: themselves, or each run's mean."""
        if self._edges is None:
            return values
        return np.add.reduceat(values, self._edges[:-1]) / np.diff(self._edges)

    def shown_present(self, face_id: int) -> np.ndarray:
        """Per drawn column: the face found (in at least half of the run's frames)."""
        present = self.present(face_id)
        return present if self._edges is None else self.mean(present.astype(np.float64)) > 1 - ABSENT_IN_RUN

    def thin(self, peaks: list[int], values: np.ndarray) -> list[int]:
        """Frame indices of marks (blink peaks): all of them, or the highest of each run."""
        if self._edges is None or not peaks:
            return peaks
        run = np.searchsorted(self._edges, peaks, side="right") - 1
        best: dict[int, int] = {}
        for r, p in zip(run.tolist(), peaks):
            if r not in best or values[p] > values[best[r]]:
                best[r] = p
        return sorted(best.values())


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True as (first, last) indices."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


# --- drawing ---------------------------------------------------------------------------------------------

_RENDERING = threading.Lock()


def warm_up() -> None:
    """Render a one-frame picture and throw it away: loads matplotlib's fonts in the calling thread
    (matplotlib keeps each thread's font files open), so a daemon's first result does not pay for it."""
    render_png({"main": {FRAME: np.array([1.0]), TIMESTAMP: np.array([0.0]), SUCCESS: np.array([0.0]),
                         FACE_ID: np.array([math.nan])}}, "warm-up", "models: warm-up")


def render_png(tables: Mapping[str, Table], title: str, footnote: str | None = None) -> bytes:
    """The PNG of one result. ``tables``: "main" (aud column naming, one row per face per frame) and
    optionally "left_mirrored" and "right_mirrored" (one row per main row); ``footnote``: the line under
    the panels that says which models computed the values (:func:`models_footnote`)."""
    with _RENDERING:  # matplotlib's font and text caches are shared by every figure of the process
        fig = figure(tables, title, footnote)
        buffer = io.BytesIO()
        FigureCanvasAgg(fig).print_png(buffer)
        fig.clear()
        del fig
        # a figure is a web of reference cycles: collect it now, or a daemon's memory grows with every
        # plot until the cyclic collector happens to run (docs/benchmark.md, "Design measurements")
        gc.collect()
    return buffer.getvalue()


def figure(tables: Mapping[str, Table], title: str, footnote: str | None = None) -> Figure:
    """The figure ``render_png`` draws (tests inspect its artists)."""
    if "main" not in tables:
        raise PlotError("render_png needs the 'main' table")
    main = tables["main"]
    n = len(_col(main, FRAME))
    for side in SIDES:
        if side in tables and len(_col(tables[side], FRAME)) != n:
            raise PlotError(f"the {side} table has {len(_col(tables[side], FRAME))} rows, the main one {n}: "
                            f"a hemi-face table has one row per main row")
    timeline = Timeline(main)
    faces = timeline.faces()
    if not faces:
        fig = _no_face_figure(timeline, title)
    else:
        fig = _result_figure(tables, timeline, faces, title, footnote is not None)
    if footnote is not None:
        _footnote(fig, footnote)
    return fig


def _footnote(fig: Figure, text: str) -> None:
    width_inches = fig.get_size_inches()[0]
    fig.text(0.01, 0.008, textwrap.fill(text, max(60, int(width_inches * 15))), ha="left", va="bottom",
             fontsize=8, color="0.25", gid="models")


def _no_face_figure(timeline: Timeline, title: str) -> Figure:
    fig = Figure(figsize=(10, 3), dpi=100)
    fig.suptitle(textwrap.fill(title, 90), fontsize=13, fontweight="bold")
    duration = float(np.nanmax(timeline.seconds)) if len(timeline) else 0.0
    fig.text(0.5, 0.5, f"No face found in any of the {len(timeline)} frames ({duration:.1f} s).",
             ha="center", va="center", fontsize=16)
    return fig


def _panel_rows(tables: Mapping[str, Table]) -> list[str]:
    """The panels this result has data for (an OpenFace 2.2-style CSV has no emotion, for instance)."""
    main = tables["main"]

    def has(*names: str) -> bool:
        return all(n in main for n in names) and any(np.isfinite(_col(main, n)).any() for n in names)

    rows = []
    if has(*AUS_R):
        rows.append("aus")
    if has(*OF2_AUS_R):
        rows.append("of2_aus")
    if has(AU45_R):
        rows.append("au45")
    if has(*GAZE):
        rows.append("gaze")
    if all(name in main for name in POSE_R):  # drawn even when empty: the panel says why
        rows.append("pose")
    if has(*EMOTION_PROBS):
        rows.append("emotion")
    if all(side in tables for side in SIDES):  # (au_models = "openface2" leaves OpenFace 3.0's AUs out)
        rows += (["mirror"] if all(AUS_R[0] in tables[side] for side in SIDES) else []) + ["mirror_au45"]
    if not rows:
        raise PlotError("the table has none of the measured columns (AUxx_r, AU45_r, gaze, pose, emotion)")
    return rows


def _result_figure(tables: Mapping[str, Table], timeline: Timeline, faces: list[tuple[int, int]],
                   title: str, footnote: bool = False) -> Figure:
    shown = faces[:MAX_FACES]
    rows = _panel_rows(tables)
    heights = {"aus": 2.6, "of2_aus": 4.2, "au45": 1.6, "gaze": 1.6, "pose": 1.6, "emotion": 1.8, "mirror": 2.6,
               "mirror_au45": 1.6}
    height = 1.0 + sum(heights[r] for r in rows) + (FOOTNOTE_INCHES if footnote else 0.0)
    fig = Figure(figsize=(4.0 + 6.0 * len(shown), height), dpi=100)
    axes = fig.subplots(len(rows), len(shown), sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [heights[r] for r in rows]})
    duration = float(np.nanmax(timeline.seconds))
    summary = f"{len(timeline)} frames, {duration:.1f} s"
    if len(faces) > 1:
        summary += f", {len(faces)} faces"
    if len(faces) > MAX_FACES:
        rest = ", ".join(str(f) for f, _ in faces[MAX_FACES:])
        summary += f" — the {MAX_FACES} longest-tracked shown; not shown: face {rest}"
    fig.suptitle(textwrap.fill(title, 60 + 50 * (len(shown) - 1)) + f"\n{summary}", fontsize=13,
                 fontweight="bold")
    t = timeline.times()
    for c, (face_id, count) in enumerate(shown):
        present = timeline.shown_present(face_id)
        for r, kind in enumerate(rows):
            ax = axes[r, c]
            ax.set_label(kind)
            _shade_absent(ax, t, present)
            DRAW[kind](ax, tables, timeline, face_id, t)
            ax.grid(True, alpha=0.3)
            ax.margins(x=0)
            if c > 0:
                ax.set_ylabel("")
        axes[0, c].set_title(f"face {face_id}: found in {count} of {len(timeline)} frames", fontsize=11)
        axes[-1, c].set_xlabel("time (s)")
    for r in range(len(rows)):
        axes[r, -1].legend(handles=_legend_handles(axes[r, -1]), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                           fontsize=8, frameon=False)
    fig.tight_layout(rect=(0.0, FOOTNOTE_INCHES / height if footnote else 0.0, 1.0, 1.0))
    return fig


def _legend_handles(ax) -> list:
    """The axes' legend entries, each label once ("no face" is one entry however many bands there are)."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if NOT_FOUND in unique:
        unique[NOT_FOUND] = Patch(color=NO_FACE_COLOUR, label=NOT_FOUND)
    if ax.get_label() == "emotion":  # top to bottom as stacked: the last drawn is on top
        unique = {k: unique[k] for k in [*reversed(EMOTIONS), NOT_FOUND] if k in unique}
    return list(unique.values())


def _trace(ax, timeline: Timeline, values: np.ndarray, band: float = 0.2, **style) -> None:
    """One line through every frame; for a long recording, the line of each run's mean over a light band
    from the run's min to its max (``Timeline.envelope``: every extreme stays visible, the traces stay
    apart; ``band``: the band's opacity, lower where eight traces share a panel)."""
    if not timeline.binned:
        ax.plot(timeline.seconds, values, **style)
        return
    t, low, mean, high = timeline.envelope(values)
    ax.fill_between(t, low, high, color=style.get("color"), alpha=band, lw=0, label=f"_{style.get('label')} range")
    ax.plot(t, mean, **style)


def _shade_absent(ax, t: np.ndarray, present: np.ndarray) -> None:
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    for first, last in _spans(~present):
        ax.axvspan(t[first] - step / 2, t[last] + step / 2, color=NO_FACE_COLOUR, lw=0, zorder=0, label=NOT_FOUND)


def _palette(name: str) -> list:
    """The colours of a qualitative matplotlib colour map."""
    cmap = colormaps[name]
    return list(getattr(cmap, "colors", [cmap(i / 9) for i in range(10)]))


def _draw_aus(ax, tables, timeline, face_id, t) -> None:
    colours = _palette("tab10")
    for k, (number, name) in enumerate(zip(AU_NUMBERS, AUS_R)):
        _trace(ax, timeline, timeline.series(tables["main"], name, face_id), band=0.06, lw=1, color=colours[k],
               label=f"{name[:-2]} {AU_DESCRIPTIONS[number]}")
    ax.axhline(AU_THRESHOLD, color="k", lw=0.8, ls=":", label=f"AUxx_c threshold ({AU_THRESHOLD})")
    ax.set_ylabel("AU score\n(raw MTL output)")


def _draw_of2_aus(ax, tables, timeline, face_id, t) -> None:
    colours = _palette("tab20")
    sides = [s for s in SIDES if s in tables and OF2_AUS_R[0] in tables[s]]
    for k, name in enumerate(OF2_AUS_R):
        au = name.split("_")[1]
        if sides:
            for side, style in zip(sides, ("-", "--")):
                _trace(ax, timeline, timeline.series(tables[side], name, face_id), band=0.04, lw=1,
                       color=colours[k % 20], ls=style, label=au if style == "-" else "_nolegend_")  # AUs named once
        else:
            _trace(ax, timeline, timeline.series(tables["main"], name, face_id), band=0.04, lw=1,
                   color=colours[k % 20], label=au)
    ax.set_ylim(-0.2, 5.4)
    ax.set_ylabel("OpenFace 2.2 AUs\nintensity 0-5" + ("\nleft — / right - -" if sides else ""))


def _draw_au45(ax, tables, timeline, face_id, t) -> None:
    au45 = timeline.series(tables["main"], AU45_R, face_id)
    _trace(ax, timeline, au45, lw=1, color="tab:blue", label=AU45_R)
    ax.axhline(BLINK_AU45, color="k", lw=0.8, ls=":", label=f"blink threshold ({BLINK_AU45})")
    peaks = [p for _first, _last, p in blinks(au45)]
    marks = timeline.thin(peaks, au45)
    if marks:
        ax.plot(timeline.seconds[marks], au45[marks], "v", color="tab:red", ms=7, label="blink (peak)")
    ax.text(0.995, 0.95, f"{len(peaks)} blinks", transform=ax.transAxes, ha="right", va="top", fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    ax.set_ylim(-0.2, 5.4)
    ax.set_ylabel("AU45 (blink)\n0 open … 5 closed")


def _draw_gaze(ax, tables, timeline, face_id, t) -> None:
    for name, colour in ((GAZE_YAW, "tab:purple"), (GAZE_PITCH, "tab:olive")):
        _trace(ax, timeline, np.degrees(timeline.series(tables["main"], name, face_id)), lw=1, color=colour,
               label=name.replace("gaze_", ""))
    ax.set_ylabel("gaze (°)")


def _draw_pose(ax, tables, timeline, face_id, t) -> None:
    empty = True
    for name, label, colour in zip(POSE_R, ("pitch (Rx)", "yaw (Ry)", "roll (Rz)"),
                                   ("tab:green", "tab:orange", "tab:cyan")):
        values = np.degrees(timeline.series(tables["main"], name, face_id))
        empty = empty and not np.isfinite(values).any()
        _trace(ax, timeline, values, lw=1, color=colour, label=label)
    if empty:
        ax.text(0.5, 0.5, NO_POSE, transform=ax.transAxes, ha="center", va="center", fontsize=10,
                bbox={"facecolor": "white", "alpha": 0.9, "lw": 0})
        ax.set_yticks([])
    ax.set_ylabel("head pose (°)")


def _draw_emotion(ax, tables, timeline, face_id, t) -> None:
    probs = np.stack([timeline.mean(np.nan_to_num(timeline.series(tables["main"], name, face_id)))
                      for name in EMOTION_PROBS])
    colours = _palette("Set2")
    ax.stackplot(t, probs, labels=EMOTIONS, colors=colours, alpha=0.9, zorder=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("emotion\nprobability")


def _draw_mirror(ax, tables, timeline, face_id, t) -> None:
    """Per AU, left hemi-face minus right (one line each instead of two overlapping ones)."""
    colours = _palette("tab10")
    left, right = SIDES
    for k, name in enumerate(AUS_R):
        difference = timeline.series(tables[left], name, face_id) - timeline.series(tables[right], name, face_id)
        _trace(ax, timeline, difference, band=0.06, lw=1, color=colours[k], label=f"{name[:-2]} left − right")
    ax.axhline(0.0, color="k", lw=0.8, ls=":", label="symmetric (0)")
    ax.set_ylabel("hemi-face AU score\nleft − right")


def _draw_mirror_au45(ax, tables, timeline, face_id, t) -> None:
    """Each hemi-face's AU45 (it keeps the subject's eye of its side): one blink trace per eye."""
    for side, label, colour in zip(SIDES, ("left eye", "right eye"), ("tab:blue", "tab:orange")):
        _trace(ax, timeline, timeline.series(tables[side], AU45_R, face_id), lw=1, color=colour, label=label)
    ax.axhline(BLINK_AU45, color="k", lw=0.8, ls=":", label=f"blink threshold ({BLINK_AU45})")
    ax.set_ylim(-0.2, 5.4)
    ax.set_ylabel("AU45 per eye\n0 open … 5 closed")


DRAW = {"aus": _draw_aus, "of2_aus": _draw_of2_aus, "au45": _draw_au45, "gaze": _draw_gaze, "pose": _draw_pose,
        "emotion": _draw_emotion, "mirror": _draw_mirror, "mirror_au45": _draw_mirror_au45}
