"""Execution provider choice and options, with fake lists of available providers."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from daemon.core import providers
from daemon.core.providers import COREML, CPU, CUDA, ProviderError

MAC = ["CoreMLExecutionProvider", "CPUExecutionProvider"]
NVIDIA = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
PLAIN = ["CPUExecutionProvider"]


def test_auto_on_a_mac_prefers_coreml_with_mlprogram_and_cache(tmp_path):
    plan = providers.choose("auto", tmp_path / "cache", MAC)
    assert plan.names == [COREML, CPU]
    assert plan.primary == COREML
    opts = dict(plan.providers)[COREML]
    assert opts["ModelFormat"] == "MLProgram"
    assert opts["MLComputeUnits"] == "ALL"
    assert Path(opts["ModelCacheDirectory"]) == tmp_path / "cache"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in opts.items())
    assert dict(plan.providers)[CPU] == {}


def test_auto_with_cuda(tmp_path):
    plan = providers.choose("auto", tmp_path, NVIDIA)
    assert plan.names == [CUDA, CPU]  # TensorRT is not in the preference list
    opts = dict(plan.providers)[CUDA]
    assert opts["device_id"] == "0"


def test_auto_prefers_coreml_over_cuda(tmp_path):
    assert providers.choose("auto", tmp_path, [CPU, CUDA, COREML]).names == [COREML, CUDA, CPU]


def test_auto_cpu_only(tmp_path):
    assert providers.choose("auto", tmp_path, PLAIN).names == [CPU]


@pytest.mark.parametrize("requested", ["cpu", "CPU", "CPUExecutionProvider"])
def test_explicit_cpu(tmp_path, requested):
    plan = providers.choose(requested, tmp_path, MAC)
    assert plan.names == [CPU]


@pytest.mark.parametrize("requested,expected", [("coreml", [COREML, CPU]), ("CoreML", [COREML, CPU])])
def test_explicit_coreml(tmp_path, requested, expected):
    assert providers.choose(requested, tmp_path, MAC).names == expected


def test_explicit_cuda_on_nvidia(tmp_path):
    assert providers.choose("cuda", tmp_path, NVIDIA).names == [CUDA, CPU]


def test_full_provider_name_not_in_preference(tmp_path):
    assert providers.choose("TensorrtExecutionProvider", tmp_path, NVIDIA).names == \
        ["TensorrtExecutionProvider", CPU]


@pytest.mark.parametrize("requested,available", [("cuda", MAC), ("rocm", MAC), ("NoSuchExecutionProvider", MAC),
                                                ("coreml", NVIDIA), ("coreml", PLAIN)])
def test_unavailable_provider_names_the_available_ones(tmp_path, requested, available):
    with pytest.raises(ProviderError) as exc:
        providers.choose(requested, tmp_path, available)
    msg = str(exc.value)
    assert requested in msg
    assert all(name in msg for name in available)


def test_default_available_list_is_this_build(tmp_path):
    plan = providers.choose("auto", tmp_path)
    assert plan.names[-1] == CPU
    assert set(plan.names) <= set(ort.get_available_providers())


def test_resolve_name():
    assert providers.resolve_name("auto") is None
    assert providers.resolve_name("AUTO") is None
    assert providers.resolve_name("cuda") == CUDA
    assert providers.resolve_name("SomethingExecutionProvider") == "SomethingExecutionProvider"


@pytest.mark.parametrize("workers,cores,expected", [
    (1, 8, 8), (2, 8, 4), (3, 8, 2), (8, 8, 1), (16, 8, 1), (0, 4, 4), (1, 1, 1), (4, 10, 2),
])
def test_worker_threads(workers, cores, expected):
    assert providers.worker_threads(workers, cpu_count=cores) == expected


def test_worker_threads_explicit():
    assert providers.worker_threads(4, threads=3, cpu_count=2) == 3


def test_session_options():
    opts = providers.session_options(workers=2, cpu_count=6)
    assert opts.intra_op_num_threads == 3
    assert opts.inter_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.enable_cpu_mem_arena and not opts.enable_mem_pattern
    # the worker's shared arena, where one is registered (share_cpu_arena), else the session's own
    assert opts.get_session_config_entry("session.use_env_allocators") == "1"
