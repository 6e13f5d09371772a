"""Fixtures for the model tools: random-weight checkpoints in the official formats, a local mirror, and
one real ``aud models fetch`` run (download with a dropped connection, then export) shared by the tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the model tools need PyTorch (pip install -e '.[export]')")

from tests.tools.checkpoint_files import Mirror, served, write_checkpoints

AUD = Path(sys.executable).with_name("aud")


def isolated_env(home: Path) -> dict[str, str]:
    """The environment for an ``aud`` subprocess that must not touch the user's config, state or cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUD_")}
    env.update(XDG_CONFIG_HOME=str(home / "config"), XDG_CACHE_HOME=str(home / "cache"),
               XDG_STATE_HOME=str(home / "state"), XDG_DATA_HOME=str(home / "data"),
               AUD_STATE=str(home / "aud-state"))
    return env


def aud(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(AUD), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> Path:
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture
def mirror_of():
    """Factory: ``mirror_of(files, drop_once=())`` -> a running Mirror, closed after the test."""
    mirrors: list[Mirror] = []

    def make(files: dict[str, bytes], drop_once=()) -> Mirror:
        m = Mirror(dict(files), set(drop_once))
        mirrors.append(m)
        return m

    yield make
    for m in mirrors:
        m.close()


@dataclass(frozen=True)
class Fetched:
    models: Path
    cache: Path
    result: subprocess.CompletedProcess
    requests: tuple[tuple[str, str | None], ...]
    files: dict[str, bytes]
    env: dict[str, str]


@pytest.fixture(scope="session")
def fetched(checkpoints, tmp_path_factory) -> Fetched:
    """``aud models fetch --source http://127.0.0.1:PORT/ --to DIR --accept-license`` against a mirror
    that drops the connection half-way through MTL_backbone.pth the first time."""
    home = tmp_path_factory.mktemp("fetch-home")
    files = served(checkpoints)
    mirror = Mirror(dict(files), {"MTL_backbone.pth"})
    try:
        env = isolated_env(home)
        models = home / "models"
        cache = home / "cache-dir"
        result = aud(["models", "fetch", "--family", "openface3", "--source", mirror.url, "--to", str(models),
                      "--accept-license", "--cache", str(cache)], env)
    finally:
        mirror.close()
    return Fetched(models, cache, result, tuple(mirror.requests), files, env)
