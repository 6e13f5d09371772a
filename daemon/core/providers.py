"""Choosing an ONNX Runtime execution provider and building its options.

Preference: CoreML (a Mac) -> CUDA -> CPU, filtered by what this onnxruntime build offers. The CPU
provider is always appended last, so a session always has somewhere to run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

COREML = "CoreMLExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PREFERENCE = (COREML, CUDA, CPU)
ALIASES = {"coreml": COREML, "cuda": CUDA, "cpu": CPU}


class ProviderError(ValueError):
    """The requested provider does not exist in this onnxruntime build."""


@dataclass(frozen=True)
class ProviderPlan:
    """Providers (with options) to hand to ``InferenceSession``, most preferred first."""

    providers: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.providers]

    @property
    def primary(self) -> str:
        return self.providers[0][0]


def resolve_name(requested: str) -> str | None:
    """Map a config value (auto/coreml/cuda/cpu or a full provider name) to a provider name."""
    if requested.lower() == "auto":
        return None
    return ALIASES.get(requested.lower(), requested)


def coreml_options(cache_dir: Path) -> dict[str, str]:
    """CoreML: the MLProgram format, every compute unit, and a persistent compiled-model cache."""
    return {
        "ModelFormat": "MLProgram",
        "MLComputeUnits": "ALL",
        "RequireStaticInputShapes": "0",
        "EnableOnSubgraphs": "0",
        "ModelCacheDirectory": str(cache_dir),
    }


def cuda_options(device_id: int = 0) -> dict[str, str]:
    return {
        "device_id": str(device_id),
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "HEURISTIC",
    }


def options_for(name: str, cache_dir: Path) -> dict[str, str]:
    if name == COREML:
        return coreml_options(cache_dir)
    if name == CUDA:
        return cuda_options()
    return {}


def choose(requested: str, cache_dir: Path, available: list[str] | None = None) -> ProviderPlan:
    """Providers to use for ``requested`` given what is ``available`` (default: this build's)."""
    available = list(available if available is not None else ort.get_available_providers())
    wanted = resolve_name(requested)
    if wanted is None:
        names = [p for p in PREFERENCE if p in available]
    elif wanted in available:
        names = [wanted]
    else:
        raise ProviderError(
            f"provider {requested!r} is not available in this onnxruntime build; "
            f"available: {', '.join(available)}"
        )
    if CPU not in names:
        names.append(CPU)
    return ProviderPlan([(n, options_for(n, cache_dir)) for n in names])


def session_options(workers: int, cpu_count: int | None = None, threads: int = 0) -> ort.SessionOptions:
    """Graph optimisation on; intra-op threads share the machine's cores among the workers
    (``threads`` > 0 sets them explicitly); CPU memory from the process's shared arena when
    ``share_cpu_arena`` has made one (a worker), else from the session's own arena."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = worker_threads(workers, threads, cpu_count)
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = True
    # no memory pattern: it plans one block per input shape on top of the arena, which at 1920x1080
    # made RetinaFace's arena larger for no speed (docs/benchmark.md, "Design measurements")
    opts.enable_mem_pattern = False
    opts.add_session_config_entry("session.use_env_allocators", "1")
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return opts


def share_cpu_arena() -> None:
    """One CPU memory arena for every session of this process (they opt in by ``session_options``).

    The three models run one after another, so their activations reuse the same memory instead of
    each session keeping its own peak, and the arena grows by what is asked (kSameAsRequested), not
    in powers of two; without an arena, activations are freed and page-faulted back at every frame
    (the comparison of the four set-ups: docs/benchmark.md, "Design measurements")."""
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    max_mem, same_as_requested, default = 0, 1, -1  # OrtArenaCfg(max_mem, extend strategy, chunk, dead bytes)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(max_mem, same_as_requested, default, default))


def worker_threads(workers: int, threads: int = 0, cpu_count: int | None = None) -> int:
    """Threads each worker may use (ONNX Runtime's intra-op pool, BLAS, OpenCV): ``threads`` if set,
    else an equal share of the machine's cores, at least one."""
    if threads > 0:
        return threads
    cores = cpu_count or os.cpu_count() or 1
    return max(1, cores // max(1, workers))
