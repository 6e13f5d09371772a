"""``aud extract --csv-style openface2`` end to end: the file loads with pandas under OpenFace 2.2's column names,
every name is in OpenFace 2.2's documented header (``openface2.OPENFACE2_HEADER``, itself held to the published
header in tests/output/test_openface2.py) in that order, and every value is the aud-style CSV's of the same video
and settings, within the OpenFace 2.2 formatting's precision.

The cut: frames 14-29 of ../shared/media/hamilton_clip.mp4 (0-based), with ``--faces all``: two people in
14-19, a shot change at 20 after which one and then two faces are found.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from daemon.core import wflw
from daemon.core.blink import BLINK_AU45
from daemon.core.schema import AU_NUMBERS, au_name
from daemon.output import openface2
from tests.conftest import SHARED, require_shared
from tests.e2e.facecheck import run_extract
from tests.media import cut_clip

pytestmark = pytest.mark.slow
CLIP = SHARED / "media" / "hamilton_clip.mp4"

# OpenFace 2.2's decimals per column (RecorderCSV); a value written with d decimals is within half a unit of
# the last place of aud's 9-significant-digit value, plus that value's own rounding (≤ 5e-9 relative)
DECIMALS = {"timestamp": 3, "confidence": 2, "gaze_angle_x": 3, "gaze_angle_y": 3,
            "pose_Tx": 1, "pose_Ty": 1, "pose_Tz": 1, "pose_Rx": 3, "pose_Ry": 3, "pose_Rz": 3}


def precision(name: str, value: np.ndarray) -> np.ndarray:
    if name.endswith("_r") and name != "AU45_r":  # the MTL's scores: aud's full precision, the same text
        return np.zeros_like(value)
    if name.startswith(("x_", "y_")):
        decimals = 1
    elif name == "AU45_r":
        decimals = 2
    else:
        decimals = DECIMALS[name]
    return 0.5 * 10.0 ** -decimals + 1e-8 * np.abs(value)


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    require_shared("media/hamilton_clip.mp4", "models/openface3/star.onnx")
    d = tmp_path_factory.mktemp("of2")
    video = cut_clip(CLIP, d / "cut.mp4", 14, 16)
    aud = run_extract(video, d / "cut.aud.csv", "--faces", "all")
    of2 = run_extract(video, d / "cut.of2.csv", "--faces", "all", "--csv-style", "openface2")
    return pd.read_csv(aud), of2


def test_loads_with_openface2_names_in_documented_order(csvs):
    _, path = csvs
    header = path.read_text().splitlines()[0]
    assert header.startswith("frame, face_id, timestamp, confidence, success, ")  # RecorderCSV's ", "
    table = pd.read_csv(path, skipinitialspace=True)
    names = list(table.columns)
    documented = list(openface2.OPENFACE2_HEADER)
    unknown = [n for n in names if n not in documented]
    assert not unknown, f"names not in OpenFace 2.2's header: {unknown}"
    positions = [documented.index(n) for n in names]
    assert positions == sorted(positions), "columns out of OpenFace 2.2's order"
    # what OpenFace 2.2 readers look up, all there
    wanted = ["frame", "face_id", "timestamp", "confidence", "success", "gaze_angle_x", "gaze_angle_y",
              "pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz",
              *(f"x_{i}" for i in range(68)), *(f"y_{i}" for i in range(68)),
              *(au_name(n, "r") for n in AU_NUMBERS), "AU45_r", *(au_name(n, "c") for n in AU_NUMBERS), "AU45_c"]
    assert set(wanted) <= set(names)
    # a reader that strips the names instead of the fields (common in OpenFace 2.2 scripts) gets the same table
    stripped = pd.read_csv(path)
    stripped.columns = stripped.columns.str.strip()
    pd.testing.assert_frame_equal(stripped, table)
    assert all(pd.api.types.is_numeric_dtype(table[c]) for c in names), "every column must load as numbers"


def test_values_equal_the_aud_style_csv(csvs):
    aud, path = csvs
    of2 = pd.read_csv(path, skipinitialspace=True)
    assert len(of2) == len(aud) > 16  # more than one row in some frames (faces = all)
    np.testing.assert_array_equal(of2["frame"], aud["frame"])
    np.testing.assert_array_equal(of2["face_id"], aud["face_id"])
    np.testing.assert_array_equal(of2["success"], aud["success"])
    pairs = {"timestamp": "timestamp", "confidence": "confidence",
             "gaze_angle_x": "gaze_yaw", "gaze_angle_y": "gaze_pitch",
             **{p: p for p in ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")},
             **{f"{axis}_{k}": f"{axis}_{point}" for k, point in enumerate(wflw.TO_IBUG68) for axis in "xy"},
             **{au_name(n, "r"): au_name(n, "r") for n in AU_NUMBERS}, "AU45_r": "AU45_r"}
    worst = {}
    for ours, theirs in pairs.items():
        a, b = of2[ours].to_numpy(float), aud[theirs].to_numpy(float)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=ours)
        ok = ~np.isnan(b)
        assert ok.any(), ours
        diff = np.abs(a[ok] - b[ok])
        worst[ours] = float(diff.max())
        assert (diff <= precision(ours, b[ok])).all(), (ours, float(diff.max()))
    for n in AU_NUMBERS:
        np.testing.assert_array_equal(of2[au_name(n, "c")], aud[au_name(n, "c")])
    blink = np.where(aud["AU45_r"].isna(), np.nan, (aud["AU45_r"] >= BLINK_AU45).astype(float))
    np.testing.assert_array_equal(of2["AU45_c"], blink)
    print("largest differences per group: "
          + ", ".join(f"{group} {max(v for k, v in worst.items() if k.startswith(group)):.2g}"
                      for group in ("timestamp", "confidence", "gaze", "pose_T", "pose_R", "x_", "y_", "AU")))
