"""What a worker sends back for a chunk (:class:`ChunkResult`), and the checked pieces of a row.

:func:`_check_metrics` validates what ``evaluate`` returns, :func:`_error_text` keeps a failed
trial's traceback bounded, :func:`to_device` moves evaluation data next to a replica.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pytei_ray.columns import RESERVED, metric_of_golden

__all__ = ["ChunkResult", "to_device"]

_MAX_ERROR_CHARS = 4000


@dataclass
class ChunkResult:
    """What a worker sends back for one chunk.

    Attributes:
        rows: one result row (a flat dict, see docs/CONTRACTS.md) per trial of the chunk.
        golden: golden rows computed while running this chunk (first use of a model/mitigation).
        worker: the worker's id (``host:pid``).
        rebuilt: models whose replica was found modified and rebuilt before this chunk.
        nondeterministic: every model whose golden ``evaluate`` gave different metrics on two
            runs on this worker so far (sorted; no trial of those is skipped). Cumulative, so
            the driver can merge it from any chunk.
        checksums: model -> ``state_checksum`` of the replica as its factory built it, for
            every model this worker has built (the driver compares them across workers and
            runs: a factory that does not seed builds different models).
    """

    rows: list[dict[str, Any]]
    golden: list[dict[str, Any]] = field(default_factory=list)
    worker: str = ""
    rebuilt: list[str] = field(default_factory=list)
    nondeterministic: list[str] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)


def _version() -> str:
    from pytei_ray import __version__

    return __version__


def _check_metrics(out: object, expected: Sequence[str] | None) -> dict[str, float]:
    if not isinstance(out, Mapping):
        raise TypeError(f"Expected evaluate() to return a dict of metrics, but got "
                        f"{type(out).__name__}.")
    metrics: dict[str, float] = {}
    for key, value in out.items():
        if not isinstance(key, str) or not key or key in RESERVED or metric_of_golden(key):
            raise ValueError(f"Expected metric names to be strings that are not result columns "
                             f"({sorted(RESERVED)}) and do not start with 'golden_', but got "
                             f"{key!r}.")
        try:
            metrics[key] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"Expected metric {key!r} to be a number, but got {value!r}.") from None
    if expected is not None and list(metrics) != list(expected):
        if sorted(metrics) != sorted(expected):
            raise ValueError(f"Expected evaluate() to return the metrics of the golden run "
                             f"{list(expected)}, but got {list(metrics)}.")
        metrics = {k: metrics[k] for k in expected}
    return metrics


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text if len(text) <= _MAX_ERROR_CHARS else "...\n" + text[-_MAX_ERROR_CHARS:]


def to_device(data: Any, device: torch.device) -> Any:
    """Move evaluation data next to the replica: tensors (also inside tuples, lists and dicts)
    and objects with a ``.to(device)`` method (e.g. ``ClickLog``); anything else as it is."""
    if isinstance(data, torch.Tensor) or (
        callable(getattr(data, "to", None)) and not isinstance(data, (str, bytes))
    ):
        try:
            return data.to(device)
        except TypeError:  # a `.to` that is not torch's (e.g. a unit conversion): leave it
            return data
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(to_device(v, device) for v in data))
    if isinstance(data, (list, tuple)):
        return type(data)(to_device(v, device) for v in data)
    if isinstance(data, dict):
        return {k: to_device(v, device) for k, v in data.items()}
    return data
