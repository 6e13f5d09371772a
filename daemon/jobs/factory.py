"""The executor the settings ask for: the one module that knows every implementation of the port
(``executor.py``), so that the port imports none of them."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Settings
from ..core.models import ModelSet
from .executor import Executor


def make_executor(settings: Settings, on_restart: Callable[[str], None] = lambda reason: None,
                  models: ModelSet | None = None) -> Executor:
    """The local process pool (default) or a Dask cluster. ``models``: the set the caller hashed (its
    sha256 label the results); local workers refuse files that are not those (else the pool hashes
    the set itself when it starts)."""
    if settings.executor == "dask":
        from .dask_executor import DaskExecutor

        if not settings.dask_scheduler:
            raise ValueError("executor = \"dask\" needs dask_scheduler (--dask-scheduler tcp://host:8786)")
        return DaskExecutor(settings.dask_scheduler, settings.pipeline_options(), settings.path_map)
    from .local import ProcessExecutor

    return ProcessExecutor(settings.pipeline_options(), settings.workers, on_restart=on_restart, models=models)
