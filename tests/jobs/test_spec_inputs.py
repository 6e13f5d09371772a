"""``jobs/spec.py`` (a run's key and sidecar from the settings) and ``jobs/inputs.py`` (an input's
content fingerprint and identity), in process."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from daemon.config import Settings
from daemon.core import provenance
from daemon.core.models import load_model_set
from daemon.jobs import inputs, spec
from daemon.jobs.plan import TimeSelection

pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture
def models(tiny_models):
    return load_model_set(tiny_models, signatures=False)


def key(models, **settings) -> str:
    return spec.job_key(models, spec.output_settings(Settings(**settings), TimeSelection()))


def test_settings_that_shape_the_output_change_the_key_and_speed_settings_do_not(models):
    base = key(models)
    for shaping in ({"faces": "all"}, {"mirror": True}, {"csv_style": "openface2"}, {"au45": False},
                    {"plots": False}, {"detect_max_side": 640}, {"detect_every": 3}, {"camera_fx": 500.0}):
        assert key(models, **shaping) != base, shaping
    for speed in ({"workers": 7}, {"threads_per_worker": 2}, {"batch_size": 8}, {"shard_frames": 8}):
        assert key(models, **speed) == base, speed


def test_the_time_selection_is_part_of_the_key(models):
    s = Settings()
    whole = spec.job_key(models, spec.output_settings(s, TimeSelection()))
    part = spec.job_key(models, spec.output_settings(s, TimeSelection(1.0, 2.0, 1)))
    assert whole != part


def test_the_sidecar_names_models_providers_options_and_versions(models):
    config = spec.runner_config(Settings(mirror=True), models, {"detector": "CPUExecutionProvider"})
    sidecar = config.sidecar
    assert set(sidecar["models"]) == set(models.files)
    assert sidecar["models"]["detector"]["sha256"] == models.files["detector"].sha256
    assert sidecar["providers"] == {"detector": "CPUExecutionProvider"}
    assert sidecar["options"]["mirror"] is True and sidecar["options"]["batch_size"] == 4
    assert sidecar["packages"] == spec.package_versions() and "mirror" in sidecar
    assert config.key == key(models, mirror=True)


def no_rehash(directory, names):
    raise AssertionError("the model files were hashed again: the ModelSet's hashes are to be used")


def test_the_sidecar_says_where_the_models_came_from_without_hashing_again(models, monkeypatch):
    """The tiny models have no [source] in a manifest: "unknown", not the official trained weights."""
    monkeypatch.setattr(provenance, "_hashes", no_rehash)
    record = spec.runner_config(Settings(), models, {}).sidecar["models_provenance"]
    assert record["kind"] == provenance.Kind.UNKNOWN.value == "unknown"
    assert "not known to be the official trained weights" in record["text"]


def test_the_sidecar_recognises_the_shared_test_networks_by_their_hashes(models, monkeypatch):
    monkeypatch.setattr(provenance, "_hashes", no_rehash)
    monkeypatch.setattr(provenance, "TEST_NETWORKS", {role: models.files[role].sha256
                                                      for role in ("multitask", "landmarks")})
    record = spec.runner_config(Settings(), models, {}).sidecar["models_provenance"]
    assert record["kind"] == provenance.Kind.TEST.value
    assert "not AU estimates" in record["text"]
    # without AU45 the landmark network is not loaded: the multitask network's hash still tells
    without_au45 = load_model_set(models.directory, roles=("detector", "multitask"), signatures=False)
    assert spec.runner_config(Settings(au45=False), without_au45, {}).sidecar["models_provenance"] == record


def test_the_sidecar_of_a_mirror_set_is_other_weights(models, monkeypatch):
    (models.directory / "manifest.toml").write_text(
        '[source]\nlocation = "https://lab.example/weights/"\n[source.multitask]\nverified = "nothing"\n')
    record = spec.runner_config(Settings(), models, {}).sidecar["models_provenance"]
    assert record["kind"] == "other" and "https://lab.example/weights/" in record["text"]


def test_fingerprint_is_the_contents_sha256_in_both_forms(tmp_path):
    path = tmp_path / "v.bin"
    data = os.urandom(3 * 1024 + 17)
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert inputs.fingerprint(path, chunk=1024) == expected  # several chunks and a partial one
    assert asyncio.run(inputs.fingerprint_async(path, chunk=1024)) == expected
    copy = tmp_path / "other-name.bin"
    copy.write_bytes(data)
    assert inputs.fingerprint(copy) == expected  # the same video under two names is one job


def test_identity_changes_when_the_file_is_replaced(tmp_path):
    path = tmp_path / "v.bin"
    path.write_bytes(b"a" * 10)
    first = inputs.identity(path)
    assert inputs.identity(path) == first
    replacement = tmp_path / "new.bin"
    replacement.write_bytes(b"b" * 11)
    os.replace(replacement, path)
    assert inputs.identity(path) != first
