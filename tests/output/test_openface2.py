"""OpenFace 2.2-style CSV: every name aud writes is in OpenFace 2.2's documented header, in its order; the text
loads with pandas under those names; formatting, missing values and the AU occurrence rules."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from daemon.core import wflw
from daemon.output import openface2
from tests.tables import aud_table

# OpenFace 2.2 FeatureExtraction's header with its default outputs, from RecorderCSV::Open
# (https://github.com/TadasBaltrusaitis/OpenFace/blob/master/lib/local/Utilities/src/RecorderCSV.cpp) and the
# wiki page https://github.com/TadasBaltrusaitis/OpenFace/wiki/Output-Format : 56 eye landmarks, 68 face
# landmarks, 34 non-rigid shape parameters, AU names sorted. 714 columns, as in published FeatureExtraction
# output (e.g. the "[5 rows x 714 columns]" OpenFace 2.1 CSV in NumesSanguis/FACSvatar issue #23).
OPENFACE22_HEADER = (
    ["frame", "face_id", "timestamp", "confidence", "success",
     "gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z", "gaze_angle_x", "gaze_angle_y"]
    + [f"eye_lmk_x_{i}" for i in range(56)] + [f"eye_lmk_y_{i}" for i in range(56)]
    + [f"eye_lmk_X_{i}" for i in range(56)] + [f"eye_lmk_Y_{i}" for i in range(56)]
    + [f"eye_lmk_Z_{i}" for i in range(56)]
    + ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    + [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
    + [f"X_{i}" for i in range(68)] + [f"Y_{i}" for i in range(68)] + [f"Z_{i}" for i in range(68)]
    + ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
    + ["AU01_r", "AU02_r", "AU04_r", "AU05_r", "AU06_r", "AU07_r", "AU09_r", "AU10_r", "AU12_r", "AU14_r",
       "AU15_r", "AU17_r", "AU20_r", "AU23_r", "AU25_r", "AU26_r", "AU45_r"]
    + ["AU01_c", "AU02_c", "AU04_c", "AU05_c", "AU06_c", "AU07_c", "AU09_c", "AU10_c", "AU12_c", "AU14_c",
       "AU15_c", "AU17_c", "AU20_c", "AU23_c", "AU25_c", "AU26_c", "AU28_c", "AU45_c"]
)


def test_documented_header():
    assert len(OPENFACE22_HEADER) == 714
    assert openface2.OPENFACE2_HEADER == tuple(OPENFACE22_HEADER)


def test_every_written_name_is_openface_22s_in_its_order():
    positions = [OPENFACE22_HEADER.index(name) for name in openface2.COLUMNS]  # ValueError if not in it
    assert positions == sorted(positions)
    assert set(openface2.COLUMNS) | set(openface2.LEFT_OUT) == set(OPENFACE22_HEADER)
    assert not set(openface2.COLUMNS) & set(openface2.LEFT_OUT)


def test_written_columns():
    cols = openface2.COLUMNS
    assert cols[:7] == ("frame", "face_id", "timestamp", "confidence", "success", "gaze_angle_x", "gaze_angle_y")
    assert cols[7:13] == ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")
    assert cols[13:149] == tuple(f"x_{i}" for i in range(68)) + tuple(f"y_{i}" for i in range(68))
    assert cols[149:] == ("AU01_r", "AU02_r", "AU04_r", "AU06_r", "AU09_r", "AU12_r", "AU25_r", "AU26_r", "AU45_r",
                          "AU01_c", "AU02_c", "AU04_c", "AU06_c", "AU09_c", "AU12_c", "AU25_c", "AU26_c", "AU45_c")
    assert len(openface2.LEFT_OUT) == 714 - 167


def load(text: str, **kw) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), **kw)


def test_loads_with_pandas_under_openface_names():
    table = aud_table(frames=60, faces={0: range(40), 1: range(10, 30)})
    text = openface2.openface2_text(table)
    df = load(text, skipinitialspace=True)
    assert tuple(df.columns) == openface2.COLUMNS
    assert len(df) == len(table["frame"])
    assert all(df[c].dtype.kind in "if" for c in df.columns)  # every column numeric
    np.testing.assert_array_equal(df["frame"], table["frame"])
    np.testing.assert_array_equal(df["success"], table["success"])
    np.testing.assert_array_equal(np.isnan(df["face_id"]), np.isnan(table["face_id"]))
    np.testing.assert_allclose(df["timestamp"], table["timestamp"], atol=5e-4)
    np.testing.assert_allclose(df["gaze_angle_x"], table["gaze_yaw"], atol=5e-4)
    np.testing.assert_allclose(df["pose_Tz"], table["pose_Tz"], atol=0.05)
    np.testing.assert_allclose(df["pose_Ry"], table["pose_Ry"], atol=5e-4)
    for k, point in enumerate(wflw.TO_IBUG68):
        np.testing.assert_allclose(df[f"x_{k}"], table[f"x_{point}"], atol=0.05)
        np.testing.assert_allclose(df[f"y_{k}"], table[f"y_{point}"], atol=0.05)
    np.testing.assert_allclose(df["AU12_r"], table["AU12_r"], rtol=1e-8)  # 9 significant digits, not 2 decimals
    np.testing.assert_array_equal(df["AU12_c"], table["AU12_c"])
    missing = table["success"] == 0
    assert missing.any() and df.loc[missing, "AU12_r"].isna().all() and df.loc[missing, "x_0"].isna().all()


def test_loads_without_skipinitialspace_once_names_are_stripped():
    """How many OpenFace scripts read it: plain read_csv, then strip the names. Values stay numeric because an
    empty field is written without the space."""
    table = aud_table(frames=50, faces={0: range(5, 50)})
    df = load(openface2.openface2_text(table))
    assert [c.strip() for c in df.columns] == list(openface2.COLUMNS)
    assert all(df[c].dtype.kind in "if" for c in df.columns)
    assert df[" AU45_r"].isna().sum() == 5


def test_exact_formatting():
    table = {
        "frame": [1.0, 2.0], "face_id": [0.0, np.nan], "timestamp": [0.0333333, 0.0666666],
        "confidence": [0.98765, 0.1], "success": [1.0, 0.0], "gaze_yaw": [-0.12345, np.nan],
        "gaze_pitch": [0.5, np.nan], "pose_Tx": [-6.54, np.nan], "pose_Ty": [33.75, np.nan],
        "pose_Tz": [382.51, np.nan], "pose_Rx": [0.0364, np.nan], "pose_Ry": [0.1091, np.nan],
        "pose_Rz": [-0.0555, np.nan], "AU45_r": [3.0, np.nan],
    }
    for k, au in enumerate(openface2.MTL_AUS):
        table[f"{au}_r"] = [0.5 + k / 8, np.nan]
    for axis in "xy":
        for i in range(98):
            table[f"{axis}_{i}"] = [100.25 + i, np.nan]
    lines = openface2.openface2_text(table).splitlines()
    assert lines[0].startswith("frame, face_id, timestamp, confidence, success, gaze_angle_x, gaze_angle_y, pose_Tx")
    assert lines[1].startswith("1, 0, 0.033, 0.99, 1, -0.123, 0.500, -6.5, 33.8, 382.5, 0.036, 0.109, -0.056, "
                               "100.2, 102.2, 104.2")  # x_0 = WFLW 0, x_1 = WFLW 2 (fixed-point, round-half-even)
    # the MTL's scores in full (not OpenFace 2.2's 2 decimals), AU45_r (OpenFace's 0-5 scale) with 2 decimals
    assert lines[1].endswith("0.5, 0.625, 0.75, 0.875, 1, 1.125, 1.25, 1.375, 3.00, "
                             "1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0")
    assert lines[2] == "2,, 0.067, 0.10, 0" + "," * (len(openface2.COLUMNS) - 5)
    assert len(lines) == 3


def test_occurrence_rules():
    """AUxx_c = AUxx_r >= 0.5 (aud's rule) and AU45_c = AU45_r >= 2.5 when the table has no _c columns."""
    table = aud_table(frames=30)
    for au in openface2.MTL_AUS:
        del table[f"{au}_c"]
    table["AU12_r"] = np.linspace(-1, 1, 30)
    table["AU45_r"] = np.linspace(0, 5, 30)
    df = load(openface2.openface2_text(table), skipinitialspace=True)
    np.testing.assert_array_equal(df["AU12_c"], (np.round(table["AU12_r"], 12) >= 0.5).astype(float))
    np.testing.assert_array_equal(df["AU45_c"], (table["AU45_r"] >= 2.5).astype(float))


def test_missing_column_and_ragged_table_are_named():
    table = aud_table(frames=5)
    del table["x_14"]
    with pytest.raises(openface2.TableError, match="'x_14'"):
        openface2.openface2_text(table)
    table = aud_table(frames=5)
    table["pose_Rz"] = table["pose_Rz"][:3]
    with pytest.raises(openface2.TableError, match="pose_Rz: 3"):
        openface2.openface2_text(table)


def test_empty_table_is_just_the_header():
    table = {k: v[:0] for k, v in aud_table(frames=3).items()}
    assert openface2.openface2_text(table) == ", ".join(openface2.COLUMNS) + "\n"


def test_mtl_scores_keep_full_precision():
    """Issue 26 item 7: the MTL's cosine scores (float32, in [-1, 1]) round-trip exactly, so a left-right
    difference of 0.003 (which 2 decimals would erase or double) is read back as written; AU45_r, on OpenFace
    2.2's 0-5 scale, keeps OpenFace 2.2's 2 decimals."""
    table = aud_table(frames=4)
    scores = np.array([0.1234, 0.1264, -0.9876543, 0.0015], np.float32)
    for au in openface2.MTL_AUS:
        table[f"{au}_r"] = scores.astype(np.float64)
    table["AU45_r"] = np.array([1.234, 0.0, 5.0, 2.5])
    df = load(openface2.openface2_text(table), skipinitialspace=True)
    for au in openface2.MTL_AUS:
        np.testing.assert_array_equal(df[f"{au}_r"].to_numpy(np.float32), scores)
    assert df["AU01_r"][1] - df["AU01_r"][0] == pytest.approx(0.003, abs=1e-6)
    text = openface2.openface2_text(table).splitlines()[1]
    assert ", 1.23, " in text and ", 1.234, " not in text  # AU45_r at 2 decimals


def test_hemi_face_table_writes_what_it_has():
    """Issue 26 item 1's cause: a hemi-face table has no pose and no landmarks (they belong to the whole face);
    its OpenFace 2.2-style CSV has every other column of the main one, in the same order."""
    from tests.tables import mirror_table

    main = aud_table(frames=20, faces={0: range(3, 20)})
    side = mirror_table(main, "left")
    with pytest.raises(openface2.TableError, match="pose_Tx"):  # the whole-face header cannot be written
        openface2.openface2_text(side)
    df = load(openface2.openface2_text(side, openface2.HEMI_COLUMNS), skipinitialspace=True)
    assert tuple(df.columns) == openface2.HEMI_COLUMNS
    assert [c for c in openface2.COLUMNS if c in openface2.HEMI_COLUMNS] == list(openface2.HEMI_COLUMNS)
    left_out = set(openface2.COLUMNS) - set(openface2.HEMI_COLUMNS)
    assert left_out == {*(f"pose_{a}" for a in ("Tx", "Ty", "Tz", "Rx", "Ry", "Rz")),
                        *(f"{axis}_{i}" for axis in "xy" for i in range(68))}
    np.testing.assert_array_equal(df["AU12_r"].to_numpy(np.float32), np.float32(side["AU12_r"]))
    np.testing.assert_array_equal(df["AU45_c"].isna(), ~np.asarray(side["success"], bool))
