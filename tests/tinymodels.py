"""Tiny ONNX stand-ins for the three OpenFace 3.0 models, built with ``onnx.helper``.

They have the real signatures (names configurable) and run in microseconds:

- ``detector``: RetinaFace-like. Input [N,3,H,W] (H, W dynamic); outputs loc [N,P,4], conf [N,P,2],
  landms [N,P,10] where P is computed inside the graph from H and W exactly as RetinaFace's priors are
  (sum over steps 8/16/32 of ceil(H/s)*ceil(W/s)*2). Every prior has the background score except the
  "faces": face i sits on prior i (i = 0 or 1, both anchored at pixel (4, 4) with sizes 16 and 32) and its
  loc regression is computed in-graph so that the decoded box is ``box`` given as fractions of the frame.
  With ``gate`` set, a face only scores when the frame's mean pixel (BGR after the -(104,117,123) mean
  subtraction, i.e. roughly mean intensity - 115) is above ``gate``; otherwise it gets ``gated_score``.
- ``multitask``: GlobalAveragePool -> Flatten -> MatMul (+bias) to emotion [N,8], gaze [N,2], au [N,8].
- ``landmarks``: GlobalAveragePool -> Flatten -> MatMul [3,196] (+bias) -> Reshape [N,98,2] -> Tanh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

# RetinaFace priors 0 and 1: cell (0, 0) of the stride-8 map, min sizes 16 and 32, centre pixel (4, 4)
PRIOR_CENTER_PX = 4.0
PRIOR_SIZE_PX = (16.0, 32.0)


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 as fractions of the frame width/height
    score: float = 0.9


DEFAULT_FACE = Face((0.25, 0.2, 0.75, 0.85), 0.9)


def _const(name: str, value, dtype=np.float32) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=dtype),
                                                                                  name))


def _model(nodes, inputs, outputs, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="aud-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def detector(faces: Sequence[Face] = (DEFAULT_FACE,), background: float = 0.01, *,
             gate: float | None = None, gated_score: float = 0.1,
             input_name: str = "input",
             output_names: tuple[str, str, str] = ("loc", "conf", "landms"),
             output_order: tuple[int, int, int] = (0, 1, 2)) -> onnx.ModelProto:
    """A RetinaFace-like detector; ``output_names`` are (loc, conf, landms), listed in ``output_order``."""
    assert len(faces) <= 2, "faces sit on priors 0 and 1"
    loc_name, conf_name, landms_name = output_names
    n = []
    # P from H and W
    n.append(helper.make_node("Shape", [input_name], ["shape"]))
    n.append(_const("c2", [2], np.int64))
    n.append(_const("c4", [4], np.int64))
    n.append(helper.make_node("Slice", ["shape", "c2", "c4"], ["hw_i"]))
    n.append(helper.make_node("Cast", ["hw_i"], ["hw"], to=TensorProto.FLOAT))  # [2] = H, W
    n.append(_const("steps", [[8.0], [16.0], [32.0]]))
    n.append(helper.make_node("Div", ["hw", "steps"], ["fm_f"]))  # [3, 2]
    n.append(helper.make_node("Ceil", ["fm_f"], ["fm"]))
    n.append(helper.make_node("ReduceProd", ["fm"], ["cells"], axes=[1], keepdims=0))  # [3]
    n.append(helper.make_node("ReduceSum", ["cells"], ["cells_sum"], keepdims=0))  # scalar
    n.append(_const("two", 2.0))
    n.append(helper.make_node("Mul", ["cells_sum", "two"], ["p_f"]))
    n.append(helper.make_node("Cast", ["p_f"], ["p"], to=TensorProto.INT64))
    n.append(_const("zero_i", 0, np.int64))
    n.append(_const("one_i", 1, np.int64))
    n.append(helper.make_node("Range", ["zero_i", "p", "one_i"], ["prior_index"]))  # [P]
    # per-image gate from the mean pixel
    n.append(helper.make_node("ReduceMean", [input_name], ["mean4"], axes=[1, 2, 3], keepdims=1))  # [N,1,1,1]
    n.append(_const("shape_n1", [-1, 1], np.int64))
    n.append(helper.make_node("Reshape", ["mean4", "shape_n1"], ["mean"]))  # [N,1]
    n.append(_const("zero_f", 0.0))
    n.append(helper.make_node("Mul", ["mean", "zero_f"], ["zeros_n1"]))  # [N,1] of zeros (batch carrier)
    n.append(_const("bg", background))
    n.append(helper.make_node("Cast", ["prior_index"], ["prior_index_f"], to=TensorProto.FLOAT))
    n.append(helper.make_node("Mul", ["prior_index_f", "zero_f"], ["zeros_p"]))  # [P]
    n.append(helper.make_node("Add", ["zeros_n1", "zeros_p"], ["zeros_np"]))  # [N,P]
    n.append(helper.make_node("Add", ["zeros_np", "bg"], ["score_bg"]))  # [N,P]
    score_terms = ["score_bg"]
    loc_terms = []
    n.append(_const("h_idx", [0], np.int64))
    n.append(_const("w_idx", [1], np.int64))
    n.append(helper.make_node("Gather", ["hw", "h_idx"], ["H"]))  # [1]
    n.append(helper.make_node("Gather", ["hw", "w_idx"], ["W"]))
    for i, face in enumerate(faces):
        x1, y1, x2, y2 = face.box
        m = PRIOR_SIZE_PX[i]
        # score [N,1]
        n.append(_const(f"s{i}", face.score))
        if gate is None:
            n.append(helper.make_node("Add", ["zeros_n1", f"s{i}"], [f"score{i}"]))
        else:
            n.append(_const(f"gate{i}", gate))
            n.append(_const(f"gated{i}", gated_score))
            n.append(helper.make_node("Greater", ["mean", f"gate{i}"], [f"open{i}"]))
            n.append(helper.make_node("Where", [f"open{i}", f"s{i}", f"gated{i}"], [f"score{i}_raw"]))
            n.append(helper.make_node("Add", ["zeros_n1", f"score{i}_raw"], [f"score{i}"]))
        n.append(_const(f"k{i}", i, np.int64))
        n.append(helper.make_node("Equal", ["prior_index", f"k{i}"], [f"is{i}_b"]))
        n.append(helper.make_node("Cast", [f"is{i}_b"], [f"is{i}"], to=TensorProto.FLOAT))  # [P]
        n.append(helper.make_node("Sub", [f"score{i}", "score_bg"], [f"lift{i}"]))  # [N,1]
        n.append(helper.make_node("Mul", [f"lift{i}", f"is{i}"], [f"sterm{i}"]))  # [N,P]
        score_terms.append(f"sterm{i}")
        # loc [4] from H, W: centre offset / (0.1 * m), log size ratio / 0.2
        n.append(_const(f"cx{i}", (x1 + x2) / 2))
        n.append(_const(f"cy{i}", (y1 + y2) / 2))
        n.append(_const(f"bw{i}", (x2 - x1) / m))
        n.append(_const(f"bh{i}", (y2 - y1) / m))
        n.append(_const("pc", PRIOR_CENTER_PX))
        n.append(_const(f"v0m{i}", 0.1 * m))
        n.append(_const("v1", 0.2))
        for axis, c, s, dim in (("x", f"cx{i}", f"bw{i}", "W"), ("y", f"cy{i}", f"bh{i}", "H")):
            n.append(helper.make_node("Mul", [c, dim], [f"c{axis}px{i}"]))
            n.append(helper.make_node("Sub", [f"c{axis}px{i}", "pc"], [f"d{axis}{i}"]))
            n.append(helper.make_node("Div", [f"d{axis}{i}", f"v0m{i}"], [f"l{axis}{i}"]))
            n.append(helper.make_node("Mul", [s, dim], [f"r{axis}{i}"]))
            n.append(helper.make_node("Log", [f"r{axis}{i}"], [f"lr{axis}{i}"]))
            n.append(helper.make_node("Div", [f"lr{axis}{i}", "v1"], [f"l{'w' if axis == 'x' else 'h'}{i}"]))
        n.append(helper.make_node("Concat", [f"lx{i}", f"ly{i}", f"lw{i}", f"lh{i}"], [f"loc{i}"], axis=0))  # [4]
        n.append(_const("unsq_last", [-1], np.int64))
        n.append(helper.make_node("Unsqueeze", [f"is{i}", "unsq_last"], [f"is{i}_col"]))  # [P,1]
        n.append(helper.make_node("Mul", [f"is{i}_col", f"loc{i}"], [f"lterm{i}"]))  # [P,4]
        loc_terms.append(f"lterm{i}")
    n.append(helper.make_node("Sum", score_terms, ["score"]))  # [N,P]
    n.append(_const("one_f", 1.0))
    n.append(helper.make_node("Sub", ["one_f", "score"], ["bgscore"]))
    n.append(_const("axes_last", [-1], np.int64))
    n.append(helper.make_node("Unsqueeze", ["score", "axes_last"], ["score_col"]))
    n.append(helper.make_node("Unsqueeze", ["bgscore", "axes_last"], ["bgscore_col"]))
    n.append(helper.make_node("Concat", ["bgscore_col", "score_col"], [conf_name], axis=-1))  # [N,P,2]
    n.append(helper.make_node("Mul", ["score_col", "zero_f"], ["zeros_np1"]))  # [N,P,1]
    n.append(_const("zeros4", np.zeros(4)))
    if loc_terms:
        n.append(helper.make_node("Sum", loc_terms, ["loc_p4"]))
        n.append(helper.make_node("Add", ["loc_p4", "zeros4"], ["loc_p4b"]))
        n.append(helper.make_node("Add", ["zeros_np1", "loc_p4b"], [loc_name]))
    else:
        n.append(helper.make_node("Add", ["zeros_np1", "zeros4"], [loc_name]))
    n.append(_const("zeros10", np.zeros(10)))
    n.append(helper.make_node("Add", ["zeros_np1", "zeros10"], [landms_name]))
    # dedupe repeated constants (pc, v1, unsq_last are emitted once per face)
    seen, nodes = set(), []
    for node in n:
        if node.op_type == "Constant" and node.output[0] in seen:
            continue
        seen.update(node.output)
        nodes.append(node)
    outs = [
        helper.make_tensor_value_info(loc_name, TensorProto.FLOAT, ["N", "P", 4]),
        helper.make_tensor_value_info(conf_name, TensorProto.FLOAT, ["N", "P", 2]),
        helper.make_tensor_value_info(landms_name, TensorProto.FLOAT, ["N", "P", 10]),
    ]
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, "H", "W"])
    return _model(nodes, [inp], [outs[k] for k in output_order], "tiny_retinaface")


def _gap_features(input_name: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("GlobalAveragePool", [input_name], ["t_gap"]),
        helper.make_node("Flatten", ["t_gap"], ["feat"], axis=1),  # [N,3]
    ]


def multitask(seed: int = 1, *, input_name: str = "input",
              output_names: tuple[str, str, str] = ("emotion", "gaze", "au"),
              output_order: tuple[int, int, int] = (0, 1, 2), size: int = 224) -> onnx.ModelProto:
    """MTL stand-in; ``output_names`` are (emotion, gaze, au), listed in ``output_order``."""
    rng = np.random.default_rng(seed)
    nodes = _gap_features(input_name)
    outs = []
    for name, dim, tag in zip(output_names, (8, 2, 8), ("e", "g", "a")):
        nodes.append(_const(f"w_{tag}", rng.normal(0, 2, (3, dim))))
        nodes.append(_const(f"b_{tag}", rng.normal(0, 0.5, dim)))
        nodes.append(helper.make_node("MatMul", ["feat", f"w_{tag}"], [f"mm_{tag}"]))
        nodes.append(helper.make_node("Add", [f"mm_{tag}", f"b_{tag}"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", dim]))
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, size, size])
    return _model(nodes, [inp], [outs[k] for k in output_order], "tiny_mtl")


def landmarks(seed: int = 2, *, points: int = 98, input_name: str = "input",
              output_name: str = "landmarks", size: int = 256) -> onnx.ModelProto:
    """STAR stand-in: [N,points,2] in (-1, 1)."""
    rng = np.random.default_rng(seed)
    nodes = _gap_features(input_name)
    nodes += [
        _const("t_w", rng.normal(0, 0.5, (3, points * 2))),
        _const("t_b", rng.uniform(-0.8, 0.8, points * 2)),
        helper.make_node("MatMul", ["feat", "t_w"], ["t_mm"]),
        helper.make_node("Add", ["t_mm", "t_b"], ["t_flat"]),
        _const("t_shape", [-1, points, 2], np.int64),
        helper.make_node("Reshape", ["t_flat", "t_shape"], ["t_pts"]),
        helper.make_node("Tanh", ["t_pts"], [output_name]),
    ]
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, size, size])
    out = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", points, 2])
    return _model(nodes, [inp], [out], "tiny_star")


def expected_priors(height: int, width: int) -> int:
    return sum(math.ceil(height / s) * math.ceil(width / s) * 2 for s in (8, 16, 32))


def write_set(directory: Path, det: onnx.ModelProto | None = None, mtl: onnx.ModelProto | None = None,
              star: onnx.ModelProto | None = None,
              names: tuple[str, str, str] = ("retinaface.onnx", "mtl.onnx", "star.onnx")) -> Path:
    """Write the three models (defaults: the standard tiny ones) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for model, name in zip((det or detector(), mtl or multitask(), star or landmarks()), names):
        onnx.save(model, str(directory / name))
    return directory
