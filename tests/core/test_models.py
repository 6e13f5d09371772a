"""The model set: finding, hashing and checking the three ONNX files; ``aud models check``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from daemon import cli
from daemon.core import models
from daemon.core.models import ModelError, load_model_set
from tests import tinymodels
from tests.conftest import require_shared


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- loading ----------------------------------------------------------------------------------------------

def test_load_tiny_set(tiny_models):
    ms = load_model_set(tiny_models)
    assert ms.directory == tiny_models
    assert set(ms.files) == {"detector", "multitask", "landmarks"}
    for role, name in models.DEFAULT_FILES.items():
        f = ms.files[role]
        assert f.role == role
        assert f.path == tiny_models / name
        assert f.size == (tiny_models / name).stat().st_size
        assert f.sha256 == sha(tiny_models / name)
        assert ms.path(role) == f.path
        assert ms.input_name(role) == "input"
    assert ms.outputs.detector == ("loc", "conf", "landms")
    assert ms.outputs.multitask == ("emotion", "gaze", "au")
    assert ms.outputs.landmarks == "landmarks"
    sig = ms.files["multitask"].signature
    assert sig.inputs[0].shape == (None, 3, 224, 224) or sig.inputs[0].shape[1:] == (3, 224, 224)
    assert str(ms.files["landmarks"].signature.outputs[0]).endswith("[?,98,2]") or \
        str(ms.files["landmarks"].signature.outputs[0]).endswith(",98,2]")


def test_names_are_read_from_the_graph(tmp_path):
    d = tinymodels.write_set(
        tmp_path,
        det=tinymodels.detector(input_name="image", output_names=("out0", "out1", "out2"), output_order=(2, 0, 1)),
        mtl=tinymodels.multitask(input_name="x", output_names=("a", "b", "c")),
        star=tinymodels.landmarks(input_name="img", output_name="pts"),
    )
    ms = load_model_set(d)
    assert ms.outputs.detector == ("out0", "out1", "out2")  # boxes, scores, landmarks by last dimension
    assert [o.name for o in ms.files["detector"].signature.outputs] == ["out2", "out0", "out1"]
    assert ms.outputs.multitask == ("a", "b", "c")  # emotion, gaze, au by position
    assert ms.outputs.landmarks == "pts"
    assert (ms.input_name("detector"), ms.input_name("multitask"), ms.input_name("landmarks")) == \
        ("image", "x", "img")


def test_multitask_named_outputs_in_another_order(tmp_path):
    d = tinymodels.write_set(tmp_path, mtl=tinymodels.multitask(
        output_names=("emotion_logits", "gaze_angles", "au_out"), output_order=(2, 1, 0)))
    ms = load_model_set(d)
    assert ms.outputs.multitask == ("emotion_logits", "gaze_angles", "au_out")


def test_multitask_named_emotion_and_gaze_au_is_the_rest(tmp_path):
    d = tinymodels.write_set(tmp_path, mtl=tinymodels.multitask(
        output_names=("emotion_logits", "gaze_angles", "action_units"), output_order=(2, 1, 0)))
    ms = load_model_set(d)
    assert ms.outputs.multitask == ("emotion_logits", "gaze_angles", "action_units")


def test_multitask_unnamed_outputs_gaze_first(tmp_path):
    d = tinymodels.write_set(tmp_path, mtl=tinymodels.multitask(output_names=("o1", "o0", "o2"),
                                                                 output_order=(1, 0, 2)))
    ms = load_model_set(d)
    # outputs listed o0 [N,2], o1 [N,8], o2 [N,8]: gaze by its dimension, emotion then au in order
    assert ms.outputs.multitask == ("o1", "o0", "o2")


def test_subset_of_roles(tmp_path):
    d = tinymodels.write_set(tmp_path)
    (d / "star.onnx").unlink()
    ms = load_model_set(d, ("detector", "multitask"))
    assert set(ms.files) == {"detector", "multitask"} and ms.outputs.landmarks is None


# --- problems -------------------------------------------------------------------------------------------------

def test_missing_directory(tmp_path):
    with pytest.raises(ModelError, match="model directory not found") as exc:
        load_model_set(tmp_path / "nowhere")
    assert "nowhere" in str(exc.value)


@pytest.mark.parametrize("name", ["retinaface.onnx", "mtl.onnx", "star.onnx"])
def test_missing_file_is_named(tiny_models, name):
    (tiny_models / name).unlink()
    with pytest.raises(ModelError, match="file not found") as exc:
        load_model_set(tiny_models)
    assert str(tiny_models / name) in str(exc.value)


def test_wrong_landmark_signature(tmp_path):
    d = tinymodels.write_set(tmp_path, star=tinymodels.landmarks(points=68))
    with pytest.raises(ModelError, match=r"\[N,98,2\]") as exc:
        load_model_set(d)
    assert "star.onnx" in str(exc.value) and "68" in str(exc.value)


def test_wrong_multitask_input_size(tmp_path):
    d = tinymodels.write_set(tmp_path, mtl=tinymodels.multitask(size=112))
    with pytest.raises(ModelError, match="224x224") as exc:
        load_model_set(d)
    assert "mtl.onnx" in str(exc.value)


def test_detector_without_landmark_output(tmp_path):
    model = tinymodels.detector()
    del model.graph.output[2]
    d = tinymodels.write_set(tmp_path, det=model)
    with pytest.raises(ModelError, match="last dimension") as exc:
        load_model_set(d)
    assert "retinaface.onnx" in str(exc.value)


def test_multitask_with_two_outputs(tmp_path):
    model = tinymodels.multitask()
    del model.graph.output[1]
    d = tinymodels.write_set(tmp_path, mtl=model)
    with pytest.raises(ModelError, match="three outputs"):
        load_model_set(d)


def test_swapped_models(tmp_path):
    d = tinymodels.write_set(tmp_path, mtl=tinymodels.landmarks(size=224))
    with pytest.raises(ModelError, match="multitask"):
        load_model_set(d)


def test_not_an_onnx_file(tiny_models):
    (tiny_models / "mtl.onnx").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ModelError, match="not a readable ONNX model") as exc:
        load_model_set(tiny_models)
    assert "mtl.onnx" in str(exc.value)


def test_manifest_names_other_files_and_pins_hashes(tmp_path):
    d = tinymodels.write_set(tmp_path, names=("det.onnx", "multi.onnx", "lm.onnx"))
    (d / "manifest.toml").write_text(
        '[models]\ndetector = "det.onnx"\nmultitask = "multi.onnx"\nlandmarks = "lm.onnx"\n'
        f'[sha256]\ndetector = "{sha(d / "det.onnx").upper()}"\n'
    )
    ms = load_model_set(d)
    assert ms.path("detector") == d / "det.onnx"
    assert ms.path("multitask") == d / "multi.onnx"
    assert ms.path("landmarks") == d / "lm.onnx"


def test_manifest_hash_mismatch(tmp_path):
    d = tinymodels.write_set(tmp_path)
    (d / "manifest.toml").write_text(f'[sha256]\nmultitask = "{"0" * 64}"\n')
    with pytest.raises(ModelError, match="does not match") as exc:
        load_model_set(d)
    assert "mtl.onnx" in str(exc.value) and sha(d / "mtl.onnx") in str(exc.value)


def test_manifest_unreadable(tmp_path):
    d = tinymodels.write_set(tmp_path)
    (d / "manifest.toml").write_text("[models\ndetector = ")
    with pytest.raises(ModelError, match="manifest"):
        load_model_set(d)


# --- a worker's set: each file loaded once, as the session that runs it ---------------------------------

def counting_opener(opened: list):
    def open_session(path: Path) -> ort.InferenceSession:
        opened.append(path.name)
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return open_session


def test_open_model_set_loads_each_file_once_and_checks_it_like_load_model_set(tmp_path):
    d = tinymodels.write_set(
        tmp_path, det=tinymodels.detector(input_name="image", output_names=("out0", "out1", "out2"),
                                          output_order=(2, 0, 1)))
    opened: list[str] = []
    ms, sessions = models.open_model_set(d, models.ROLES, counting_opener(opened))
    assert opened == ["retinaface.onnx", "mtl.onnx", "star.onnx"]  # one load each, nothing else
    assert set(sessions) == set(models.ROLES)
    hashed = load_model_set(d)
    assert ms.outputs == hashed.outputs and ms.input_name("detector") == "image"
    for role in models.ROLES:
        assert ms.files[role].signature == hashed.files[role].signature
        assert ms.files[role].size == hashed.files[role].size
        assert ms.files[role].sha256 is None  # the parent hashes; workers do not hash again
        assert sessions[role].get_inputs()[0].name == ms.input_name(role)


@pytest.mark.parametrize("damage,match", [
    (lambda d: (d / "star.onnx").unlink(), "star.onnx \\(landmarks\\): file not found"),
    (lambda d: (d / "mtl.onnx").write_bytes(b"\0" * 4000), "mtl.onnx: not a readable ONNX model"),
    (lambda d: tinymodels.write_set(d, mtl=tinymodels.landmarks(size=224)), "multitask"),
])
def test_open_model_set_errors_name_the_file(tmp_path, damage, match):
    d = tinymodels.write_set(tmp_path)
    damage(d)
    with pytest.raises(ModelError, match=match):
        models.open_model_set(d, models.ROLES, counting_opener([]))


# --- a worker's files against the set the parent hashed (issue 22 item 2) ---------------------------

def counting_hashes(monkeypatch) -> list[Path]:
    """Record every file ``sha256_of`` reads (the check hashes only files whose stamp moved)."""
    hashed: list[Path] = []
    real = models.sha256_of

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        hashed.append(Path(path))
        return real(path, chunk)

    monkeypatch.setattr(models, "sha256_of", counting)
    return hashed


def test_a_hashed_set_records_each_files_stamp(tiny_models):
    reference = load_model_set(tiny_models, signatures=False)
    for f in reference.files.values():
        st = f.path.stat()
        assert f.stamp == models.FileStamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        assert f.size == st.st_size


def test_unchanged_files_pass_on_their_stamps_without_hashing(tiny_models, monkeypatch):
    reference = load_model_set(tiny_models, signatures=False)
    hashed = counting_hashes(monkeypatch)
    seen = models.unchanged(reference)
    assert hashed == []  # same device, inode, size and mtime: not read again
    assert seen == {role: f.stamp for role, f in reference.files.items()}


def test_the_same_bytes_written_anew_are_hashed_and_accepted(tiny_models, monkeypatch):
    reference = load_model_set(tiny_models, signatures=False)
    mtl = tiny_models / "mtl.onnx"
    data = mtl.read_bytes()
    mtl.unlink()
    mtl.write_bytes(data)  # another inode (and mtime): the stamp moved, the content did not
    os.utime(mtl, ns=(1, 1))
    hashed = counting_hashes(monkeypatch)
    seen = models.unchanged(reference)
    assert hashed == [mtl] and seen["multitask"] != reference.files["multitask"].stamp


def test_a_file_swapped_for_other_weights_of_the_same_signature_is_refused(tiny_models):
    reference = load_model_set(tiny_models, signatures=False)
    onnx.save(tinymodels.multitask(seed=7), str(tiny_models / "mtl.onnx"))  # a valid model, same signature
    models.read_signature(tiny_models / "mtl.onnx")  # it loads: only the hash tells it apart
    with pytest.raises(models.ModelsChanged, match=r"mtl\.onnx \(multitask\) changed on disk since aud "
                                                    r"started \(its sha256 is [0-9a-f]{64} now\).*restart aud"):
        models.unchanged(reference)


def test_a_missing_file_is_refused_naming_it(tiny_models):
    reference = load_model_set(tiny_models, signatures=False)
    (tiny_models / "star.onnx").unlink()
    with pytest.raises(models.ModelsChanged, match=r"star\.onnx \(landmarks\).*cannot read it"):
        models.unchanged(reference)


def test_check_loaded_refuses_a_file_replaced_while_it_was_loaded(tiny_models):
    reference = load_model_set(tiny_models, signatures=False)
    seen = models.unchanged(reference)
    loaded, _ = models.open_model_set(tiny_models, models.ROLES, counting_opener([]))
    models.check_loaded(reference, loaded, seen)  # nothing moved: accepted
    onnx.save(tinymodels.detector(), str(tiny_models / "retinaface.onnx"))  # rewritten: its stamp moves
    os.utime(tiny_models / "retinaface.onnx", ns=(2, 2))
    with pytest.raises(models.ModelsChanged, match=r"retinaface\.onnx.*replaced while it was being loaded"):
        models.check_loaded(reference, loaded, seen)


def test_check_loaded_refuses_a_set_whose_manifest_names_other_files(tmp_path):
    reference = load_model_set(tinymodels.write_set(tmp_path / "a"), signatures=False)
    other = tinymodels.write_set(tmp_path / "b")
    loaded, _ = models.open_model_set(other, models.ROLES, counting_opener([]))
    with pytest.raises(models.ModelsChanged, match="not the file aud hashed"):
        models.check_loaded(reference, loaded, models.unchanged(reference))


def test_prepare_process_refuses_files_that_are_not_the_reference(tiny_models):
    from daemon.core.pipeline import PipelineOptions
    from daemon.core.worker import prepare_process

    reference = load_model_set(tiny_models, signatures=False)
    assert prepare_process(PipelineOptions(tiny_models, provider="cpu"), reference).models.files
    onnx.save(tinymodels.landmarks(seed=9), str(tiny_models / "star.onnx"))
    with pytest.raises(models.ModelsChanged, match=r"star\.onnx"):
        prepare_process(PipelineOptions(tiny_models, provider="cpu"), reference)


def test_tensor_spec_str():
    assert str(models.TensorSpec("input", (None, 3, "H", 224))) == "input[?,3,H,224]"


def test_shared_openface_models_have_the_expected_signatures():
    shared = require_shared("models/openface3/retinaface.onnx", "models/openface3/mtl.onnx",
                            "models/openface3/star.onnx")
    ms = load_model_set(shared / "models" / "openface3")
    assert ms.outputs.detector == ("loc", "conf", "landms")
    assert ms.outputs.multitask == ("emotion", "gaze", "au")
    assert ms.outputs.landmarks == "landmarks"


# --- aud models check -------------------------------------------------------------------------------------------

def test_cli_models_check_prints_every_role(tiny_models, capsys, isolated_config, monkeypatch):
    monkeypatch.setattr(cli.out, "width", 400)
    assert cli.main(["models", "check", "--models", str(tiny_models), "--provider", "cpu"]) == 0
    text = capsys.readouterr().out
    for role, name in models.DEFAULT_FILES.items():
        path = tiny_models / name
        assert f"{role}: {path}" in text
        assert f"size: {path.stat().st_size} bytes" in text
        assert sha(path) in text
    assert "inputs: input[N,3,H,W]" in text
    assert "outputs: loc[N,P,4], conf[N,P,2], landms[N,P,10]" in text
    assert "outputs: landmarks[N,98,2]" in text
    assert text.count("provider: CPUExecutionProvider") == 3
    assert "ok:" in text


def test_cli_models_check_auto_provider(tiny_models, capsys, isolated_config, monkeypatch):
    monkeypatch.setattr(cli.out, "width", 400)
    assert cli.main(["models", "check", "--models", str(tiny_models)]) == 0
    assert text_count_providers(capsys.readouterr().out) == 3


def text_count_providers(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip().startswith("provider: ")
               and line.strip().endswith("ExecutionProvider"))


def test_cli_models_check_output_is_not_wrapped_when_piped(tiny_models, capsys, isolated_config, tmp_path):
    # long paths (as on a real machine) must stay on one line so the output can be grepped
    deep = tmp_path / ("a-rather-long-directory-name-" * 3) / "models"
    tinymodels.write_set(deep)
    assert cli.main(["models", "check", "--models", str(deep), "--provider", "cpu"]) == 0
    text = capsys.readouterr().out
    assert str(deep / "retinaface.onnx") in text
    assert sha(deep / "star.onnx") in text


@pytest.mark.parametrize("broken", ["mtl.onnx", "star.onnx"])
def test_cli_models_check_broken_set(tiny_models, capsys, isolated_config, monkeypatch, broken):
    monkeypatch.setattr(cli.err, "width", 400)
    (tiny_models / broken).unlink()
    assert cli.main(["models", "check", "--models", str(tiny_models)]) != 0
    captured = capsys.readouterr()
    assert str(tiny_models / broken) in captured.err
    assert "ok:" not in captured.out


def test_cli_models_check_unknown_provider(tiny_models, capsys, isolated_config, monkeypatch):
    monkeypatch.setattr(cli.err, "width", 400)
    assert cli.main(["models", "check", "--models", str(tiny_models), "--provider", "nosuch"]) == 2
    assert "CPUExecutionProvider" in capsys.readouterr().err


def test_model_files_are_valid_onnx(tiny_models):
    for name in models.DEFAULT_FILES.values():
        onnx.checker.check_model(str(tiny_models / name))
