"""The pandas recipe in docs/hemiface.md runs on two side CSVs and computes what it says."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "hemiface.md"
AUS = ["AU01_r", "AU02_r", "AU04_r", "AU06_r", "AU09_r", "AU12_r", "AU25_r", "AU26_r", "AU45_r"]


def recipe() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, f"{DOC}: expected one python block"
    return blocks[0]


def side_csv(path: Path, frames: np.ndarray, success: np.ndarray, au_values: dict[str, np.ndarray]) -> None:
    table = pd.DataFrame({"frame": frames, "face_id": 0, "timestamp": (frames - 1) / 25.0,
                          "confidence": 0.99, "success": success.astype(int),
                          "face_x1": 10.0, "face_y1": 12.0, "face_x2": 90.0, "face_y2": 100.0,
                          "gaze_yaw": 0.1, "gaze_pitch": -0.1, "emotion": "Neutral"})
    for au in AUS:
        table[au] = np.where(success, au_values.get(au, np.zeros(len(frames))), np.nan)
    table["eye_open"] = 0.3
    table.to_csv(path, index=False)


def test_asymmetry_recipe_runs_and_is_right(tmp_path, monkeypatch, capsys):
    frames = np.arange(1, 11)
    success = np.ones(10, bool)
    success[3] = False  # frame 4: no face; it must be left out
    au12_left = np.array([0, 1, 2, 9, 4, 5, 6, 3, 2, 1], float)
    au12_right = au12_left / 2
    au12_right[6] = 4.0  # the right side peaks at frame 7 (left at 7 too, 6.0)
    au04_right = np.linspace(0, 1, 10)
    side_csv(tmp_path / "interview.left_mirrored.csv", frames, success, {"AU12_r": au12_left})
    side_csv(tmp_path / "interview.right_mirrored.csv", frames, success,
             {"AU12_r": au12_right, "AU04_r": au04_right})
    # the right CSV in another row order: the recipe must pair rows by frame, not by position
    shuffled = pd.read_csv(tmp_path / "interview.right_mirrored.csv").iloc[::-1]
    shuffled.to_csv(tmp_path / "interview.right_mirrored.csv", index=False)

    monkeypatch.chdir(tmp_path)
    script = tmp_path / "recipe.py"
    script.write_text(recipe())
    scope = runpy.run_path(str(script))
    summary, asym = scope["summary"], scope["asym"]

    ok = success
    diff12 = au12_left[ok] - au12_right[ok]
    assert list(summary.index) == AUS
    assert summary.loc["AU12_r", "left_mean"] == pytest.approx(au12_left[ok].mean())
    assert summary.loc["AU12_r", "right_mean"] == pytest.approx(au12_right[ok].mean())
    assert summary.loc["AU12_r", "mean_asymmetry"] == pytest.approx(diff12.mean())
    assert summary.loc["AU12_r", "mean_abs_asymmetry"] == pytest.approx(np.abs(diff12).mean())
    assert summary.loc["AU12_r", "left_peak_frame"] == 7 and summary.loc["AU12_r", "right_peak_frame"] == 7
    assert summary.loc["AU04_r", "mean_asymmetry"] == pytest.approx(-au04_right[ok].mean())
    assert summary.loc["AU04_r", "right_peak_frame"] == 10
    assert sorted(asym["frame"]) == list(frames[ok])
    row = asym[asym["frame"] == 3].iloc[0]
    assert row["AU12_r"] == pytest.approx(1.0) and row["AU04_r"] == pytest.approx(-au04_right[2])
    assert "AU12_r" in capsys.readouterr().out
