"""Where a model set came from, and what was verified: the official trained OpenFace 3.0 weights, another
set of weights in the same format, or the shared test networks (random weights).

``aud models fetch`` and ``aud models export`` record it in the model directory's ``manifest.toml``
(``[source]``: the location and revision; ``[source.<role>] verified``: what each checkpoint was checked
against). :func:`model_provenance` reads it back as one sentence for the sidecar, the plot and messages.
No PyTorch here: the daemon imports this.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

REPOSITORY = "nutPace/openface_weights"
REVISION = "3844412b54706ed0a930b99589508ed3c101f39e"
OFFICIAL_URL = f"https://huggingface.co/{REPOSITORY}/resolve/{REVISION}/"
MANIFEST = "manifest.toml"  # the same name as core.models.MANIFEST (not imported: onnxruntime-free)
DEFAULT_FILES = {"detector": "retinaface.onnx", "multitask": "mtl.onnx", "landmarks": "star.onnx"}

# How to get PyTorch for `aud models fetch|export` (the README's "Trained models" says the same). On Linux,
# PyPI's default torch wheel pulls the CUDA libraries (several GB): the CPU-only wheel first avoids them.
EXPORT_INSTALL = (".venv/bin/pip install -e '.[export]' (on Linux install the CPU-only PyTorch first: "
                  ".venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu)")

# sha256 of the shared test networks (../shared/models/openface3): real RetinaFace, random-weight MTL and STAR
TEST_NETWORKS = {
    "multitask": "b96aefba54e52f3a4b629122d40fbfb11d0cc646dc6d8485d3b25ee9188cf4c5",
    "landmarks": "3c04eabe36bcbdfb1687d9078a9c579201ad83717a9edf1dc7977556bb95da8a",
}


class Verified(StrEnum):
    """What one checkpoint was checked against before it was exported."""

    PINNED = "pinned sha256"  # the hash aud knows for the official file
    SUMS = "the source's SHA256SUMS"  # only the source's own checksum list (proves the transfer, not the origin)
    NOTHING = "nothing"


class Kind(StrEnum):
    OFFICIAL = "official"  # the official trained OpenFace 3.0 weights (the pinned revision)
    OTHER = "other"  # OpenFace 3.0-format weights from elsewhere: not known to be the official ones
    TEST = "test networks"  # the shared test networks: random weights, outputs are not AU estimates
    UNKNOWN = "unknown"  # nothing records where they came from


@dataclass(frozen=True)
class Provenance:
    kind: Kind
    text: str  # one sentence for people: where the files came from and what was verified

    def __str__(self) -> str:
        return self.text

    def record(self) -> dict[str, str]:
        """For the sidecar (``models_provenance``), read back by the plot."""
        return {"kind": self.kind.value, "text": self.text}


def _verified_text(source: Mapping[str, object]) -> str:
    checks = []
    for role in DEFAULT_FILES:
        entry = source.get(role)
        if isinstance(entry, dict):
            checks.append(f"{role}: {entry.get('verified', 'not recorded')}")
    return "; ".join(checks) if checks else "not recorded"


def describe_source(location: str, revision: str | None, verified: Mapping[str, str]) -> Provenance:
    """The provenance of checkpoints read from ``location`` (``verified``: role -> a ``Verified`` value)."""
    source: dict[str, object] = {role: {"verified": v} for role, v in verified.items()}
    checked = _verified_text(source)
    if location == OFFICIAL_URL and revision == REVISION:
        return Provenance(Kind.OFFICIAL, f"the official trained OpenFace 3.0 weights ({REPOSITORY} at revision "
                                         f"{REVISION[:12]}, over HTTPS; checked against: {checked})")
    return Provenance(Kind.OTHER, f"OpenFace 3.0-format weights from {location}, not known to be the official "
                                  f"trained ones (checked against: {checked})")


def _hashes(directory: Path, names: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for role in TEST_NETWORKS:
        path = directory / names.get(role, DEFAULT_FILES[role])
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        except OSError:
            continue
        out[role] = h.hexdigest()
    return out


def is_test_networks(sha256: Mapping[str, str]) -> bool:
    """Whether the networks hashed are the shared test networks: the multitask network's hash is theirs (it
    makes the AUs), and so is the landmark network's when it is part of the set (``--no-au45`` loads none)."""
    known = {role: sha256[role] for role in TEST_NETWORKS if sha256.get(role)}
    return "multitask" in known and all(known[role] == TEST_NETWORKS[role] for role in known)


def model_provenance(directory: Path, sha256: Mapping[str, str] | None = None) -> Provenance:
    """The provenance of the model set in ``directory``, from its ``manifest.toml``. ``sha256`` (role ->
    hash of the file in use, as the model set was hashed) avoids hashing again; without it the multitask
    and landmark files are hashed to recognise the shared test networks."""
    directory = Path(directory)
    try:
        manifest = tomllib.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        manifest = {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return Provenance(Kind.UNKNOWN, f"unknown: {directory / MANIFEST} cannot be read ({exc})")
    names = {**DEFAULT_FILES, **{k: str(v) for k, v in manifest.get("models", {}).items() if k in DEFAULT_FILES}}
    hashes = dict(sha256) if sha256 is not None else _hashes(directory, names)
    if is_test_networks(hashes):
        return Provenance(Kind.TEST, "the shared test networks (real RetinaFace, random-weight MTL and STAR): "
                                     "what these networks compute, not AU estimates")
    source = manifest.get("source")
    if not isinstance(source, dict) or "location" not in source:
        return Provenance(Kind.UNKNOWN, f"unknown: no record of where these models came from (no [source] in "
                                        f"{directory / MANIFEST}); not known to be the official trained weights")
    location, revision = str(source["location"]), source.get("revision")
    verified = {role: str(entry.get("verified", "not recorded")) for role, entry in source.items()
                if role in DEFAULT_FILES and isinstance(entry, dict)}
    return describe_source(location, str(revision) if revision else None, verified)
