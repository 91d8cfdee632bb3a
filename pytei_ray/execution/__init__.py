"""Executors: where trials run. ``local`` (in process) and ``ray`` (actors on a Ray cluster).

:mod:`.worker` runs the trials of a chunk on one model replica (both executors use it).
Only this package imports ray: :mod:`.ray_executor` and :mod:`.ray_runtime`, and only when the
``ray`` executor is selected (``tests/test_layering.py`` checks it).
"""

from __future__ import annotations

import importlib
import importlib.util

from .base import Executor, ExecutorConfig, ResultCallback

__all__ = ["Executor", "ExecutorConfig", "ResultCallback", "EXECUTORS", "get_executor",
           "available_executors", "default_executor"]

#: ``--executor`` name -> "module:Class" (imported only when chosen)
EXECUTORS: dict[str, str] = {
    "local": "pytei_ray.execution.local:LocalExecutor",
    "ray": "pytei_ray.execution.ray_executor:RayExecutor",
}


def available_executors() -> list[str]:
    """Names of the executors whose module is installed."""
    out = []
    for name, target in EXECUTORS.items():
        module = target.partition(":")[0]
        if importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


def default_executor() -> str:
    """``"ray"`` when the Ray executor is available, else ``"local"``."""
    return "ray" if "ray" in available_executors() else "local"


def get_executor(name: str, config: ExecutorConfig | None = None) -> Executor:
    """Instantiate the executor registered as ``name``.

    Raises:
        ValueError: unknown or unavailable name.
    """
    if name not in EXECUTORS or name not in available_executors():
        raise ValueError(f"Expected --executor to be one of {available_executors()}, but got "
                         f"{name!r}.")
    module, _, cls = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(config)
