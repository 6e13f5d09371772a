"""The OpenFace 2.2 AUs through ``aud extract``'s runner (tiny ONNX models, stand-in OpenFace 2.2 files): the
columns are there, in range, and the CSV is byte-identical whatever the shard plan."""

from __future__ import annotations

import asyncio
import csv
import re

import numpy as np
import pytest

from daemon.core.openface2au.options import AuModelsError
from daemon.core.schema import COLUMNS, OF2_AUS, OF2_AUS_C, OF2_AUS_R
from daemon.jobs.extract import extract
from daemon.output import read_csv
from tests.jobs.extractkit import in_process, settings

from . import standins

W, H = 64, 48


@pytest.fixture
def of2_models(tiny_models):
    standins.make_model_set(tiny_models)
    return tiny_models


def test_one_shard_and_many_write_the_same_csv(of2_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=17, width=W, height=H)
    texts = []
    for shard_frames in (100, 4, 3):
        out = tmp_path / f"clip{shard_frames}.csv"
        asyncio.run(extract([video], out, settings(of2_models, tmp_path, shard_frames=shard_frames,
                                                   au_models="both"), make=in_process))
        texts.append(out.read_text())
    assert texts[0] == texts[1] == texts[2]
    rows = read_csv(tmp_path / "clip100.csv")
    assert list(rows[0]) == [*COLUMNS, *OF2_AUS]
    r = np.array([[float(row[c]) for c in OF2_AUS_R] for row in rows if row["success"] == "1"])
    c = np.array([[float(row[c]) for c in OF2_AUS_C] for row in rows if row["success"] == "1"])
    assert len(r) == 17 and ((r >= 0) & (r <= 5)).all() and set(np.unique(c)) <= {0.0, 1.0}
    assert r.std() > 0  # the stand-in models do respond to the frames


def test_default_is_openface3_without_the_files(tiny_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=3, width=W, height=H)
    out = tmp_path / "clip.csv"
    s = settings(tiny_models, tmp_path)
    assert s.au_models_in_use() == "openface3"
    asyncio.run(extract([video], out, s, make=in_process))
    assert list(read_csv(out)[0]) == list(COLUMNS)


def test_default_is_both_with_the_files(of2_models, tmp_path):
    assert settings(of2_models, tmp_path).au_models_in_use() == "both"
    assert settings(of2_models, tmp_path, au45=False).au_models_in_use() == "openface3"


def test_refusals_say_why(tiny_models, of2_models, tmp_path):
    with pytest.raises(AuModelsError, match="needs OpenFace 2.2's AU files"):
        settings(tmp_path / "empty", tmp_path, au_models="openface2").au_models_in_use()
    with pytest.raises(AuModelsError, match="--no-au45"):
        settings(of2_models, tmp_path, au_models="both", au45=False).au_models_in_use()


def test_the_openface2_files_are_part_of_the_job_key(of2_models, tmp_path):
    from daemon.jobs.plan import TimeSelection
    from daemon.jobs.spec import output_settings

    s = settings(of2_models, tmp_path, au_models="both")
    before = output_settings(s, TimeSelection())
    assert before["au_models"] == "both"
    assert "au_models" not in output_settings(settings(of2_models, tmp_path, au_models="openface3"), TimeSelection())
    model = next((of2_models / "openface2/lib/local/FaceAnalyser/AU_predictors/svm_combined").iterdir())
    data = bytearray(model.read_bytes())
    data[-20] ^= 1
    model.write_bytes(bytes(data))
    assert output_settings(s, TimeSelection())["openface2_files"] != before["openface2_files"]


def test_hemi_face_csvs_carry_their_own_openface2_aus(of2_models, synthetic_video, tmp_path):
    from daemon.core.schema import MIRROR_COLUMNS, SIDES
    from daemon.output import side_path

    video = synthetic_video(frames=11, width=W, height=H)
    texts = []
    for shard_frames in (100, 3):
        out = tmp_path / f"m{shard_frames}" / "clip.csv"
        asyncio.run(extract([video], out, settings(of2_models, tmp_path, shard_frames=shard_frames, mirror=True,
                                                   au_models="both"), make=in_process))
        texts.append([p.read_text() for p in (out, *(side_path(out, s) for s in SIDES))])
    assert texts[0] == texts[1]
    out = tmp_path / "m100" / "clip.csv"
    sides = [read_csv(side_path(out, s)) for s in SIDES]
    for rows in sides:
        assert list(rows[0]) == [*MIRROR_COLUMNS, *OF2_AUS]
        r = np.array([[float(row[c]) for c in OF2_AUS_R] for row in rows if row[OF2_AUS_R[0]] != ""])
        assert len(r) == 11 and ((r >= 0) & (r <= 5)).all()
    left = np.array([[float(row[c]) for c in OF2_AUS_R] for row in sides[0]])
    right = np.array([[float(row[c]) for c in OF2_AUS_R] for row in sides[1]])
    assert not np.array_equal(left, right)  # two mirrored faces, two persons' AUs


@pytest.mark.parametrize("mirror", [False, True])
def test_every_face_gets_its_own_person_median(tmp_path, synthetic_video, mirror):
    """Two faces a frame (faces = "all"): per face id (and side), the same CSVs whatever the shard plan; the two
    persons' AUs differ."""
    from daemon.core.schema import SIDES
    from daemon.output import side_path
    from tests import tinymodels

    det = tinymodels.detector([tinymodels.Face((0.05, 0.1, 0.45, 0.9), 0.95),
                               tinymodels.Face((0.55, 0.1, 0.95, 0.9), 0.8)])
    models = tinymodels.write_set(tmp_path / "two", det=det)
    standins.make_model_set(models)
    video = synthetic_video(frames=13, width=W, height=H)
    texts = []
    for shard_frames in (100, 4, 3):
        out = tmp_path / f"all{shard_frames}.csv"
        asyncio.run(extract([video], out, settings(models, tmp_path, shard_frames=shard_frames, faces="all",
                                                   au_models="both", mirror=mirror), make=in_process))
        texts.append([p.read_text() for p in (out, *(side_path(out, s) for s in SIDES if mirror))])
    assert texts[0] == texts[1] == texts[2]
    rows = read_csv(tmp_path / "all100.csv")
    assert len(rows) == 26 and {r["face_id"] for r in rows} == {"0", "1"}
    per_face = {f: np.array([[float(r[c]) for c in OF2_AUS_R] for r in rows if r["face_id"] == f]) for f in "01"}
    assert all(len(v) == 13 and ((v >= 0) & (v <= 5)).all() for v in per_face.values())
    assert not np.array_equal(per_face["0"], per_face["1"])
    if mirror:
        side = read_csv(side_path(tmp_path / "all100.csv", SIDES[0]))
        assert {r["face_id"] for r in side} == {"0", "1"} and all(r[OF2_AUS_R[0]] != "" for r in side)


def test_one_face_gives_the_same_aus_as_primary_or_all(of2_models, synthetic_video, tmp_path):
    video = synthetic_video(frames=9, width=W, height=H)
    got = {}
    for faces in ("primary", "all"):
        out = tmp_path / f"{faces}.csv"
        asyncio.run(extract([video], out, settings(of2_models, tmp_path, shard_frames=4, faces=faces,
                                                   au_models="both"), make=in_process))
        got[faces] = [{c: r[c] for c in OF2_AUS} for r in read_csv(out)]
    assert got["primary"] == got["all"]


def test_openface2_csv_style_writes_openface2s_au_columns_in_its_order(of2_models, synthetic_video, tmp_path):
    import pandas as pd

    from daemon.core.openface2au.predict import AUS_C as F_C
    from daemon.core.openface2au.predict import AUS_R as F_R

    video = synthetic_video(frames=7, width=W, height=H)
    out = tmp_path / "of2.csv"
    asyncio.run(extract([video], out, settings(of2_models, tmp_path, au_models="both", csv_style="openface2"),
                        make=in_process))
    aud = tmp_path / "aud.csv"
    asyncio.run(extract([video], aud, settings(of2_models, tmp_path, au_models="both"), make=in_process))
    frame = pd.read_csv(out, skipinitialspace=True)
    header = list(frame.columns)
    aus = [c for c in header if c.startswith("AU")]
    assert aus == [f"{a}_r" for a in F_R] + [f"{a}_c" for a in F_C]
    assert header.index("AU01_r") > header.index("y_67")  # after the landmarks, as FeatureExtraction writes
    assert header[-18:] == [*(f"of3_{a}_r" for a in ("AU01", "AU02", "AU04", "AU06", "AU09", "AU12", "AU25", "AU26")),
                            "aud_AU45_r",
                            *(f"of3_{a}_c" for a in ("AU01", "AU02", "AU04", "AU06", "AU09", "AU12", "AU25", "AU26")),
                            "aud_AU45_c"]
    r = frame[[f"{a}_r" for a in F_R]].to_numpy()
    c = frame[[f"{a}_c" for a in F_C]].to_numpy()
    assert ((r >= 0) & (r <= 5)).all() and set(np.unique(c)) <= {0.0, 1.0}
    # the same values as aud's own CSV, written as OpenFace 2.2's RecorderCSV::WriteLine writes them:
    # intensities with 2 decimals, occurrences with 1
    mine = pd.read_csv(aud)
    np.testing.assert_allclose(r, mine[list(OF2_AUS_R)].to_numpy(), atol=0.005 + 1e-9)
    with open(out, newline="", encoding="utf-8") as f:
        texts = list(csv.DictReader(f, skipinitialspace=True))
    assert texts and all(re.fullmatch(r"\d\.\d\d", row[f"{a}_r"]) for row in texts for a in F_R)
    assert all(row[f"{a}_c"] in ("0.0", "1.0") for row in texts for a in F_C)


def test_the_plot_shows_the_openface2_intensities(of2_models, synthetic_video, tmp_path):
    from daemon.output import plot

    video = synthetic_video(frames=6, width=W, height=H)
    out = tmp_path / "p.csv"
    asyncio.run(extract([video], out, settings(of2_models, tmp_path, au_models="both", plots=True, mirror=True),
                        make=in_process))
    png = out.with_suffix(".png")
    assert png.stat().st_size > 0
    tables = {"main": plot.read_table(out), **{s: plot.read_table(p) for s, p in plot.mirror_paths(out).items()}}
    assert "of2_aus" in plot._panel_rows(tables)


def test_openface2_alone_leaves_openface3s_au_columns_out(of2_models, synthetic_video, tmp_path):
    import pandas as pd

    from daemon.core.schema import AUS_C, AUS_R

    video = synthetic_video(frames=5, width=W, height=H)
    out = tmp_path / "a" / "c.csv"
    asyncio.run(extract([video], out, settings(of2_models, tmp_path, au_models="openface2", mirror=True, plots=True),
                        make=in_process))
    header = list(read_csv(out)[0])
    assert not set(AUS_R + AUS_C) & set(header) and "AU45_r" in header and set(OF2_AUS) <= set(header)
    assert out.with_suffix(".png").stat().st_size > 0
    styled = tmp_path / "b" / "c.csv"
    asyncio.run(extract([video], styled, settings(of2_models, tmp_path, au_models="openface2",
                                                  csv_style="openface2"), make=in_process))
    names = list(pd.read_csv(styled, skipinitialspace=True).columns)
    assert not [n for n in names if n.startswith("of3_")] and names[-2:] == ["aud_AU45_r", "aud_AU45_c"]
