"""``aud models fetch`` for the OpenFace 2.2.0 AU files, end to end against mirrors laid out at OpenFace's
repository paths — a local folder (``file://``) and a real HTTP server on 127.0.0.1 — holding STAND-IN files
made here (random bytes and small text files: the fetch neither reads nor needs the real models), and
``aud models check`` on what it installs. Never the official files."""

from __future__ import annotations

import hashlib
import importlib
import tomllib
from pathlib import Path

import numpy as np
import pytest

from daemon.tools import fetch_openface2, openface2_files, openface2_set
from daemon.tools.fetch import FetchError
from daemon.tools.openface2_files import (
    AU_LIST_ENTRIES,
    AU_LIST_PATH,
    EXPECTED_LIST_TEXT,
    EXPECTED_PATHS,
    OPENFACE2_DIR,
    PDM_PATH,
    TRIANGULATION_PATH,
)
from tests import tinymodels
from tests.tools.conftest import aud, isolated_env, sha256


def standins(seed: int = 5) -> dict[str, bytes]:
    """Every file of the set, by repository path: the real AU list (it is checked), a PDM-like and a
    triangulation-like text of random numbers, random bytes for each model."""
    rng = np.random.default_rng(seed)
    files = {AU_LIST_PATH: EXPECTED_LIST_TEXT.encode()}
    files[PDM_PATH] = "\n".join(" ".join(f"{v:.6f}" for v in rng.normal(size=3)) for _ in range(204)).encode()
    files[TRIANGULATION_PATH] = "\n".join(" ".join(str(v) for v in rng.integers(0, 68, 3))
                                          for _ in range(40)).encode()
    for path in EXPECTED_PATHS:
        if path.endswith(".dat"):
            files[path] = rng.bytes(int(rng.integers(1500, 3000)))
    return files


def sums_file(files: dict[str, bytes]) -> bytes:
    return "".join(f"{sha256(data)}  {path}\n" for path, data in files.items()).encode()


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    return folder


def tree_digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def fetch_args(source: str, models: Path, tmp_path: Path, *more: str) -> list[str]:
    return ["models", "fetch", "--family", "openface2", "--openface2-source", source, "--to", str(models),
            "--cache", str(tmp_path / "cache"), *more]


def test_file_mirror_installs_the_files_beside_the_onnx_set_and_check_lists_them(tmp_path):
    files = standins()
    mirror = write_folder(tmp_path / "lab mirror", {**files, "SHA256SUMS": sums_file(files)})
    models = tinymodels.write_set(tmp_path / "models")
    star = sha256((models / "star.onnx").read_bytes())
    (models / "manifest.toml").write_text(f'# the lab\'s note\n[sha256]\nlandmarks = "{star}"\n')
    onnx_before = {p.name: sha256(p.read_bytes()) for p in models.glob("*.onnx")}
    env = isolated_env(tmp_path)

    result = aud(fetch_args(mirror.as_uri(), models, tmp_path, "--accept-license"), env)
    assert result.returncode == 0, result.stderr
    for path, data in files.items():  # every file at its repository path, byte for byte
        assert (models / OPENFACE2_DIR / path).read_bytes() == data
    assert {p.name: sha256(p.read_bytes()) for p in models.glob("*.onnx")} == onnx_before  # the ONNX set stays
    text = (models / "manifest.toml").read_text()
    manifest = tomllib.loads(text)
    assert "# the lab's note" in text and manifest["sha256"]["landmarks"] == sha256((models / "star.onnx")
                                                                                    .read_bytes())
    record = manifest["openface2"]
    assert record["source"] == mirror.as_uri() + "/" and "ref" not in record
    assert set(record["files"]) == set(EXPECTED_PATHS)
    for path, data in files.items():
        assert record["files"][path] == {"sha256": sha256(data), "size": len(data), "checked": "SHA256SUMS"}
    assert not [p for p in models.parent.iterdir() if p.name.startswith(".models")]  # no staging left

    check = aud(["models", "check", "--models", str(models)], env)
    assert check.returncode == 0, check.stderr
    out = " ".join(check.stdout.split())
    for path, data in files.items():
        assert f"{path} {len(data)} bytes sha256: {sha256(data)}" in out
    assert "family openface3: complete" in out and "family openface2: complete" in out


def test_http_mirror_resumes_a_dropped_file_and_reuses_its_cache(tmp_path, mirror_of):
    files = standins()
    mirror = mirror_of({**files, "SHA256SUMS": sums_file(files)}, drop_once={PDM_PATH})
    models = tmp_path / "models"
    env = isolated_env(tmp_path)
    result = aud(fetch_args(mirror.url, models, tmp_path, "--accept-license"), env)
    assert result.returncode == 0, result.stderr
    pdm = [r for name, r in mirror.requests if name == PDM_PATH]
    assert pdm[0] is None and pdm[1].startswith("bytes=") and pdm[1] != "bytes=0-"  # dropped, then resumed
    assert tree_digest(models / OPENFACE2_DIR) == {path: sha256(data) for path, data in files.items()}

    mirror.requests.clear()  # a second fetch: the cache holds every file, only SHA256SUMS is asked for
    again = aud(fetch_args(mirror.url, models, tmp_path), env)  # the licence is remembered
    assert again.returncode == 0, again.stderr
    assert [name for name, _ in mirror.requests] == ["SHA256SUMS"]

    cached = tmp_path / "cache" / "openface2" / EXPECTED_PATHS[5]  # a cached copy that went bad…
    cached.write_bytes(b"x" + cached.read_bytes()[1:])
    mirror.requests.clear()
    third = aud(fetch_args(mirror.url, models, tmp_path), env)
    assert third.returncode == 0, third.stderr
    assert [name for name, _ in mirror.requests] == ["SHA256SUMS", EXPECTED_PATHS[5]]  # …is fetched again
    assert cached.read_bytes() == files[EXPECTED_PATHS[5]]


def test_a_changed_byte_is_refused_with_the_file_named_and_the_previous_set_kept(tmp_path, mirror_of):
    files = standins()
    env = isolated_env(tmp_path)
    models = tinymodels.write_set(tmp_path / "models")
    good = write_folder(tmp_path / "good", {**files, "SHA256SUMS": sums_file(files)})
    assert aud(fetch_args(good.as_uri(), models, tmp_path, "--accept-license"), env).returncode == 0
    before = tree_digest(models)

    newer = standins(seed=6)  # a new release of the files, one of which changed in transit
    victim = EXPECTED_PATHS[20]
    served = {**newer, "SHA256SUMS": sums_file(newer)}
    served[victim] = bytes([served[victim][0] ^ 1]) + served[victim][1:]
    mirror = mirror_of(served)
    result = aud(fetch_args(mirror.url, models, tmp_path), env)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert victim in message and "does not match the SHA256SUMS hash" in message
    assert tree_digest(models) == before  # the installed set (ONNX files, openface2/, manifest) as it was
    assert not (tmp_path / "cache" / "openface2" / victim).exists()  # the bad download is not kept


def test_licence_must_be_accepted_before_anything_is_downloaded(tmp_path, mirror_of):
    files = standins()
    mirror = mirror_of({**files, "SHA256SUMS": sums_file(files)})
    env = isolated_env(tmp_path)
    models = tmp_path / "models"
    result = aud(fetch_args(mirror.url, models, tmp_path), env)
    assert result.returncode == 2
    assert "NON-PROFIT ORGANIZATION NONCOMMERCIAL RESEARCH USE ONLY" in result.stderr
    assert "OpenFace-license.txt" in result.stderr and "--accept-license" in result.stderr
    assert mirror.requests == [] and not models.exists()


def test_default_family_asks_for_both_licences_before_any_download(tmp_path, mirror_of):
    files = standins()
    mirror = mirror_of({**files, "SHA256SUMS": sums_file(files)})
    env = isolated_env(tmp_path)
    result = aud(["models", "fetch", "--openface2-source", mirror.url, "--source", mirror.url, "--to",
                  str(tmp_path / "models"), "--cache", str(tmp_path / "cache")], env)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "OpenFace 3.0 Software License Agreement" in message  # the first licence, then the stop
    assert "the OpenFace 3.0 licence (above) must be accepted" in message
    assert mirror.requests == [] and not (tmp_path / "models").exists()


def test_offline_errors_name_the_url_the_cause_and_what_to_do(tmp_path):
    env = isolated_env(tmp_path)
    source = "http://127.0.0.1:9/"  # the discard port: nothing listens
    result = aud(fetch_args(source, tmp_path / "models", tmp_path, "--accept-license"), env)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert f"{source}SHA256SUMS" in message and "refused" in message.lower()
    assert "--openface2-source" in message and not (tmp_path / "models").exists()

    url = source + PDM_PATH  # a file's download, after its retries
    with pytest.raises(FetchError) as exc:
        fetch_openface2.bounded_download(url, tmp_path / "c" / "pdm.txt", PDM_PATH, 1 << 20,
                                         fetch_openface2.Deadline(60), lambda *a: None, retries=1, backoff=0.01)
    text = str(exc.value)
    assert url in text and "refused" in text.lower() and "after 2 attempts" in text
    assert "--openface2-source" in text


@pytest.fixture
def pinned_to(monkeypatch):
    """Make ``files`` the pinned official set (sizes and hashes), as PINNED is for the real files."""
    def pin(files: dict[str, bytes]) -> None:
        table = {path: (len(data), sha256(data)) for path, data in files.items()}
        monkeypatch.setattr(openface2_files, "PINNED", table)
        monkeypatch.setattr(fetch_openface2, "PINNED", table)
    return pin


def test_pinned_hashes_hold_an_http_mirror_without_sha256sums(tmp_path, mirror_of, pinned_to):
    files = standins()
    pinned_to(files)
    mirror = mirror_of(files)  # no SHA256SUMS
    said: list[str] = []
    base = fetch_openface2.source_url(mirror.url)
    got = fetch_openface2.fetch_openface2(base, tmp_path / "cache", lambda *a: None, said.append)
    assert {f.path: (f.sha256, f.how) for f in got} == {p: (sha256(d), "pinned") for p, d in files.items()}
    assert ("SHA256SUMS", None) in mirror.requests  # asked for, not served: the pinned table governs
    models = tmp_path / "models"
    openface2_set.install(models, {f.path: (f.local, f.how) for f in got}, base, False, said.append)
    status = openface2_set.inspect(models)
    assert status.state is openface2_set.State.COMPLETE, status.problems

    other = dict(files)  # the same mirror, one file not the pinned one
    other[PDM_PATH] = files[PDM_PATH][:-1] + b"9"
    refused = mirror_of(other)
    with pytest.raises(FetchError) as exc:
        fetch_openface2.fetch_openface2(fetch_openface2.source_url(refused.url), tmp_path / "cache2",
                                        lambda *a: None, said.append)
    assert PDM_PATH in str(exc.value) and "does not match the pinned hash" in str(exc.value)


def test_a_file_larger_than_its_pinned_size_is_refused_before_it_is_read(tmp_path, mirror_of, pinned_to):
    files = standins()
    pinned_to(files)
    big = dict(files)
    big[TRIANGULATION_PATH] = files[TRIANGULATION_PATH] + b"\n" * 100_000  # announced, never read whole
    mirror = mirror_of(big)
    with pytest.raises(fetch_openface2.TooLarge) as exc:
        fetch_openface2.fetch_openface2(fetch_openface2.source_url(mirror.url), tmp_path / "cache",
                                        lambda *a: None, lambda s: None)
    assert TRIANGULATION_PATH in str(exc.value) and f"at most {len(files[TRIANGULATION_PATH])}" in str(exc.value)
    cached = tmp_path / "cache" / TRIANGULATION_PATH
    assert not cached.exists() and not cached.with_name(cached.name + ".part").exists()


def test_a_mirror_must_vouch_for_the_files_without_a_pinned_hash(tmp_path, mirror_of):
    files = standins()
    mirror = mirror_of(files)  # no SHA256SUMS, and AU_all_best.txt / svm_combined have no pinned hash
    with pytest.raises(FetchError) as exc:
        fetch_openface2.fetch_openface2(fetch_openface2.source_url(mirror.url), tmp_path / "cache",
                                        lambda *a: None, lambda s: None)
    assert "must serve a SHA256SUMS" in str(exc.value) and AU_LIST_PATH in str(exc.value)
    assert [name for name, _ in mirror.requests] == ["SHA256SUMS"]  # nothing else was downloaded


def test_sha256sums_must_list_every_file_and_stay_small(tmp_path, mirror_of):
    files = standins()
    partial = {p: d for p, d in files.items() if p != EXPECTED_PATHS[-1]}
    mirror = mirror_of({**files, "SHA256SUMS": sums_file(partial)})
    with pytest.raises(FetchError) as exc:
        fetch_openface2.fetch_openface2(fetch_openface2.source_url(mirror.url), tmp_path / "cache",
                                        lambda *a: None, lambda s: None)
    assert "does not list 1 of the OpenFace 2.2 files" in str(exc.value) and EXPECTED_PATHS[-1] in str(exc.value)

    padded = sums_file(files) + b"# padding\n" * 7000  # over SUMS_CAP (64 KiB)
    huge = mirror_of({**files, "SHA256SUMS": padded})
    with pytest.raises(FetchError) as exc:
        fetch_openface2.read_sums(fetch_openface2.source_url(huge.url))
    assert "larger than 65536 bytes" in str(exc.value)


def test_an_au_list_naming_a_file_outside_the_model_folders_is_refused_before_anything_else(tmp_path,
                                                                                           mirror_of):
    files = standins()
    files[AU_LIST_PATH] = files[AU_LIST_PATH].replace(b"svm_combined/AU_28_static.dat",
                                                      b"svm_combined/../../../../../etc/passwd")
    mirror = mirror_of({**files, "SHA256SUMS": sums_file(files)})
    with pytest.raises(FetchError) as exc:
        fetch_openface2.fetch_openface2(fetch_openface2.source_url(mirror.url), tmp_path / "cache",
                                        lambda *a: None, lambda s: None)
    assert "../../../../../etc/passwd" in str(exc.value) and "refused" in str(exc.value)
    assert [name for name, _ in mirror.requests] == ["SHA256SUMS", AU_LIST_PATH]
    assert not (tmp_path / "cache" / AU_LIST_PATH).exists()


def test_what_the_au_list_names_is_what_is_fetched_and_checked(tmp_path, mirror_of):
    """A lab's list with one model fewer and one of its own: fetched as listed, reported, and installed."""
    files = standins()
    mine = f"{openface2_files.AU_PREDICTORS}/svr_combined/AU_43_lab_intensity.dat"
    dropped = EXPECTED_PATHS[-1]
    text = files[AU_LIST_PATH].decode().replace(dropped.rsplit("AU_predictors/", 1)[1] + " AU45",
                                                "svr_combined/AU_43_lab_intensity.dat AU43,AU45")
    files[AU_LIST_PATH] = text.encode()
    files[mine] = b"\x01" * 900
    del files[dropped]
    mirror = mirror_of({**files, "SHA256SUMS": sums_file(files)})
    said: list[str] = []
    got = fetch_openface2.fetch_openface2(fetch_openface2.source_url(mirror.url), tmp_path / "cache",
                                          lambda *a: None, said.append)
    assert {f.path for f in got} == set(files) and mine in {f.path for f in got}
    assert any("lists other models than OpenFace 2.2.0's" in s for s in said)
    assert dropped not in [name for name, _ in mirror.requests]
    models = tmp_path / "models"
    openface2_set.install(models, {f.path: (f.local, f.how) for f in got}, mirror.url, False, said.append)
    status = openface2_set.inspect(models)
    assert status.state is openface2_set.State.COMPLETE and {f.path for f in status.files} == set(files)


def test_the_deadline_stops_the_fetch(tmp_path, mirror_of):
    files = standins()
    mirror = mirror_of({**files, "SHA256SUMS": sums_file(files)})
    with pytest.raises(FetchError) as exc:
        fetch_openface2.fetch_openface2(fetch_openface2.source_url(mirror.url), tmp_path / "cache",
                                        lambda *a: None, lambda s: None, deadline_seconds=-1)
    assert "took longer than" in str(exc.value)


def test_check_names_a_changed_installed_file(tmp_path):
    files = standins()
    mirror = write_folder(tmp_path / "mirror", {**files, "SHA256SUMS": sums_file(files)})
    models = tinymodels.write_set(tmp_path / "models")
    env = isolated_env(tmp_path)
    assert aud(fetch_args(mirror.as_uri(), models, tmp_path, "--accept-license"), env).returncode == 0
    changed = models / OPENFACE2_DIR / EXPECTED_PATHS[7]
    changed.write_bytes(changed.read_bytes() + b"\0")
    check = aud(["models", "check", "--models", str(models)], env)
    assert check.returncode == 2
    assert "family openface2: incomplete" in " ".join(check.stdout.split())
    assert EXPECTED_PATHS[7] in check.stderr and "sha256 does not match the manifest" in check.stderr


def test_export_keeps_the_openface2_files(tmp_path):
    """``aud models export`` replaces the model directory: the OpenFace 2.2 files and their record go along."""
    from daemon.tools import export

    files = standins()
    models = tinymodels.write_set(tmp_path / "models")
    folder = write_folder(tmp_path / "cache", files)
    openface2_set.install(models, {p: (folder / p, "SHA256SUMS") for p in files}, folder.as_uri(), False,
                          lambda s: None)
    export.check_replaceable(models)  # openface2/ is part of a model directory
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "manifest.toml").write_text('[models]\ndetector = "retinaface.onnx"\n')
    openface2_set.carry_over(models, staged)
    assert tree_digest(staged / OPENFACE2_DIR) == tree_digest(models / OPENFACE2_DIR)
    manifest = tomllib.loads((staged / "manifest.toml").read_text())
    assert manifest["models"]["detector"] == "retinaface.onnx"
    assert manifest["openface2"] == tomllib.loads((models / "manifest.toml").read_text())["openface2"]


def test_the_declared_set_agrees_with_the_au_models_module():
    """The files the OpenFace 2.2 computation reads (daemon/core/openface2au/files.py) are the files fetched."""
    try:
        files = importlib.import_module("daemon.core.openface2au.files")
    except ModuleNotFoundError:
        pytest.skip("daemon.core.openface2au is not in this tree yet")
    assert set(files.REQUIRED_PATHS) == set(openface2_files.FIXED_PATHS)
    assert files.AU_LIST_PATH == AU_LIST_PATH and files.PDM_PATH == PDM_PATH
    assert files.TRIANGULATION_PATH == TRIANGULATION_PATH and files.SUBDIR == OPENFACE2_DIR
    listed = files.listed_model_paths(EXPECTED_LIST_TEXT)
    assert tuple(listed) == EXPECTED_PATHS[len(openface2_files.FIXED_PATHS):]


def test_pinned_facts_and_official_source():
    assert openface2_files.OFFICIAL_URL == ("https://raw.githubusercontent.com/TadasBaltrusaitis/OpenFace/"
                                            "OpenFace_2.2.0/")
    assert fetch_openface2.source_url(None) == openface2_files.OFFICIAL_URL
    assert len(AU_LIST_ENTRIES) == 35 and len(EXPECTED_PATHS) == 38 == len(set(EXPECTED_PATHS))
    svr = [p for p in EXPECTED_PATHS if "/svr_combined/" in p]
    assert len(svr) == 17 and all(p in openface2_files.PINNED for p in svr)
    assert openface2_files.PINNED[PDM_PATH][0] == 69_023 and openface2_files.PINNED[TRIANGULATION_PATH][0] == 1_076


def test_default_fetch_runs_both_families_and_the_export_keeps_the_openface2_files(checkpoints, tmp_path,
                                                                                     mirror_of):
    """OpenFace 2.2 files installed first; then a plain ``aud models fetch`` (both families): the OpenFace 3.0
    export replaces the directory and carries them over, and the OpenFace 2.2 step, served a changed byte,
    is refused and leaves them as they were."""
    from tests.tools.checkpoint_files import served

    files = standins()
    env = isolated_env(tmp_path)
    models = tmp_path / "models"
    good = write_folder(tmp_path / "good", {**files, "SHA256SUMS": sums_file(files)})
    assert aud(fetch_args(good.as_uri(), models, tmp_path, "--accept-license"), env).returncode == 0
    installed = tree_digest(models / OPENFACE2_DIR)

    openface3 = mirror_of(served(checkpoints))
    bad = {**files, "SHA256SUMS": sums_file(files)}
    bad[PDM_PATH] = b"#" + files[PDM_PATH][1:]
    openface2 = mirror_of(bad)
    result = aud(["models", "fetch", "--source", openface3.url, "--openface2-source", openface2.url, "--to",
                  str(models), "--accept-license", "--cache", str(tmp_path / "cache2")], env)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "models ready in" in message and "not known to be the official" in message
    assert PDM_PATH in message and "does not match the SHA256SUMS hash" in message
    assert sorted(p.name for p in models.glob("*.onnx")) == ["mtl.onnx", "retinaface.onnx", "star.onnx"]
    assert tree_digest(models / OPENFACE2_DIR) == installed
    manifest = tomllib.loads((models / "manifest.toml").read_text())
    assert manifest["export"]["opset"] == 17 and set(manifest["openface2"]["files"]) == set(EXPECTED_PATHS)

    check = aud(["models", "check", "--models", str(models)], env)
    assert check.returncode == 0, check.stderr
    out = " ".join(check.stdout.split())
    assert "family openface3: complete" in out and "family openface2: complete" in out


def test_the_official_source_pins_what_is_known_and_records_the_rest(tmp_path, mirror_of, monkeypatch):
    """The official flow, served from 127.0.0.1: no SHA256SUMS asked for, the pinned files (here: the
    stand-ins' hashes, for the paths pinned today) held to their hashes, the others recorded with the tag."""
    files = standins()
    table = {p: (len(files[p]), sha256(files[p])) for p in openface2_files.PINNED}
    monkeypatch.setattr(openface2_files, "PINNED", table)
    monkeypatch.setattr(fetch_openface2, "PINNED", table)
    mirror = mirror_of(files)
    monkeypatch.setattr(fetch_openface2, "OFFICIAL_URL", mirror.url)
    said: list[str] = []
    got = fetch_openface2.fetch_openface2(mirror.url, tmp_path / "cache", lambda *a: None, said.append)
    assert "SHA256SUMS" not in [name for name, _ in mirror.requests]
    how = {f.path: f.how for f in got}
    assert {p for p, h in how.items() if h == "pinned"} == set(table)
    unpinned = {p for p, h in how.items() if h == "recorded"}
    assert unpinned == {AU_LIST_PATH} | {p for p in EXPECTED_PATHS if "/svm_combined/" in p}
    assert any(f"{len(unpinned)} files have no pinned hash" in s for s in said)
    models = tmp_path / "models"
    openface2_set.install(models, {f.path: (f.local, str(f.how)) for f in got}, mirror.url, True, said.append)
    record = tomllib.loads((models / "manifest.toml").read_text())["openface2"]
    assert record["ref"] == "OpenFace_2.2.0" and record["files"][AU_LIST_PATH]["checked"] == "recorded"
    assert record["files"][PDM_PATH] == {"sha256": sha256(files[PDM_PATH]), "size": len(files[PDM_PATH]),
                                         "checked": "pinned"}


def test_install_puts_back_an_interrupted_swap_and_refuses_an_incomplete_set(tmp_path):
    files = standins()
    folder = write_folder(tmp_path / "cache", files)
    models = tinymodels.write_set(tmp_path / "models")
    onnx = {p.name: sha256(p.read_bytes()) for p in models.glob("*.onnx")}
    models.rename(tmp_path / ".models.previous")  # a swap that died between its two renames
    incomplete = {p: (folder / p, "SHA256SUMS") for p in files if p != EXPECTED_PATHS[9]}
    with pytest.raises(openface2_set.InstallError, match=EXPECTED_PATHS[9].replace(".", r"\.")):
        openface2_set.install(models, incomplete, folder.as_uri(), False, lambda s: None)
    assert {p.name: sha256(p.read_bytes()) for p in models.glob("*.onnx")} == onnx  # put back, untouched
    assert not (models / OPENFACE2_DIR).exists() and not (tmp_path / ".models.previous").exists()
    openface2_set.install(models, {p: (folder / p, "SHA256SUMS") for p in files}, folder.as_uri(), False,
                          lambda s: None)
    assert {p.name: sha256(p.read_bytes()) for p in models.glob("*.onnx")} == onnx
    assert tree_digest(models / OPENFACE2_DIR) == {p: sha256(d) for p, d in files.items()}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".models")] == []


def test_check_says_which_files_are_the_pinned_official_ones(tmp_path, monkeypatch):
    files = standins()
    folder = write_folder(tmp_path / "cache", files)
    models = tmp_path / "models"
    openface2_set.install(models, {p: (folder / p, "SHA256SUMS") for p in files}, folder.as_uri(), False,
                          lambda s: None)
    assert not any(f.official for f in openface2_set.inspect(models).files)  # stand-ins are not official
    monkeypatch.setattr(openface2_set, "PINNED", {PDM_PATH: (len(files[PDM_PATH]), sha256(files[PDM_PATH]))})
    assert [f.path for f in openface2_set.inspect(models).files if f.official] == [PDM_PATH]
