"""The official OpenFace 3.0 checkpoints: safe loading, their container formats, strict key matching.

A checkpoint is a pickle, and unpickling can run code. Every file is read with ``torch.load(...,
weights_only=True)``: torch's restricted unpickler, which rebuilds tensors and plain containers (dict,
list, tuple, OrderedDict, Counter, numbers, strings) and refuses any other class or function before
calling it. The official formats — a state dict, a dict of state dicts and numbers — need nothing more, so
no other type is allowed. A refused file is reported with the globals it asks for (read from the pickle
without running it).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the reason."""


class Role(StrEnum):
    DETECTOR = "detector"
    MULTITASK = "multitask"
    LANDMARKS = "landmarks"


@dataclass(frozen=True)
class CheckpointSpec:
    role: Role
    filename: str  # the official file name
    container: str  # how the state dict sits in the file, for messages


OFFICIAL = (
    CheckpointSpec(Role.DETECTOR, "Alignment_RetinaFace.pth",
                   "a state dict, possibly under 'state_dict', keys possibly prefixed 'module.'"),
    CheckpointSpec(Role.MULTITASK, "MTL_backbone.pth", "a state dict"),
    CheckpointSpec(Role.LANDMARKS, "Landmark_98.pkl", "a dict whose 'net' holds the state dict"),
)
BY_ROLE = {spec.role: spec for spec in OFFICIAL}


def read_pickle(path: Path) -> object:
    """The file's content through torch's weights-only unpickler; CheckpointError for anything else."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(_refusal(path)) from exc
        raise CheckpointError(f"{path}: truncated or damaged checkpoint ({_first_line(exc)})") from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: truncated or damaged checkpoint, not a readable PyTorch file "
                              f"({_first_line(exc)})") from exc


def _refusal(path: Path) -> str:
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError):  # only for the message
        found = []
    what = ", ".join(found) if found else "an object that is not a tensor or a plain container"
    return (f"{path}: refused: the checkpoint holds {what}; loading it would run code from the file, "
            f"so it was not loaded (official OpenFace 3.0 checkpoints hold only tensors and plain data)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def state_dict_of(role: Role, content: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside an official container."""
    spec = BY_ROLE[role]
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: expected {spec.container}; found a {type(content).__name__}")
    if role is Role.DETECTOR:
        inner = content.get("state_dict", content)
        if not isinstance(inner, dict):
            raise CheckpointError(f"{path}: 'state_dict' is a {type(inner).__name__}, not a state dict")
        state = {k.removeprefix("module."): v for k, v in inner.items()}
    elif role is Role.LANDMARKS:
        if "net" not in content:
            keys = ", ".join(map(str, list(content)[:8]))
            raise CheckpointError(f"{path}: expected {spec.container}; its keys are {keys}")
        state = content["net"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: 'net' is a {type(state).__name__}, not a state dict")
    else:
        state = content
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: key {key!r} holds a {type(value).__name__}, not a tensor")
    return dict(state)


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load with every key matched: a missing or unexpected key, or a shape that differs, is an error that
    names it. (A checkpoint older than PyTorch 0.4.1 has no BatchNorm ``num_batches_tracked``; torch fills
    that counter in itself, and evaluation never reads it.)"""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise CheckpointError(f"{path}: does not fit {type(model).__name__}: {'; '.join(details[:5])}") from exc
    problems = []
    if result.missing_keys:
        problems.append(f"missing key(s) {_names(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected key(s) {_names(result.unexpected_keys)}")
    if problems:
        raise CheckpointError(f"{path}: does not match {type(model).__name__}: {'; '.join(problems)}")


def _names(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def build(role: Role) -> nn.Module:
    """A fresh network for the role, in eval mode."""
    from .arch.mtl import MTL
    from .arch.retinaface import RetinaFace
    from .arch.star import StackedHourglass

    model = {Role.DETECTOR: RetinaFace, Role.MULTITASK: MTL, Role.LANDMARKS: StackedHourglass}[role]()
    return model.eval()


def load_network(role: Role, path: Path) -> nn.Module:
    """The role's network with the checkpoint's weights, strictly matched."""
    model = build(role)
    load_strict(model, state_dict_of(role, read_pickle(path), path), path)
    return model


def container_for(role: Role, state: dict[str, torch.Tensor]) -> object:
    """``state`` wrapped as the official file holds it (for tests and for mirrors of random weights)."""
    if role is Role.LANDMARKS:
        return {"net": state, "epoch": 0}
    return state
