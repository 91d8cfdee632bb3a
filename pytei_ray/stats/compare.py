"""Mitigation vs none on paired trials: the mean paired difference and the recovered share.

The trials of one (point, repetition) see the SAME faults under every mitigation, so the
question "does the mitigation help" is about the paired difference ``D = s (x_mit - x_none)``
(``s = +1`` when higher is better, ``-1`` otherwise: ``D > 0`` means the mitigation helps), and
the recovered share of the loss is a ratio of means:

    delta  = E[D]                         = p0 * s (g_mit - g_none) + (1 - p0) * E[D | fault]
    lost   = E[s (g_none - x_none)]       = (1 - p0) * E[L | fault]     (fault-free: no loss)
    recovery = delta / lost               (1 = all the loss recovered, 0 = no help, < 0 worse)

``g`` are the golden values (a fault-free pair is the two golden runs, exactly). For a bounded
metric on ``[a, b]``, ``D`` lies in ``[a - b, b - a]`` and ``L`` in ``s (g_none - [a, b])``, so
both faulted means get the betting confidence sequence of
:func:`~pytei_ray.stats.betting.betting_cs` (time-uniform, any distribution) mapped through
the known ``p0``. The difference's interval is at ``confidence``. The recovery's interval is
the range of ``delta / lost`` over the box of the two intervals, each at
``1 - (1 - confidence) / 2``: both hold together with probability >= ``confidence``
(Bonferroni), so the ratio's interval does too; it is unbounded when ``lost`` may be 0.
A pair whose unmitigated metric is non-finite is a catastrophe: it counts with the range's
worst value, never dropped. A failed trial (no outcome) drops its pair.

Unbounded metrics: the same formulas over the pairs whose two metrics are finite, with
Student-t intervals (``method`` says so; no finite-sample guarantee).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pytei_ray.columns import UNREAD_COLUMNS

from .honest import estimate_cell
from .intervals import check_confidence
from .judge import known_stratum
from .metrics import Metric

__all__ = ["PairedComparison", "compare_mitigations", "paired_comparison"]


@dataclass(frozen=True)
class PairedComparison:
    """A mitigation against the baseline on paired trials (see the module docstring).

    Attributes:
        delta: Mean paired difference (> 0: the mitigation helps).
        delta_low: Lower end of its interval (level ``confidence``).
        delta_high: Upper end.
        lost: Mean loss of the baseline against its golden value.
        recovery: ``delta / lost`` (NaN when ``lost`` is 0 or unknown).
        recovery_low: Lower end of its interval (level ``confidence``; -inf when unknown).
        recovery_high: Upper end (inf when unknown).
        pairs: Pairs used (both trials ran).
        faulted: Of those, pairs with at least one sampled fault.
        catastrophes: Pairs whose baseline metric is non-finite (counted, at the worst value
            for a bounded metric; left out, with the other non-finite pairs, when unbounded).
        p0: Probability of a fault-free pair used (0 when unknown).
        confidence: Level of both intervals.
        method: ``"p0-cs"``/``"cs"`` (bounded) or ``"p0-t-finite"``/``"t-finite"``.
    """

    delta: float
    delta_low: float
    delta_high: float
    lost: float
    recovery: float
    recovery_low: float
    recovery_high: float
    pairs: int
    faulted: int
    catastrophes: int
    p0: float
    confidence: float
    method: str


def _ratio_box(d: tuple[float, float], lost: tuple[float, float]) -> tuple[float, float]:
    """Range of ``delta / lost`` over the box ``d x lost`` (unbounded unless ``lost > 0``)."""
    if not lost[0] > 0 or not all(math.isfinite(v) for v in (*d, *lost)):
        return -math.inf, math.inf
    corners = [a / b for a in d for b in lost]
    return min(corners), max(corners)


def paired_comparison(
    mitigated: np.ndarray,
    baseline: np.ndarray,
    golden_mitigated: float,
    golden_baseline: float,
    faulted: np.ndarray | None,
    p0: float | None,
    *,
    metric: Metric,
    confidence: float = 0.95,
    ok: np.ndarray | None = None,
) -> PairedComparison:
    """Compare a mitigation with the baseline on paired trials, in repetition order.

    Args:
        mitigated: Metric per pair under the mitigation.
        baseline: Metric per pair without it (same faults).
        golden_mitigated: Fault-free metric under the mitigation.
        golden_baseline: Fault-free metric without it.
        faulted: Per pair, at least one fault was sampled; None when unknown.
        p0: Probability of a fault-free pair, or None (unknown: every pair is faulted).
        metric: Range and direction (:func:`~pytei_ray.stats.resolve_metric`).
        confidence: Level of each reported interval.
        ok: Per pair, both trials ran; all True when None.

    Returns:
        A :class:`PairedComparison`.

    Example:
        >>> acc = Metric(bounds=(0.0, 1.0), higher_is_better=True)
        >>> none = np.where(np.arange(1000) % 10 == 0, 0.1, 0.8)    # 1 in 10 pairs collapses
        >>> c = paired_comparison(np.full(1000, 0.8), none, 0.8, 0.8, np.ones(1000, bool), 0.0,
        ...                       metric=acc)                # the mitigation restores every one
        >>> round(c.delta, 3), round(c.delta_low, 3), c.recovery, round(c.recovery_low, 2)
        (0.07, 0.051, 1.0, 0.5)
    """
    check_confidence(confidence)
    xm = np.asarray(mitigated, dtype=float)
    xb = np.asarray(baseline, dtype=float)
    if xm.shape != xb.shape or xm.ndim != 1:
        raise ValueError(f"Expected paired 1-D arrays of one length, but got shapes {xm.shape} "
                         f"and {xb.shape}.")
    ran = np.ones(xm.shape, bool) if ok is None else np.asarray(ok, dtype=bool)
    known = p0 is not None and math.isfinite(p0) and faulted is not None
    hit = np.asarray(faulted, dtype=bool) if known else np.ones(xm.shape, bool)
    s = -1.0 if metric.higher_is_better is False else 1.0
    gm, gb = float(golden_mitigated), float(golden_baseline)
    catastrophes = int((ran & ~np.isfinite(xb)).sum())
    half = 1.0 - (1.0 - confidence) / 2.0
    if metric.bounded:
        a, b = metric.bounds
        worst = a if s > 0 else b
        xm, xb = (np.where(np.isfinite(v), v, worst) for v in (xm, xb))
        d_metric = Metric(bounds=(a - b, b - a), higher_is_better=True)
        l_bounds = (gb - b, gb - a) if s > 0 else (a - gb, b - gb)
        l_metric = Metric(bounds=l_bounds, higher_is_better=False)
        method = "p0-cs" if known else "cs"
    else:
        both = np.isfinite(xm) & np.isfinite(xb)
        ran = ran & both
        d_metric = l_metric = Metric(bounds=(-math.inf, math.inf), higher_is_better=True)
        method = "p0-t-finite" if known else "t-finite"
    d = s * (xm - xb)
    loss = s * (gb - xb)
    pk = p0 if known else None
    fk = hit if known else None
    kw = dict(faulted=fk, p0=pk, ok=ran)
    d_est = estimate_cell(d, s * (gm - gb), metric=d_metric, confidence=confidence, **kw)
    d_half = estimate_cell(d, s * (gm - gb), metric=d_metric, confidence=half, **kw)
    l_half = estimate_cell(loss, 0.0, metric=l_metric, confidence=half, **kw)
    lost = l_half.mean
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = d_est.mean / lost if lost > 0 else math.nan
    r_lo, r_hi = _ratio_box((d_half.low, d_half.high), (l_half.low, l_half.high))
    return PairedComparison(d_est.mean, d_est.low, d_est.high, lost, rec, r_lo, r_hi,
                            int(ran.sum()), int((ran & hit).sum()), catastrophes,
                            float(p0) if known else 0.0, confidence, method)


def compare_mitigations(
    df: pd.DataFrame,
    metric: str,
    pair_on: Sequence[str],
    baseline: str,
    *,
    info: Metric,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """:func:`paired_comparison` of every mitigation with ``baseline``, per cell of ``df``.

    Args:
        df: Result rows: ``mitigation``, ``metric``, ``golden_<metric>``, ``status``, the
            ``pair_on`` columns (one of them ``repetition``: the order of the pairs), and
            ``n_faults_sampled`` / ``p_no_fault`` when known.
        metric: Metric column.
        pair_on: Columns that identify a pair of trials with the same faults.
        baseline: ``mitigation`` value of the unmitigated trials.
        info: The metric's range and direction (:func:`~pytei_ray.stats.resolve_metric`).
        confidence: Level of the intervals.

    Returns:
        One row per (cell, mitigation): the cell columns (``pair_on`` without
        ``repetition``), ``mitigation`` and the fields of :class:`PairedComparison`.
    """
    keys = list(pair_on)
    cell = [c for c in keys if c != "repetition"]
    fields = list(PairedComparison.__dataclass_fields__)
    if df.empty or baseline not in set(df["mitigation"]):
        return pd.DataFrame(columns=[*cell, "mitigation", *fields])
    gcol = f"golden_{metric}"
    extra = [c for c in ("n_faults_sampled", "p_no_fault", *UNREAD_COLUMNS) if c in df]
    rows = df[[*keys, "mitigation", "status", metric, gcol, *extra]].copy()
    rows[metric] = pd.to_numeric(rows[metric], errors="coerce")
    rows["ok"] = rows["status"].eq("ok")
    base = rows[rows["mitigation"] == baseline].drop_duplicates(keys, keep="last")
    mits = rows[rows["mitigation"] != baseline].drop_duplicates([*keys, "mitigation"],
                                                                keep="last")
    pairs = mits.merge(base.drop(columns="mitigation"), on=keys, suffixes=("", "_b"))
    out = []
    for key, g in pairs.groupby([*cell, "mitigation"], sort=True, dropna=False):
        g = g.sort_values("repetition") if "repetition" in g else g
        if set(UNREAD_COLUMNS) <= set(g) and g[list(UNREAD_COLUMNS)].isna().any(axis=None):
            # the mitigated arm is not proven golden on the baseline's unread stratum
            g = g.drop(columns=[c + "_b" for c in UNREAD_COLUMNS])
        faulted, p0 = known_stratum(g, "_b")
        golds = [pd.to_numeric(g[c], errors="coerce").dropna() for c in (gcol, f"{gcol}_b")]
        if any(x.empty for x in golds):
            continue  # no golden value: nothing to compare against
        res = paired_comparison(
            g[metric].to_numpy(float), g[f"{metric}_b"].to_numpy(float), float(golds[0].iloc[0]),
            float(golds[1].iloc[0]), faulted, p0, metric=info, confidence=confidence,
            ok=(g["ok"] & g["ok_b"]).to_numpy())
        out.append({**dict(zip([*cell, "mitigation"], key)), **vars(res)})
    return pd.DataFrame(out, columns=[*cell, "mitigation", *fields])
