"""Checkpoint loading: the official containers, strict keys, truncation, and the CLI's export errors."""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch", reason="the model tools need PyTorch (pip install -e '.[export]')")

from daemon.tools.checkpoints import CheckpointError, Role, build, load_network
from tests.tools.checkpoint_files import write_checkpoints
from tests.tools.conftest import aud, isolated_env


def test_detector_loads_plain_and_wrapped_with_module_prefix(tmp_path):
    plain = write_checkpoints(tmp_path / "plain", detector_wrapped=False,
                              roles=(Role.DETECTOR,)) / "Alignment_RetinaFace.pth"
    wrapped = write_checkpoints(tmp_path / "wrapped", detector_wrapped=True,
                                roles=(Role.DETECTOR,)) / "Alignment_RetinaFace.pth"
    assert "state_dict" in torch.load(wrapped, weights_only=True)
    a, b = load_network(Role.DETECTOR, plain), load_network(Role.DETECTOR, wrapped)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_renamed_key_is_refused_naming_it(tmp_path):
    state = build(Role.DETECTOR).state_dict()
    state["body.stage1.0.0.weights"] = state.pop("body.stage1.0.0.weight")
    path = tmp_path / "Alignment_RetinaFace.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as exc:
        load_network(Role.DETECTOR, path)
    message = str(exc.value)
    assert "missing key(s) 'body.stage1.0.0.weight'" in message
    assert "unexpected key(s) 'body.stage1.0.0.weights'" in message and str(path) in message


def test_wrong_shape_is_refused_naming_the_key(tmp_path):
    state = build(Role.DETECTOR).state_dict()
    state["ClassHead.0.conv1x1.bias"] = torch.zeros(6)
    path = tmp_path / "Alignment_RetinaFace.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="ClassHead.0.conv1x1.bias"):
        load_network(Role.DETECTOR, path)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = write_checkpoints(tmp_path / "c", roles=(Role.DETECTOR,)) / "Alignment_RetinaFace.pth"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged") as exc:
        load_network(Role.DETECTOR, path)
    assert str(path) in str(exc.value)


def test_landmarks_container_without_net_is_refused(tmp_path):
    path = tmp_path / "Landmark_98.pkl"
    torch.save({"model": {}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="'net'.*its keys are model, epoch"):
        load_network(Role.LANDMARKS, path)


def test_export_command_refuses_a_renamed_key_and_writes_nothing(checkpoints, tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(checkpoints, folder)
    state = torch.load(folder / "MTL_backbone.pth", weights_only=True)
    state["fc_au.weight_renamed"] = state.pop("fc_au.weight")
    torch.save(state, folder / "MTL_backbone.pth")
    result = aud(["models", "export", "--from", str(folder), "--to", str(tmp_path / "models")],
                 isolated_env(tmp_path))
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "MTL_backbone.pth" in message and "'fc_au.weight'" in message and "'fc_au.weight_renamed'" in message
    assert not (tmp_path / "models").exists()
