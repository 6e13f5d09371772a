"""Where a model set came from, in words (issue 26 item 3): the official trained weights only when the
manifest records the pinned official revision; the shared test networks recognised by their hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.core.provenance import OFFICIAL_URL, REVISION, TEST_NETWORKS, Kind, Verified, model_provenance

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "openface3"


def manifest(directory: Path, location: str, revision: str | None, verified: Verified) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["[source]", f'location = "{location}"'] + ([f'revision = "{revision}"'] if revision else [])
    for role in ("detector", "multitask", "landmarks"):
        lines += [f"[source.{role}]", f'verified = "{verified}"']
    (directory / "manifest.toml").write_text("\n".join(lines) + "\n")
    return directory


def test_the_pinned_official_revision_is_official(tmp_path):
    got = model_provenance(manifest(tmp_path / "m", OFFICIAL_URL, REVISION, Verified.PINNED), sha256={})
    assert got.kind is Kind.OFFICIAL
    assert got.text.startswith("the official trained OpenFace 3.0 weights") and "pinned sha256" in got.text


def test_a_mirror_is_another_set_and_says_what_was_checked(tmp_path):
    got = model_provenance(manifest(tmp_path / "m", "http://mirror.lab/w/", None, Verified.SUMS), sha256={})
    assert got.kind is Kind.OTHER
    assert got.text == ("OpenFace 3.0-format weights from http://mirror.lab/w/, not known to be the official "
                        "trained ones (checked against: detector: the source's SHA256SUMS; multitask: the "
                        "source's SHA256SUMS; landmarks: the source's SHA256SUMS)")
    # the official location at another revision is not the official set either
    other = model_provenance(manifest(tmp_path / "r", OFFICIAL_URL, "0" * 40, Verified.NOTHING), sha256={})
    assert other.kind is Kind.OTHER


def test_no_manifest_is_unknown(tmp_path):
    got = model_provenance(tmp_path, sha256={})
    assert got.kind is Kind.UNKNOWN and "not known to be the official trained weights" in got.text


def test_the_given_hashes_recognise_the_test_networks(tmp_path):
    assert model_provenance(tmp_path, sha256=dict(TEST_NETWORKS)).kind is Kind.TEST


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared test networks are not at {SHARED}")
def test_the_shared_test_networks_are_named_as_such():
    got = model_provenance(SHARED)
    assert got.kind is Kind.TEST and "not AU estimates" in got.text
