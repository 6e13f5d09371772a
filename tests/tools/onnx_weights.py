"""A PyTorch state dict rebuilt from an ONNX file that ``torch.onnx.export`` wrote from the real OpenFace 3.0
classes: the strong check that our architectures compute what the official classes compute.

The exporter names each node after the module that emitted it (``/base_model/blocks/blocks.0/blocks.0.0/
conv_dw/Conv``) but folds every BatchNorm that directly follows a convolution into that convolution, and
gives folded or transposed weights anonymous names (``onnx::Conv_1295``). So weights are read node by node:
a Conv's weight and bias go to the module named by the node (and the BatchNorm that follows it in our
module becomes the identity plus the folded bias), a Gemm's or MatMul's to the Linear, a
BatchNormalization's to the BatchNorm, and any initializer named like a state-dict key to that key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn


def onnx_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every constant in the graph: initializers, Constant nodes' values, and Identity nodes of those (the
    exporter stores equal weights once and passes the copies through Identity nodes)."""
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def module_path(node_name: str, prefix: str) -> str:
    """``/base_model/blocks/blocks.0/blocks.0.0/conv_dw/Conv`` -> ``base_model.blocks.0.0.conv_dw``."""
    segments: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if segments and part.startswith(segments[-1] + "."):
            segments[-1] = part
        else:
            segments.append(part)
    path = ".".join(segments)
    if prefix:
        if not (path == prefix.rstrip(".") or path.startswith(prefix)):
            raise ValueError(f"node {node_name} is outside {prefix!r}")
        path = path[len(prefix):] if path.startswith(prefix) else ""
    return path


def conv_batchnorm_pairs(module: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """Conv name -> name of the BatchNorm that takes the conv's output directly (what the exporter folds)."""
    names = {m: n for n, m in module.named_modules()}
    produced: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # outputs stay alive so that their ids stay unique
    pairs: dict[str, str] = {}

    def after_conv(mod, _inputs, output):
        produced[id(output)] = names[mod]
        keep.append(output)

    def before_bn(mod, inputs):
        if id(inputs[0]) in produced:
            pairs[produced[id(inputs[0])]] = names[mod]

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(after_conv))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            hooks.append(m.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    return pairs


def modules_that_run(module: nn.Module, example: torch.Tensor) -> set[str]:
    names = {m: n for n, m in module.named_modules()}
    ran: set[str] = set()
    hooks = [m.register_forward_pre_hook(lambda mod, _i: ran.add(names[mod])) for m in module.modules()]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    return ran


def state_dict_from_onnx(path: Path, module: nn.Module, example: torch.Tensor,
                         prefix: str = "") -> tuple[dict[str, torch.Tensor], set[str]]:
    """The state dict to load into ``module`` and the set of keys whose values came from the file.

    Keys not read from the file keep the module's own values (only keys of modules that never run in the
    forward pass, and BatchNorm statistics folded away, should be among them: the caller checks)."""
    model = onnx.load(str(path))
    values = onnx_values(model)
    modules = dict(module.named_modules())
    pairs = conv_batchnorm_pairs(module, example)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    read: set[str] = set()

    def put(key: str, array: np.ndarray) -> None:
        if key not in state:
            raise KeyError(f"{path.name}: {key} is not a key of {type(module).__name__}")
        tensor = torch.from_numpy(np.array(array, dtype=np.float32))
        if tensor.ndim == 0:  # the exporter writes a constant vector (e.g. all zeros) as one scalar
            tensor = tensor.expand(state[key].shape).clone()
        if tuple(tensor.shape) != tuple(state[key].shape):
            raise ValueError(f"{path.name}: {key} has shape {tuple(tensor.shape)} in the file, "
                             f"{tuple(state[key].shape)} in {type(module).__name__}")
        state[key] = tensor
        read.add(key)

    def fold_into(bn_name: str, bias: np.ndarray | None) -> None:
        bn = modules[bn_name]
        put(f"{bn_name}.weight", np.ones(bn.num_features))
        put(f"{bn_name}.bias", bias if bias is not None else np.zeros(bn.num_features))
        put(f"{bn_name}.running_mean", np.zeros(bn.num_features))
        put(f"{bn_name}.running_var", np.full(bn.num_features, 1.0 - bn.eps, np.float32))

    for node in model.graph.node:
        consts = [values.get(i) for i in node.input]
        if node.op_type in ("Constant", "Identity") or not any(c is not None for c in consts):
            continue
        name = module_path(node.name, prefix) if node.name.startswith("/") else ""
        target = modules.get(name) if name else None
        if node.op_type == "Conv" and isinstance(target, nn.Conv2d):
            put(f"{name}.weight", consts[1])
            bias = consts[2] if len(consts) > 2 else None
            if name in pairs:
                if target.bias is not None:
                    put(f"{name}.bias", bias)
                    fold_into(pairs[name], None)
                else:
                    fold_into(pairs[name], bias)
            elif bias is not None:
                put(f"{name}.bias", bias)
        elif node.op_type == "Conv" and target is not None:  # a module calling F.conv2d on its buffers
            put(f"{name}.weight", consts[1])
            put(f"{name}.bias", consts[2])
        elif node.op_type == "Gemm" and isinstance(target, nn.Linear):
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            put(f"{name}.weight", consts[1] if trans_b else consts[1].T)
            put(f"{name}.bias", consts[2])
        elif node.op_type == "MatMul" and isinstance(target, nn.Linear):
            put(f"{name}.weight", consts[1].T)
        elif node.op_type == "Add" and isinstance(target, nn.Linear):
            put(f"{name}.bias", next(c for c in consts if c is not None))
        elif node.op_type == "BatchNormalization" and isinstance(target, nn.modules.batchnorm._BatchNorm):
            for key, value in zip(("weight", "bias", "running_mean", "running_var"), consts[1:5]):
                put(f"{name}.{key}", value)
        else:
            for input_name, value in zip(node.input, consts):
                key = input_name[len(prefix):] if prefix and input_name.startswith(prefix) else input_name
                if value is not None and key in state:
                    put(key, value)
    return state, read


def unread_keys_of_running_modules(module: nn.Module, example: torch.Tensor, read: set[str]) -> list[str]:
    """Parameters and buffers of modules that run in the forward pass which the file did not provide
    (``num_batches_tracked`` aside: eval mode never reads it)."""
    ran = modules_that_run(module, example)
    missing = []
    for name, mod in module.named_modules():
        if name not in ran:
            continue
        for key, _ in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            full = f"{name}.{key}" if name else key
            if key != "num_batches_tracked" and full not in read:
                missing.append(full)
    return missing
