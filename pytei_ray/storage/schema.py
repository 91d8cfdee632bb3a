"""Arrow schemas of the result rows and golden rows (see docs/CONTRACTS.md, "Result row").

Metric columns are dynamic (whatever ``evaluate`` returns) but always ``float64``; every part of a
results directory is written with the same schema, so any Parquet reader sees one table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from pytei_ray.columns import (
    GOLDEN_HEAD,
    GOLDEN_TAIL,
    RESERVED,
    RESULT_HEAD,
    RESULT_TAIL,
    golden_column,
    metric_of_golden,
)

__all__ = [
    "FACTOR_TYPES",
    "HEAD_FIELDS",
    "TAIL_FIELDS",
    "RESERVED",
    "RESULT_COLUMNS",
    "GOLDEN_COLUMNS",
    "result_schema",
    "steps_schema",
    "golden_schema",
    "rows_to_table",
    "metric_names",
    "metrics_of_schema",
]

_TS = pa.timestamp("us", tz="UTC")

#: Arrow type of each fixed column (the names and their order are :mod:`pytei_ray.columns`').
_TYPES: dict[str, pa.DataType] = {
    "campaign": pa.string(), "trial_id": pa.string(), "model": pa.string(),
    "target": pa.string(), "error_model": pa.string(), "ber": pa.float64(),
    "repetition": pa.int64(), "mitigation": pa.string(), "seed": pa.int64(),
    "n_faults": pa.int64(),  # fault sites that reached the weights (after mitigations)
    "n_words": pa.int64(), "n_nonfinite": pa.int64(),
    "n_faults_sampled": pa.int64(),  # fault sites sampled, before any mitigation
    "n_sites": pa.int64(),  # targeted fault sites: the N of Binomial(N, rate)
    "p_no_fault": pa.float64(),  # probability that sampling draws no fault
    "evaluated": pa.bool_(),  # False: no weight changed, golden metrics recorded
    "n_rescored": pa.int64(),  # samples re-scored (embedding faults); null: scored in full
    "n_scored": pa.int64(),  # samples of a subsampled full evaluation; null: all of them
    "n_words_read": pa.int64(),  # sampled faulted words the evaluation reads; null: unknown
    "p_none_read": pa.float64(),  # probability that sampling draws none of those
    "status": pa.string(), "error": pa.string(), "worker": pa.string(),
    "device": pa.string(), "started_at": _TS, "duration_s": pa.float64(),
    "version": pa.string(),
}


def _fields(names: tuple[str, ...]) -> tuple[pa.Field, ...]:
    return tuple(pa.field(n, _TYPES[n]) for n in names)


HEAD_FIELDS: tuple[pa.Field, ...] = _fields(RESULT_HEAD)
TAIL_FIELDS: tuple[pa.Field, ...] = _fields(RESULT_TAIL)
_GOLDEN_HEAD = _fields(GOLDEN_HEAD)
_GOLDEN_TAIL = _fields(GOLDEN_TAIL)

#: The fixed (non-metric) columns of a result row, in schema order.
RESULT_COLUMNS: tuple[str, ...] = RESULT_HEAD + RESULT_TAIL

#: The fixed (non-metric) columns of a golden row.
GOLDEN_COLUMNS: frozenset[str] = frozenset(GOLDEN_HEAD + GOLDEN_TAIL)


#: Arrow type of an attribute column (``Level`` attributes), by the campaign's type name.
FACTOR_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}


def result_schema(metrics: Sequence[str], factors: Mapping[str, str] | None = None) -> pa.Schema:
    """Schema of a result part: factors, fault stats, extra factor columns (``Level``
    attributes: name -> ``"int"``/``"float"``/``"str"``), ``<m>``, ``golden_<m>``,
    bookkeeping."""
    fields = list(HEAD_FIELDS)
    fields += [pa.field(name, FACTOR_TYPES[kind]) for name, kind in (factors or {}).items()]
    fields += [pa.field(m, pa.float64()) for m in metrics]
    fields += [pa.field(golden_column(m), pa.float64()) for m in metrics]
    fields += list(TAIL_FIELDS)
    return pa.schema(fields)


#: The step table of training trials (one row per trial and step; see
#: ``pytei_ray.training.StepRecord``): column -> Arrow type, in schema order.
_STEP_TYPES: dict[str, pa.DataType] = {
    "trial_id": pa.string(), "step": pa.int64(), "loss": pa.float64(),
    "grad_norm": pa.float64(), "update_norm": pa.float64(),
    "max_attention_logit": pa.float64(), "nonfinite_grads": pa.int64(),
    "nonfinite_params": pa.int64(), "action": pa.string(), "attempts": pa.int64(),
    "n_faults_sampled": pa.int64(), "n_faults": pa.int64(), "n_words_changed": pa.int64(),
    "n_nonfinite_faults": pa.int64(),
}


def steps_schema() -> pa.Schema:
    """Schema of a step part (``_steps/part-*.parquet``): the per-step telemetry of training
    trials, keyed by ``trial_id`` and ``step``."""
    return pa.schema([pa.field(n, t) for n, t in _STEP_TYPES.items()])


def golden_schema(metrics: Sequence[str]) -> pa.Schema:
    """Schema of a golden part: one fault-free evaluation per (model, mitigation)."""
    fields = list(_GOLDEN_HEAD) + [pa.field(m, pa.float64()) for m in metrics]
    return pa.schema(fields + list(_GOLDEN_TAIL))


def metric_names(rows: Iterable[Mapping[str, Any]], kind: str = "result",
                 factors: Iterable[str] = ()) -> list[str]:
    """Metric columns present in ``rows`` (keys that are neither fixed columns nor the extra
    factor columns ``factors``), first-seen order."""
    fixed = {f.name for f in (HEAD_FIELDS + TAIL_FIELDS if kind == "result"
                               else _GOLDEN_HEAD + _GOLDEN_TAIL)} | set(factors)
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in fixed and metric_of_golden(key) is None:
                seen[key] = None
    return list(seen)


def metrics_of_schema(schema: pa.Schema) -> list[str]:
    """Metric names of a stored result schema (the columns that have a ``golden_`` twin)."""
    names = set(schema.names)
    return [n for n in schema.names if golden_column(n) in names]


def rows_to_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema`` from row dicts (missing keys become null)."""
    columns = []
    for f in schema:
        values = [row.get(f.name) for row in rows]
        if pa.types.is_floating(f.type):
            values = [None if v is None else float(v) for v in values]
        columns.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(columns, schema=schema)
