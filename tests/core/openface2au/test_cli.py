"""``aud extract --au-models both --csv-style openface2`` as a user runs it: a real subprocess with two worker
processes on a cut of the shared clip (the shared OpenFace 3.0 models, stand-in OpenFace 2.2 files), one shard
against many; and the refusals' messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daemon import cli
from daemon.core.openface2au.predict import AUS_C, AUS_R
from tests.conftest import PROJECT, require_shared
from tests.media import cut_clip

from . import standins

pytestmark = pytest.mark.usefixtures("isolated_config")
FRAMES = 10


def aud_extract(video: Path, out: Path, models: Path, env: dict, *flags: str) -> None:
    done = subprocess.run([sys.executable, "-m", "daemon", "extract", str(video), "-o", str(out), "--models",
                           str(models), "--workers", "2", "--provider", "cpu", "--no-plots", *flags],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_one_shard_and_many_on_the_shared_clip(tmp_path):
    shared = require_shared("media/hamilton_clip.mp4", "models/openface3/star.onnx")
    models = tmp_path / "models"
    models.mkdir()
    for f in (shared / "models" / "openface3").iterdir():
        (models / f.name).symlink_to(f)
    standins.make_model_set(models)
    video = cut_clip(shared / "media" / "hamilton_clip.mp4", tmp_path / "cut.mp4", 100, FRAMES)
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    texts = []
    for shard_frames in ("100", "3"):
        out = tmp_path / f"s{shard_frames}" / "cut.csv"
        aud_extract(video, out, models, {**env, "AUD_SHARD_FRAMES": shard_frames}, "--au-models", "both",
                    "--csv-style", "openface2")
        texts.append(out.read_text())
    assert texts[0] == texts[1]
    frame = pd.read_csv(tmp_path / "s100" / "cut.csv", skipinitialspace=True)
    assert len(frame) == FRAMES and (frame["success"] == 1).all()
    assert [c for c in frame.columns if c.startswith("AU")] == [f"{a}_r" for a in AUS_R] + [f"{a}_c" for a in AUS_C]
    r, c = frame[[f"{a}_r" for a in AUS_R]].to_numpy(), frame[[f"{a}_c" for a in AUS_C]].to_numpy()
    assert ((r >= 0) & (r <= 5)).all() and set(np.unique(c)) <= {0.0, 1.0}


def test_refusals_name_the_reason(tmp_path, tiny_models, synthetic_video, capsys):
    video = synthetic_video(frames=3, width=64, height=48)
    base = ["extract", str(video), "-o", str(tmp_path / "o.csv"), "--models", str(tiny_models), "--workers", "1"]
    assert cli.main([*base, "--au-models", "both"]) == 2
    assert "needs OpenFace 2.2's AU files" in " ".join(capsys.readouterr().err.split())
    standins.make_model_set(tiny_models)
    assert cli.main([*base, "--au-models", "openface2", "--no-au45"]) == 2
    assert "--no-au45" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_the_environment_chooses_too(tmp_path, tiny_models, monkeypatch):
    from daemon.config import Settings

    monkeypatch.setenv("AUD_AU_MODELS", "openface3")
    standins.make_model_set(tiny_models)
    assert Settings(models=tiny_models).au_models_in_use() == "openface3"
    monkeypatch.delenv("AUD_AU_MODELS")
    assert Settings(models=tiny_models).au_models_in_use() == "both"
