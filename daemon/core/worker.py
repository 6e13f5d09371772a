"""Setting up a process to run shards: its thread pools, its memory arena and its ``Pipeline``.

``prepare_process`` is the one explicit initialisation a worker process makes (a local pool's worker,
a Dask worker's plugin); it returns the pipeline, which the caller keeps and passes to
``shard.run_shard``. Nothing here is module-level state.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import cv2
import threadpoolctl

from . import providers
from .models import ModelSet, check_loaded, unchanged
from .pipeline import Pipeline, PipelineOptions
from .video import quiet_decoder_logs


def prepare_process(options: PipelineOptions, reference: ModelSet | None = None) -> Pipeline:
    """Give every native thread pool of this process the worker's share of the cores (see
    ``limit_threads``), one memory arena for its sessions, load the models once and warm up the detector.

    With ``reference`` (the set the parent hashed, ``models.load_model_set``), the files loaded must be
    its files, unchanged (``models.unchanged`` before loading, ``models.check_loaded`` after): a file
    swapped since the parent hashed it raises ``ModelsChanged`` instead of computing results that
    would carry the old file's sha256."""
    quiet_decoder_logs()
    limit_threads(providers.worker_threads(options.workers, options.threads))
    providers.share_cpu_arena()
    pipeline = load_pipeline(options, reference)
    pipeline.warm_up()
    release_freed_memory()
    return pipeline


def load_pipeline(options: PipelineOptions, reference: ModelSet | None = None) -> Pipeline:
    """A pipeline on ``options``' models; with ``reference``, only if they are its files, unchanged
    (``ModelsChanged`` otherwise)."""
    seen = unchanged(reference) if reference is not None else {}
    pipeline = Pipeline(options)
    if reference is not None:
        check_loaded(reference, pipeline.models, seen)
    return pipeline


def limit_threads(threads: int) -> None:
    """BLAS (numpy's matmuls in the crop resize) and OpenCV to ``threads`` threads, like ONNX Runtime.

    Left at their default (one thread per core), BLAS threads spin after each matmul and take a core
    from the other workers' inference (measured: docs/benchmark.md, "threads")."""
    threadpoolctl.threadpool_limits(limits=threads)
    cv2.setNumThreads(threads)


def release_freed_memory() -> None:
    """Hand the memory that loading the models freed (the parsed ONNX files) back to the system.

    glibc keeps freed heap memory for reuse, so each worker would hold about the size of the model
    files twice while idle between jobs. Other C libraries (macOS) have no ``malloc_trim``."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
