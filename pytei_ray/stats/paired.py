"""Paired comparisons: a mitigation's recovery against the unmitigated trial with the same faults.

Trials of one (model, target, error model, BER, repetition) see the same faults under every
mitigation (DESIGN decision 3), so a mitigation's effect is measured per pair of trials.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pytei_ray.columns import golden_column

from .metrics import higher_is_better

__all__ = ["paired_recovery"]


def paired_recovery(
    df: pd.DataFrame,
    metric: str,
    pair_on: Sequence[str],
    baseline: str,
    higher: bool | None = None,
    threshold: float = 0.0,
) -> pd.DataFrame:
    """Per-trial recovery of each mitigation against the unmitigated run with the same faults.

    Rows are paired on ``pair_on`` (e.g. model, target, error_model, ber, repetition): trials of
    one pair saw the same faults. For each pair where the baseline (unmitigated) trial lost
    more than ``threshold`` relative to |golden| (its metric is finite and worse than golden by
    that much; a tiny loss in the denominator would blow the ratio up), the recovery of
    mitigation ``m`` is ``(metric_m - metric_none) / (golden - metric_none)``: 1 = fully
    recovered, 0 = no help, negative = made it worse. Both signs flip together for
    lower-is-better metrics, so the formula holds in either direction. Only ``status == 'ok'``
    rows with a finite metric count.

    Args:
        df: Result rows with ``mitigation``, ``metric``, ``golden_<metric>`` and ``pair_on``.
        metric: Metric column.
        pair_on: Columns identifying a pair of trials with identical faults.
        baseline: Value of ``mitigation`` that means "no mitigation".
        higher: Metric direction; guessed from the name when None.
        threshold: Minimum relative loss of the baseline trial for a pair to count (the SDC
            threshold of the report; 0 = any loss).

    Returns:
        One row per (pair, mitigation != baseline): ``pair_on`` columns, ``mitigation``,
        ``golden``, ``baseline_metric``, ``metric``, ``lost``, ``recovery``.
    """
    higher = higher_is_better(metric) if higher is None else higher
    cols = [*pair_on, "mitigation", "metric", "golden"]
    if df.empty:
        return pd.DataFrame(columns=[*cols[:-2], "golden", "baseline_metric", "metric", "lost",
                                     "recovery"])
    ok = df["status"].eq("ok") if "status" in df else pd.Series(True, index=df.index)
    rows = df.loc[ok, [*pair_on, "mitigation", metric, golden_column(metric)]].copy()
    rows.columns = cols
    rows = rows[np.isfinite(rows["metric"].astype(float))]
    keys = list(pair_on)
    base = rows[rows["mitigation"] == baseline].drop(columns="mitigation")
    base = base.drop_duplicates(keys, keep="last").rename(columns={"metric": "baseline_metric"})
    sign = 1.0 if higher else -1.0
    base["lost"] = sign * (base["golden"] - base["baseline_metric"])
    scale = np.maximum(base["golden"].abs(), np.finfo(float).tiny)
    base = base[(base["lost"] > 0) & (base["lost"] / scale > threshold)]
    mit = rows[rows["mitigation"] != baseline].drop(columns="golden")
    mit = mit.drop_duplicates([*keys, "mitigation"], keep="last")
    out = mit.merge(base, on=keys, how="inner")
    out["recovery"] = (out["metric"] - out["baseline_metric"]) / (
        out["golden"] - out["baseline_metric"]
    )
    return out[[*keys, "mitigation", "golden", "baseline_metric", "metric", "lost", "recovery"]]
