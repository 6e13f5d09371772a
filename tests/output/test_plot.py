"""The per-result PNG: written (atomically, beside the CSV), plausible size, not blank; no-face, multi-face and
mirror cases; aud- and OpenFace 2.2-style CSVs read back; ``aud plot`` on the command line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon import cli
from daemon.output import openface2, plot
from tests.tables import MIRROR_COLUMNS, aud_table, mirror_table


def image(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)


def assert_not_blank(png: bytes, min_kb: float = 20) -> np.ndarray:
    """A plot of curves: tens of kB at least, and far from one flat colour. A blank white figure of this size
    is under 10 kB with pixel std 0; the plots here measure 80-900 kB with std 40-70 grey levels."""
    assert len(png) > min_kb * 1024
    pixels = image(png)
    assert pixels.std() > 20
    return pixels


def write_csv(path: Path, table: dict, columns: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        n = len(table["frame"])
        for i in range(n):
            row = []
            for c in columns:
                v = table[c][i]
                row.append(v if isinstance(v, str) else ("" if not np.isfinite(v) else format(float(v), ".9g")))
            w.writerow(row)
    return path


def test_single_face_plot():
    pixels = assert_not_blank(plot.render_png({"main": aud_table(frames=150)}, "one.csv"))
    assert pixels.shape[1] >= 800  # one column of panels, readable width


def test_no_face_video_gets_a_plot_that_says_so():
    table = aud_table(frames=40, faces={})
    png = plot.render_png({"main": table}, "empty.csv")
    pixels = image(png)
    assert 3 * 1024 < len(png) < 60 * 1024  # title and one sentence
    assert (pixels < 128).mean() > 0.002  # some text is drawn
    single = image(plot.render_png({"main": aud_table(frames=40)}, "empty.csv"))
    assert pixels.shape[0] < single.shape[0] / 2  # not the panels: a short notice


def test_multi_face_columns_longest_tracked_first_and_capped():
    faces = {k: range(10 * (k + 1)) for k in range(6)}  # face 5 tracked longest
    table = aud_table(frames=60, faces=faces)
    timeline = plot.Timeline(table)
    assert [f for f, _ in timeline.faces()] == [5, 4, 3, 2, 1, 0]
    wide = image(plot.render_png({"main": table}, "six.csv"))
    one = image(plot.render_png({"main": aud_table(frames=60)}, "one.csv"))
    assert one.shape[1] == 100 * (4 + 6) and wide.shape[1] == 100 * (4 + 6 * plot.MAX_FACES)  # 4 of 6 shown
    assert_not_blank(plot.render_png({"main": table}, "six.csv"))


def test_mirror_tables_add_a_left_right_row():
    main = aud_table(frames=90)
    tables = {"main": main, "left_mirrored": mirror_table(main, "left"),
              "right_mirrored": mirror_table(main, "right")}
    with_mirror = assert_not_blank(plot.render_png(tables, "m.csv"))
    without = image(plot.render_png({"main": main}, "m.csv"))
    assert with_mirror.shape[0] > without.shape[0]
    bad = dict(tables, left_mirrored=mirror_table(aud_table(frames=10), "left"))
    with pytest.raises(plot.PlotError, match="left_mirrored table has 10 rows"):
        plot.render_png(bad, "m.csv")


def test_absent_frames_are_shaded():
    """The frames without the face are painted in the 'not found' grey across the panels."""
    table = aud_table(frames=100, faces={0: range(50)})
    pixels = image(plot.render_png({"main": table}, "half.csv"))
    grey = round(0.85 * 255)
    right_half = pixels[:, pixels.shape[1] // 2: int(pixels.shape[1] * 0.75)]
    assert (np.abs(right_half - grey) <= 1).mean() > 0.4


def test_plot_csv_reads_aud_csv_and_mirror_siblings(tmp_path):
    main = aud_table(frames=80, faces={0: range(70)})
    columns = [c for c in main if c not in ("pose_Tx",)]
    csv_path = write_csv(tmp_path / "clip.csv", main, columns)
    for side in ("left", "right"):
        write_csv(tmp_path / f"clip.{side}_mirrored.csv", mirror_table(main, side), MIRROR_COLUMNS)
    assert set(plot.mirror_paths(csv_path)) == {"left_mirrored", "right_mirrored"}
    read = plot.read_table(csv_path)
    np.testing.assert_allclose(read["AU12_r"], main["AU12_r"], rtol=1e-8)
    assert read["emotion"] == main["emotion"]
    png_path = plot.plot_csv(csv_path)
    assert png_path == tmp_path / "clip.png"
    assert_not_blank(png_path.read_bytes())
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


def test_reads_openface2_style_csv(tmp_path):
    table = aud_table(frames=50, faces={0: range(10, 50)})
    path = tmp_path / "of.csv"
    path.write_text(openface2.openface2_text(table))
    read = plot.read_table(path)
    np.testing.assert_allclose(read["gaze_yaw"], table["gaze_yaw"], atol=5e-4, equal_nan=True)
    np.testing.assert_array_equal(np.isnan(read["face_id"]), table["success"] == 0)
    out = plot.plot_csv(path, tmp_path / "of.png")
    assert_not_blank(out.read_bytes())


def test_plots_an_openface2_style_mirror_result(tmp_path):
    """``--mirror --csv-style openface2``'s three CSVs plot with the hemi-face panels (``aud plot`` finds the
    siblings; their OpenFace 2.2 names are read back)."""
    main = aud_table(frames=60, faces={0: range(5, 60)})
    path = tmp_path / "of.csv"
    path.write_text(openface2.openface2_text(main))
    for side in ("left", "right"):
        (tmp_path / f"of.{side}_mirrored.csv").write_text(
            openface2.openface2_text(mirror_table(main, side), openface2.HEMI_COLUMNS))
    tables = {"main": plot.read_table(path)}
    tables.update({side: plot.read_table(p) for side, p in plot.mirror_paths(path).items()})
    fig = plot.figure(tables, "of.csv")
    assert {"mirror", "mirror_au45"} <= {ax.get_label() for ax in fig.axes}
    assert_not_blank(plot.plot_csv(path).read_bytes())


def test_bad_csv_names_the_file_and_problem(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("frame,timestamp\n1,0.0\n")
    with pytest.raises(plot.PlotError, match=r"bad\.csv: no 'success' column"):
        plot.read_table(path)
    path.write_text("frame,timestamp,success\n1,abc,1\n")
    with pytest.raises(plot.PlotError, match="'timestamp' holds a value that is not a number"):
        plot.read_table(path)
    path.write_text("frame,timestamp,success\n1,0.0\n")
    with pytest.raises(plot.PlotError, match="line 2 has 2 fields"):
        plot.read_table(path)


def test_cli_plot(tmp_path, capsys):
    csv_path = write_csv(tmp_path / "c.csv", aud_table(frames=30), list(aud_table(frames=1)))
    assert cli.main(["plot", str(csv_path), "-o", str(tmp_path / "out.png")]) == 0
    assert_not_blank((tmp_path / "out.png").read_bytes())
    assert cli.main(["plot", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err


def _panel(fig, kind: str):
    axes = [ax for ax in fig.axes if ax.get_label() == kind]
    assert axes, f"no {kind!r} panel"
    return axes[0]


def test_emotion_legend_lists_the_stack_top_to_bottom():
    """Issue 26 item 9: stackplot draws the first emotion at the bottom; the legend reads top to bottom, so it
    lists them in reverse (the top band first)."""
    fig = plot.figure({"main": aud_table(frames=60, faces={0: range(50)})}, "e.csv")
    ax = _panel(fig, "emotion")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [*reversed(plot.EMOTIONS), plot.NOT_FOUND]
    bands = ax.collections  # one filled band per emotion, bottom first
    tops = [np.nanmax(b.get_paths()[0].vertices[:, 1]) for b in bands]
    assert tops == sorted(tops)  # the first drawn is the lowest


def test_empty_pose_gets_a_panel_that_says_so():
    """Issue 26 item 9: with AU45 off there are no landmarks, so no pose; the panel stays and says why."""
    table = aud_table(frames=40)
    for name in ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"):
        table[name] = np.full(len(table["frame"]), np.nan)
    fig = plot.figure({"main": table}, "nopose.csv")
    texts = [t.get_text() for t in _panel(fig, "pose").texts]
    assert any("no head pose" in t and "--no-au45" in t for t in texts)
    with_pose = plot.figure({"main": aud_table(frames=40)}, "pose.csv")
    assert not any("no head pose" in t.get_text() for t in _panel(with_pose, "pose").texts)


def test_hemi_face_panels_show_differences_and_au45_per_eye():
    """Issue 26 item 9: not 16 overlapping lines but one left − right difference per AU, and AU45 per eye."""
    main = aud_table(frames=90)
    left, right = mirror_table(main, "left"), mirror_table(main, "right")
    left["AU45_r"] = np.asarray(main["AU45_r"]) * 0.5  # the eyes blink differently
    fig = plot.figure({"main": main, "left_mirrored": left, "right_mirrored": right}, "m.csv")
    differences = [line for line in _panel(fig, "mirror").lines if "left − right" in line.get_label()]
    assert len(differences) == 8
    np.testing.assert_allclose(differences[1].get_ydata(), np.asarray(left["AU02_r"]) - np.asarray(right["AU02_r"]))
    eyes = {line.get_label(): line.get_ydata() for line in _panel(fig, "mirror_au45").lines}
    np.testing.assert_allclose(eyes["left eye"], left["AU45_r"])
    np.testing.assert_allclose(eyes["right eye"], right["AU45_r"])


def test_an_hour_of_data_draws_a_bounded_number_of_points():
    """Issue 24: 100,000 rows (55 min at 30 fps, with hemi-faces) draw at most 2 · PLOT_BINS points per line,
    PLOT_BINS per emotion band and per set of marks, and the picture is the envelope of the full traces."""
    frames = 100_000
    main = aud_table(frames=frames, faces={0: {f for f in range(frames) if (f // 5000) % 7 != 3}})
    tables = {"main": main, "left_mirrored": mirror_table(main, "left"),
              "right_mirrored": mirror_table(main, "right")}
    fig = plot.figure(tables, "hour.csv")
    lines = [line for ax in fig.axes for line in ax.lines]
    assert len(lines) > 20
    assert max(len(line.get_xdata()) for line in lines) <= 2 * plot.PLOT_BINS
    bands = [c for ax in fig.axes for c in ax.collections]  # min/max ranges and emotion bands
    assert len(bands) > 20
    # each band: an upper and a lower edge of at most PLOT_BINS points, closed, per stretch without a gap
    assert max(sum(len(p.vertices) for p in b.get_paths()) for b in bands) <= 2 * plot.PLOT_BINS + 3 * 4
    shaded = sum(len(ax.patches) for ax in fig.axes)
    assert 0 < shaded <= len(fig.axes) * plot.PLOT_BINS // 2
    # the envelope keeps the extremes: the AU12 range spans exactly the full data's, the mean line within it
    aus = _panel(fig, "aus")
    band = next(c for c in aus.collections if c.get_label() == "_AU12 lip corner puller range")
    edges = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    values = np.asarray(main["AU12_r"])
    assert edges.min() == np.nanmin(values) and edges.max() == np.nanmax(values)
    mean = next(line for line in aus.lines if line.get_label().startswith("AU12")).get_ydata()
    assert np.nanmin(values) < np.nanmin(mean) and np.nanmax(mean) < np.nanmax(values)
    assert_not_blank(plot.render_png(tables, "hour.csv"))


def test_a_short_clip_draws_every_frame():
    table = aud_table(frames=2 * plot.PLOT_BINS)
    au01 = next(line for line in _panel(plot.figure({"main": table}, "c.csv"), "aus").lines
                if line.get_label().startswith("AU01"))
    np.testing.assert_array_equal(au01.get_ydata(), table["AU01_r"])


TEST_NETWORKS_TEXT = ("the shared test networks (real RetinaFace, random-weight MTL and STAR): what these networks "
                      "compute, not AU estimates")


def footnotes(fig) -> list[str]:
    return [" ".join(t.get_text().split()) for t in fig.texts if t.get_gid() == "models"]


@pytest.mark.parametrize("faces", [{0: range(30)}, {}], ids=["faces", "no-face"])
def test_the_footnote_says_which_models_computed_the_values(faces):
    """Under the panels (or the no-face notice): the sidecar's provenance sentence, so a picture made with
    the test networks or unofficial weights cannot be mistaken for one of trained AU estimates."""
    sidecar = {"models_provenance": {"kind": "test networks", "text": TEST_NETWORKS_TEXT}}
    note = plot.models_footnote(sidecar)
    assert note == f"models: {TEST_NETWORKS_TEXT}"
    fig = plot.figure({"main": aud_table(frames=30, faces=faces)}, "t.csv", note)
    assert footnotes(fig) == [note]
    bottom = fig.texts[-1].get_position()[1]
    assert all(ax.get_position().y0 > bottom for ax in fig.axes)  # the panels sit above it
    assert footnotes(plot.figure({"main": aud_table(frames=30, faces=faces)}, "t.csv")) == []
    assert plot.models_footnote({}) is None and plot.models_footnote(None) is None


def recorded_footnotes(monkeypatch) -> list:
    """The footnotes of each figure drawn (read when drawn: render_png clears the figure after)."""
    seen: list = []
    real = plot.figure

    def record(*args, **kwargs):
        fig = real(*args, **kwargs)
        seen.append(footnotes(fig))
        return fig

    monkeypatch.setattr(plot, "figure", record)
    return seen


def test_aud_plot_reads_the_footnote_from_the_sidecar_beside_the_csv(tmp_path, monkeypatch):
    seen = recorded_footnotes(monkeypatch)
    csv_path = write_csv(tmp_path / "c.csv", aud_table(frames=30), list(aud_table(frames=1)))
    assert cli.main(["plot", str(csv_path)]) == 0  # no sidecar: no footnote
    (tmp_path / "c.json").write_text(json.dumps({"models_provenance": {
        "kind": "official", "text": "the official trained OpenFace 3.0 weights (nutPace/openface_weights)"}}))
    assert cli.main(["plot", str(csv_path)]) == 0
    (tmp_path / "c.json").write_text("{not json")
    assert cli.main(["plot", str(csv_path)]) == 0  # an unreadable sidecar: still a plot, without the footnote
    assert seen == [
        [], ["models: the official trained OpenFace 3.0 weights (nutPace/openface_weights)"], []]


def test_a_result_plot_carries_its_sidecars_provenance(tmp_path, monkeypatch):
    from daemon.output import OutputOptions, files

    seen = recorded_footnotes(monkeypatch)
    sidecar = {"models_provenance": {"kind": "test networks", "text": TEST_NETWORKS_TEXT}}
    files.write_outputs(tmp_path / "r.csv", {"main": aud_table(frames=20)}, sidecar, OutputOptions(plots=True))
    assert seen == [[f"models: {TEST_NETWORKS_TEXT}"]]
    assert (tmp_path / "r.png").exists()
