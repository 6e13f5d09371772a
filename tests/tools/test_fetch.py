"""``aud models fetch`` end to end against a real HTTP server on 127.0.0.1 (random-weight checkpoints in the
official formats), and its refusals: a SHA256SUMS mismatch, a code-running pickle, no licence, offline."""

from __future__ import annotations

import csv
import hashlib
import pickle
import sys
import tomllib
from pathlib import Path

import pytest

from daemon.tools import fetch
from daemon.tools.checkpoints import OFFICIAL
from tests import tinymodels
from tests.tools.checkpoint_files import served
from tests.tools.conftest import aud, isolated_env, sha256


def tree_digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_fetch_resumes_a_dropped_download_and_writes_a_model_set(fetched):
    assert fetched.result.returncode == 0, fetched.result.stderr
    mtl_requests = [r for name, r in fetched.requests if name == "MTL_backbone.pth"]
    assert len(mtl_requests) == 2 and mtl_requests[0] is None  # dropped half-way, then asked again…
    assert mtl_requests[1] and mtl_requests[1].startswith("bytes=") and mtl_requests[1] != "bytes=0-"  # …resumed
    for spec in OFFICIAL:  # every cached file is complete and what the server holds
        assert (fetched.cache / spec.filename).read_bytes() == fetched.files[spec.filename]
        assert not (fetched.cache / f"{spec.filename}.part").exists()
    assert sorted(p.name for p in fetched.models.iterdir()) == ["manifest.toml", "mtl.onnx", "retinaface.onnx",
                                                                 "star.onnx"]
    assert not [p for p in fetched.models.parent.iterdir() if p.name.startswith(".models")]  # no leftovers


def test_manifest_records_the_output_and_source_hashes(fetched):
    manifest = tomllib.loads((fetched.models / "manifest.toml").read_text())
    for role, name in (("detector", "retinaface.onnx"), ("multitask", "mtl.onnx"), ("landmarks", "star.onnx")):
        assert manifest["models"][role] == name
        assert manifest["sha256"][role] == sha256((fetched.models / name).read_bytes())
    assert manifest["source"]["location"].startswith("http://127.0.0.1:")
    for spec in OFFICIAL:
        entry = manifest["source"][spec.role.value]
        assert entry["file"] == spec.filename
        assert entry["sha256"] == sha256(fetched.files[spec.filename])
        assert entry["size"] == len(fetched.files[spec.filename])
    assert manifest["export"]["opset"] == 17


def test_a_mirror_is_not_called_official_and_says_what_was_verified(fetched):
    """Issue 26 item 3: any mirror's weights were "trained OpenFace 3.0 models ready", the manifest said
    "from the official OpenFace 3.0 checkpoints"; this mirror serves no SHA256SUMS and random weights."""
    from daemon.core.provenance import Kind, model_provenance

    text = (fetched.models / "manifest.toml").read_text()
    assert "from the official" not in text and "not known to be the official trained ones" in text
    manifest = tomllib.loads(text)
    assert {manifest["source"][spec.role.value]["verified"] for spec in OFFICIAL} == {"nothing"}
    assert "trained OpenFace 3.0 models ready" not in fetched.result.stderr
    assert "not known to be the official trained ones (checked against: detector: nothing" in fetched.result.stderr
    provenance = model_provenance(fetched.models)
    assert provenance.kind is Kind.OTHER and fetched.result.stderr.count(provenance.text[:40]) == 1


def test_fetched_set_passes_check_and_extract_runs_on_it(fetched, synthetic_video, tmp_path):
    check = aud(["models", "check", "--models", str(fetched.models)], fetched.env)
    assert check.returncode == 0, check.stderr
    assert "ok: all three models have the expected signatures" in check.stdout
    video = synthetic_video(frames=4, width=96, height=64)
    out = tmp_path / "out.csv"
    # --faces best: the mirror's random-weight detector finds many "faces" in a frame, and the default
    # (primary: follow one person) measures every one of them (34 s for these 4 frames, 4 s with the best only)
    run = aud(["extract", str(video), "-o", str(out), "--models", str(fetched.models), "--workers", "1",
               "--faces", "best"], fetched.env)
    assert run.returncode == 0, run.stderr
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["frame"] for r in rows] == ["1", "2", "3", "4"]


def previous_set(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    models = tinymodels.write_set(tmp_path / "models")
    return models, tree_digest(models)


def test_sha256sums_mismatch_stops_the_fetch_and_keeps_the_previous_set(checkpoints, mirror_of, tmp_path):
    files = served(checkpoints)
    sums = {name: sha256(data) for name, data in files.items()}
    sums["MTL_backbone.pth"] = "0" * 64
    files["SHA256SUMS"] = "".join(f"{h}  {n}\n" for n, h in sums.items()).encode()
    mirror = mirror_of(files)
    models, before = previous_set(tmp_path)
    result = aud(["models", "fetch", "--family", "openface3", "--source", mirror.url, "--to", str(models),
                  "--accept-license", "--cache", str(tmp_path / "cache")], isolated_env(tmp_path))
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "MTL_backbone.pth" in message and "does not match SHA256SUMS" in message
    assert tree_digest(models) == before
    assert not (tmp_path / "cache" / "MTL_backbone.pth").exists()  # the bad file is not kept


class TouchMarker:
    """Unpickling this calls Path.touch(marker): what a hostile checkpoint could do with any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_code_running_pickle_is_refused_and_nothing_runs(checkpoints, mirror_of, tmp_path):
    import torch

    marker = tmp_path / "pwned"
    hostile = tmp_path / "Landmark_98.pkl"
    state = torch.load(checkpoints / "Landmark_98.pkl", weights_only=True)
    torch.save({**state, "payload": TouchMarker(marker)}, hostile)
    with pytest.raises(FileNotFoundError):  # the payload is live: plain pickle WOULD run it…
        pickle.loads(pickle.dumps(TouchMarker(tmp_path / "no-such-dir" / "x")))
    files = served(checkpoints)
    files["Landmark_98.pkl"] = hostile.read_bytes()
    mirror = mirror_of(files)
    models, before = previous_set(tmp_path)
    result = aud(["models", "fetch", "--family", "openface3", "--source", mirror.url, "--to", str(models),
                  "--accept-license", "--cache", str(tmp_path / "cache")], isolated_env(tmp_path))
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "Landmark_98.pkl" in message and "refused" in message and "pathlib" in message
    assert not marker.exists()  # …and aud's loading did not
    assert tree_digest(models) == before


def test_licence_must_be_accepted_before_anything_is_downloaded(checkpoints, mirror_of, tmp_path):
    mirror = mirror_of(served(checkpoints))
    env = isolated_env(tmp_path)
    result = aud(["models", "fetch", "--family", "openface3", "--source", mirror.url, "--to", str(tmp_path / "models"),
                  "--cache", str(tmp_path / "cache")], env)
    assert result.returncode == 2
    assert "NONCOMMERCIAL RESEARCH USE ONLY" in result.stderr and "--accept-license" in result.stderr
    assert mirror.requests == []
    assert not (tmp_path / "models").exists()


def test_a_target_holding_other_files_is_refused_before_anything_is_downloaded(checkpoints, mirror_of, tmp_path):
    """`--to` a folder holding other files: the export would refuse to replace it, so the fetch refuses
    first (it used to download the checkpoints and refuse after)."""
    mirror = mirror_of(served(checkpoints))
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter1.docx").write_text("mine")
    result = aud(["models", "fetch", "--family", "openface3", "--source", mirror.url, "--to", str(target),
                  "--accept-license", "--cache", str(tmp_path / "checkpoints")], isolated_env(tmp_path))
    assert result.returncode == 2
    assert "holds other files (chapter1.docx)" in " ".join(result.stderr.split())
    assert mirror.requests == []
    assert not (tmp_path / "checkpoints").exists()
    assert [p.name for p in target.iterdir()] == ["chapter1.docx"]


def test_the_missing_pytorch_hint_is_the_readmes_install(monkeypatch):
    """The hint names the install the README uses (an editable install of this checkout's `export` extra,
    and on Linux the CPU-only PyTorch wheel), not a distribution that is not on PyPI."""
    from daemon.core import models
    from daemon.core.provenance import EXPORT_INSTALL
    from daemon.tools import commands
    from tests.conftest import PROJECT

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    hint = commands._torch_missing()
    assert hint is not None and EXPORT_INSTALL in hint and "au-daemon[" not in hint
    assert EXPORT_INSTALL in models.fetch_hint(Path("/m"))
    readme = (PROJECT / "README.md").read_text()
    section = readme[readme.index("## Trained models"):]
    section = section[:section.index("\n## ", 1)]
    assert ".venv/bin/pip install -e '.[export]'" in section
    assert ".venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu" in section


def test_offline_error_names_the_url_and_the_cause(tmp_path):
    url = "http://127.0.0.1:9/Alignment_RetinaFace.pth"  # the discard port: nothing listens
    with pytest.raises(fetch.FetchError) as exc:
        fetch.download(url, tmp_path / "x.pth", lambda *a: None, retries=1, backoff=0.01)
    assert url in str(exc.value) and "refused" in str(exc.value).lower()
    assert "after 2 attempts" in str(exc.value)


def test_local_folder_source_with_sha256sums(checkpoints, tmp_path):
    folder = tmp_path / "lab mirror"
    folder.mkdir()
    files = served(checkpoints)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "SHA256SUMS").write_text("".join(f"{sha256(d)} *{n}\n" for n, d in files.items()))
    said: list[str] = []
    got = fetch.fetch_checkpoints(fetch.source_url(str(folder)), tmp_path / "cache", lambda *a: None,
                                  said.append)
    assert [d.sha256 for d in got] == [sha256(files[s.filename]) for s in OFFICIAL]
    assert any("SHA256SUMS (3 entries)" in s for s in said)
    assert any("not the official file" in s for s in said)  # random RetinaFace ≠ the known official hash


def test_official_source_is_the_pinned_revision():
    assert fetch.source_url(None).endswith(f"/resolve/{fetch.REVISION}/")
    assert fetch.REVISION == "3844412b54706ed0a930b99589508ed3c101f39e"
