"""Shared fixtures: tiny ONNX models, synthetic videos, the ../shared test material, and settings isolated
from the environment."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import tinymodels

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"


def require_shared(*relpaths: str) -> Path:
    """The ../shared directory, or skip the test naming the first missing file."""
    for rel in relpaths:
        if not (SHARED / rel).exists():
            pytest.skip(f"../shared/{rel} not found: the end-to-end tests need the shared test material "
                        f"beside the project")
    return SHARED


@pytest.fixture
def isolated_config(monkeypatch, tmp_path: Path) -> None:
    """No AUD_* variables and no user config, state or data folder leak into the settings of a run (modules
    whose every test needs it: ``pytestmark = pytest.mark.usefixtures("isolated_config")``)."""
    for key in [k for k in os.environ if k.startswith("AUD_")]:
        monkeypatch.delenv(key)
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "xdg" / var.lower()))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def tiny_models(tmp_path: Path) -> Path:
    """A directory with the standard tiny model set: retinaface.onnx, mtl.onnx, star.onnx."""
    return tinymodels.write_set(tmp_path / "models")


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """A BGR frame that differs clearly from its neighbours: a block moving along a grid over a
    background whose brightness steps with the frame number."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (40 + (index * 23) % 180, 90, 200 - (index * 11) % 150)
    bs = max(4, min(width, height) // 4)
    x = (index * bs) % max(1, width - bs)
    y = ((index // 3) * bs) % max(1, height - bs)
    img[y:y + bs, x:x + bs] = (255, 255 - (index * 7) % 256, 0)
    return img


@pytest.fixture
def synthetic_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``synthetic_video(frames=12, width=64, height=64, fps=25.0, name="clip.mp4", pattern=None)``
    writes an mp4 (fourcc mp4v); ``pattern(index, width, height)`` returns each BGR frame."""

    def make(frames: int = 12, width: int = 64, height: int = 64, fps: float = 25.0,
             name: str = "clip.mp4", pattern: Callable[[int, int, int], np.ndarray] | None = None) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        assert writer.isOpened(), "OpenCV cannot write mp4v here"
        try:
            for i in range(frames):
                writer.write((pattern or frame_pattern)(i, width, height))
        finally:
            writer.release()
        return path

    return make
