"""INT8 STAR per CPU flag set: speed and drift of static INT8 with and without reduce_range.

    # 1. quantise the shared STAR both ways and keep evaluation crops (on any machine)
    .venv/bin/python bench/int8_star.py prepare /tmp/int8 [--calibration 32] [--crops 12]
    # 2. drift of each INT8 model against fp32, on this CPU or an emulated one
    .venv/bin/python bench/int8_star.py drift /tmp/int8 [--crops 4]
    qemu-x86_64 -cpu Haswell .venv/bin/python bench/int8_star.py drift /tmp/int8 --crops 4
    # 3. speed: one thread, batch 1, the three models alternating, median of --runs
    .venv/bin/python bench/int8_star.py speed /tmp/int8 [--runs 7]
    # 4. the tiny STAR stand-ins of tests/core/test_quantize.py, their drift checks with 8- and 7-bit weights
    .venv/bin/python bench/int8_star.py toy-prepare /tmp/int8-toy
    qemu-x86_64 -cpu Haswell .venv/bin/python bench/int8_star.py toy-drift /tmp/int8-toy

``prepare`` cuts STAR crops around the faces RetinaFace finds in the shared clip (calibration and
evaluation crops from different frames), and writes ``star.int8.onnx`` (reduce_range off),
``star.int8.rr.onnx`` (reduce_range on; both per-channel) and ``eval.npy``. ``drift`` prints, per INT8
model, the landmark differences from fp32 in 256-pixel crop pixels (max and median over all points and
crops) and the NME (mean point error over the inter-ocular distance, WFLW points 60 and 72). It also
prints the CPU features this process sees through CPUID (numpy's dispatch table), which is what tells an
emulated CPU apart: qemu-user passes the host's /proc/cpuinfo through unchanged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
VARIANTS = {"fp32": None, "int8": "star.int8.onnx", "int8-reduce-range": "star.int8.rr.onnx"}
CROP_PX = 128.0  # [-1, 1] crop units -> pixels of the 256x256 crop
OUTER_EYE_CORNERS = (60, 72)


def cpuid_features() -> str:
    """The x86 features CPUID reports to this process (numpy's runtime dispatch table)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as feats
    keys = ("AVX2", "AVX512F", "AVX512BW", "AVX512_VNNI", "AVX512VNNI", "AVXVNNI", "ASIMDDP")
    return " ".join(f"{k}={int(feats[k])}" for k in keys if k in feats)


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def model_paths(work: Path, models: Path) -> dict[str, Path]:
    return {name: (models / "star.onnx" if file is None else work / file) for name, file in VARIANTS.items()}


def cmd_prepare(args: argparse.Namespace) -> None:
    from daemon.tools import quantize
    from daemon.tools.quantize import QuantizationChoice

    args.work.mkdir(parents=True, exist_ok=True)
    calibration = quantize.calibration_inputs(args.models, [args.video], samples=args.calibration)
    # evaluation crops from other frames (on the 275-frame clip, 12 and 32 evenly spread frames share none)
    evaluation = quantize.calibration_inputs(args.models, [args.video], samples=args.crops)
    np.save(args.work / "eval.npy", evaluation)
    for name, reduce_range in (("int8", False), ("int8-reduce-range", True)):
        choice = QuantizationChoice(reduce_range, True, "bench/int8_star.py")
        result = quantize.quantize_star(args.models / "star.onnx", args.work / VARIANTS[name],
                                        calibration=calibration, choice=choice)
        print(f"{name}: {result.output} ({result.output_bytes / 1e6:.1f} MB) in {result.seconds:.1f} s, "
              f"calibrated on {result.calibration_samples} crops")
    print(f"evaluation crops: {len(evaluation)} -> {args.work / 'eval.npy'}")


def landmarks(path: Path, crops: np.ndarray) -> np.ndarray:
    s = session(path)
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: c[np.newaxis]})[0] for c in crops])


def cmd_drift(args: argparse.Namespace) -> None:
    crops = np.load(args.work / "eval.npy")[: args.crops]
    paths = model_paths(args.work, args.models)
    ref = landmarks(paths["fp32"], crops)
    inter_ocular = np.linalg.norm(ref[:, OUTER_EYE_CORNERS[0]] - ref[:, OUTER_EYE_CORNERS[1]], axis=-1)
    report = {"cpuid": cpuid_features(), "crops": len(crops)}
    for name in ("int8", "int8-reduce-range"):
        got = landmarks(paths[name], crops)
        dist = np.linalg.norm(got - ref, axis=-1)  # [crops, 98], crop units
        report[name] = {"max_px": float(np.abs(got - ref).max() * CROP_PX),
                        "median_px": float(np.median(np.abs(got - ref)) * CROP_PX),
                        "nme": float(np.mean(dist.mean(axis=1) / inter_ocular))}
    print(json.dumps(report))


def cmd_speed(args: argparse.Namespace) -> None:
    crop = np.load(args.work / "eval.npy")[:1]
    sessions = {name: session(path) for name, path in model_paths(args.work, args.models).items()}
    feeds = {name: {s.get_inputs()[0].name: crop} for name, s in sessions.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for name, s in sessions.items():  # warm-up
        s.run(None, feeds[name])
    for _ in range(args.runs):  # alternating, so a noisy minute hits every model alike
        for name, s in sessions.items():
            began = time.perf_counter()
            s.run(None, feeds[name])
            times[name].append((time.perf_counter() - began) * 1e3)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({"cpuid": cpuid_features(), "runs": args.runs,
                      "median_ms": medians, "all_ms": times,
                      "speedup": {n: medians["fp32"] / m for n, m in medians.items() if n != "fp32"}}))


def toy_models():
    """(name, model, calibration inputs, checked inputs) as tests/core/test_quantize.py has them."""
    import sys

    sys.path.insert(0, str(PROJECT))
    from tests.core.test_quantize import conv_star, face_like_inputs

    from tests import tinymodels

    return (("conv_star", conv_star(), face_like_inputs(12, seed=1), face_like_inputs(6, seed=2)),
            ("tinymodels.landmarks", tinymodels.landmarks(), face_like_inputs(4), face_like_inputs(2, seed=9)))


def cmd_toy_prepare(args: argparse.Namespace) -> None:
    import onnx

    from daemon.tools import quantize
    from daemon.tools.quantize import QuantizationChoice

    args.work.mkdir(parents=True, exist_ok=True)
    for name, model, calibration, checked in toy_models():
        onnx.save(model, str(args.work / f"{name}.onnx"))
        np.save(args.work / f"{name}.x.npy", checked)
        for bits, reduce_range in ((8, False), (7, True)):
            quantize.quantize_star(args.work / f"{name}.onnx", args.work / f"{name}.{bits}bit.onnx",
                                   calibration=calibration, choice=QuantizationChoice(reduce_range, True, "bench"))


def cmd_toy_drift(args: argparse.Namespace) -> None:
    def run(path: Path, x: np.ndarray) -> np.ndarray:
        s = session(path)
        return s.run(None, {s.get_inputs()[0].name: x})[0]

    report = {"cpuid": cpuid_features()}
    for name in ("conv_star", "tinymodels.landmarks"):
        x = np.load(args.work / f"{name}.x.npy")
        ref = run(args.work / f"{name}.onnx", x)
        report[name] = {f"{bits}-bit": float(np.abs(run(args.work / f"{name}.{bits}bit.onnx", x) - ref).max())
                        for bits in (8, 7)}
    print(json.dumps(report))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, func in (("prepare", cmd_prepare), ("drift", cmd_drift), ("speed", cmd_speed),
                       ("toy-prepare", cmd_toy_prepare), ("toy-drift", cmd_toy_drift)):
        p = sub.add_parser(name)
        p.add_argument("work", type=Path, help="directory for the INT8 models and evaluation crops")
        p.add_argument("--models", type=Path, default=SHARED / "models" / "openface3")
        p.set_defaults(func=func)
        if name == "prepare":
            p.add_argument("--video", type=Path, default=SHARED / "media" / "hamilton_clip.mp4")
            p.add_argument("--calibration", type=int, default=32, help="calibration crops")
            p.add_argument("--crops", type=int, default=12, help="evaluation crops to keep")
        elif name == "drift":
            p.add_argument("--crops", type=int, default=12, help="evaluation crops to use")
        elif name == "speed":
            p.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
