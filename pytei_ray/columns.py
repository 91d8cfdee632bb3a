"""The result row's columns: the one list of factors, the fixed columns, ``golden_<m>``, and
how two metric values compare (bit for bit).

Every layer names the same columns (the campaign expands factors, the worker fills rows,
storage types them, the statistics and the report group by them), so they are spelled once,
here, with no dependency: ``storage.schema`` adds the Arrow types, ``Campaign`` the plural
argument names (:data:`PLURAL`). docs/CONTRACTS.md ("Result row") describes each column.

Example:
    >>> golden_column("auc"), metric_of_golden("golden_auc"), metric_of_golden("auc")
    ('golden_auc', 'auc', None)
    >>> PLURAL["error_model"], POINT_FACTORS
    ('error_models', ('model', 'target', 'error_model', 'ber'))
    >>> CELL_ORDER
    ('model', 'target', 'error_model', 'mitigation', 'ber')
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping

__all__ = [
    "CELL_FACTORS",
    "CELL_ORDER",
    "FACTORS",
    "GOLDEN_HEAD",
    "GOLDEN_PREFIX",
    "GOLDEN_TAIL",
    "LEVEL_FACTORS",
    "PLURAL",
    "POINT_FACTORS",
    "RESERVED",
    "RESULT_HEAD",
    "RESULT_TAIL",
    "OUTCOME_CLASSES",
    "STEPS_KEY",
    "GOLDEN_TRIAL_PREFIX",
    "golden_trial_id",
    "golden_column",
    "golden_metrics",
    "metric_of_golden",
    "same_metrics",
    "same_value",
]

#: The factors of a trial, in grid order: the singular names are the row's columns.
FACTORS: tuple[str, ...] = ("model", "target", "error_model", "ber", "repetition", "mitigation")
#: The ``Campaign`` argument of each factor that has one (repetitions are a count).
PLURAL: dict[str, str] = {"model": "models", "target": "targets", "error_model": "error_models",
                          "ber": "bers", "mitigation": "mitigations"}
#: The factors that define a point: the mitigations of one point (and repetition) see the same
#: faults, so a point's cells are judged and compared together.
POINT_FACTORS: tuple[str, ...] = FACTORS[:4]
#: The factors of a cell: a point and a mitigation (what a stopping rule judges, a report row).
CELL_FACTORS: tuple[str, ...] = (*POINT_FACTORS, "mitigation")
#: The factors of a cell in the report's column order: the BER last (tables run along it).
CELL_ORDER: tuple[str, ...] = tuple(sorted(CELL_FACTORS, key=lambda f: f == "ber"))
#: The ``Campaign`` arguments whose levels are named (and may carry ``Level`` attributes).
LEVEL_FACTORS: tuple[str, ...] = tuple(PLURAL[f] for f in ("model", "target", "error_model",
                                                          "mitigation"))

#: Fixed columns of a result row before the attribute and metric columns, in schema order.
RESULT_HEAD: tuple[str, ...] = (
    "campaign", "trial_id", *FACTORS, "seed", "n_faults", "n_words",
    "n_nonfinite", "n_faults_sampled", "n_sites", "p_no_fault", "evaluated", "n_rescored",
    "n_scored", "n_words_read", "p_none_read")
#: The unread stratum of a weight trial (docs/report.md): sampled faulted words the evaluation
#: reads, and the exact chance that sampling draws none of them.
UNREAD_COLUMNS: tuple[str, ...] = ("n_words_read", "p_none_read")
#: Fixed columns of a result row after the metric columns.
RESULT_TAIL: tuple[str, ...] = ("status", "error", "worker", "device", "started_at",
                                "duration_s", "version")
#: Fixed columns of a golden row (one fault-free evaluation per model and mitigation).
GOLDEN_HEAD: tuple[str, ...] = ("campaign", "model", "mitigation")
GOLDEN_TAIL: tuple[str, ...] = ("worker", "device", "started_at", "duration_s", "version")

#: Names a metric or attribute may not take (they are columns of every row; ``kind`` is the
#: report's).
RESERVED: frozenset[str] = frozenset(RESULT_HEAD + RESULT_TAIL) | {"kind"}

#: The key under which a training trial's row carries its per-step telemetry (a list of dicts,
#: one per step); the writer takes it out of the row and stores it as the step table.
STEPS_KEY = "_step_rows"

#: The prefix of a golden trajectory's ``trial_id`` in the golden step table (a real trial id
#: is 16 hex digits, so it never contains "/").
GOLDEN_TRIAL_PREFIX = "golden/"


def golden_trial_id(model: str, mitigation: str) -> str:
    """The ``trial_id`` of the golden (fault-free) training trajectory of (model, mitigation)
    in the golden step table: ``golden/<model>/<mitigation>``.

    Example:
        >>> golden_trial_id("gpt", "none")
        'golden/gpt/none'
    """
    return f"{GOLDEN_TRIAL_PREFIX}{model}/{mitigation}"

#: The outcome classes of a training trial (``pytei_ray.training.OUTCOMES``, spelled here for
#: the report, which imports no torch): one 0/1 metric column each.
OUTCOME_CLASSES: tuple[str, ...] = ("masked", "spike_and_recover", "silent_degradation",
                                    "divergence", "immediate_nonfinite")

#: The prefix of the column that holds a metric's golden (fault-free) value.
GOLDEN_PREFIX = "golden_"


def golden_column(metric: str) -> str:
    """The column of ``metric``'s golden value: ``golden_<metric>``."""
    return GOLDEN_PREFIX + metric


def metric_of_golden(column: str) -> str | None:
    """The metric whose golden value ``column`` holds, or None for any other column."""
    return column[len(GOLDEN_PREFIX):] if column.startswith(GOLDEN_PREFIX) else None


def golden_metrics(columns: Iterable[str]) -> list[str]:
    """The metrics of the ``golden_<m>`` columns among ``columns``, in their order."""
    return [m for m in map(metric_of_golden, columns) if m is not None]


def same_value(a: float, b: float) -> bool:
    """Two metric values are the same bit for bit (NaN equals NaN; 0.0 differs from -0.0).

    The worker's determinism check and the driver's golden-drift check both ask this, so they
    cannot disagree.

    Example:
        >>> same_value(float("nan"), float("nan")), same_value(0.0, -0.0), same_value(1.0, 1.0)
        (True, False, True)
    """
    return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))


def same_metrics(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Two metric dicts are the same bit for bit: the same names in the same order, each value
    :func:`same_value`."""
    return list(a) == list(b) and all(same_value(x, y) for x, y in zip(a.values(), b.values()))
