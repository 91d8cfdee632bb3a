"""The one definition of a *conclusive* cell, shared by the report and the adaptive driver.

A cell is one (point, mitigation): the trials of one model, target, error model, BER (and extra
factors) under one mitigation. :func:`judge_cell` says whether its estimate is tight enough;
:func:`open_points` applies it to a results frame at one look of an adaptive campaign and names
the points that get more repetitions (every mitigation of a point together, so the mitigations
keep seeing the same faults).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pytei_ray.columns import POINT_FACTORS, golden_column

from .estimate import MeanEstimate, estimate_mean, estimate_rate
from .metrics import checked_bounds
from .metrics import higher_is_better as guess_direction
from .precision import Precision

__all__ = ["POINT_COLS", "CellJudgement", "cell_inputs", "judge_cell", "judge_cells",
           "open_points", "stopped_at_cap"]

#: Columns that identify a point of the grid (the driver adds repetitions per point).
POINT_COLS = POINT_FACTORS


@dataclass(frozen=True)
class CellJudgement:
    """What a cell's trials let one conclude.

    Attributes:
        estimate: The mean and its interval (:func:`~pytei_ray.stats.estimate_mean`).
        sdc: Trials counted as SDC (among ok faulted trials).
        sdc_rate: SDC rate (:func:`~pytei_ray.stats.estimate_rate`).
        sdc_low: Lower end of its interval.
        sdc_high: Upper end of its interval.
        confidence: Level the intervals were computed at.
        conclusive: Whether the cell is settled (see :func:`judge_cell`).
        reason: Why, in a few words (``"half-width 0.012 > 0.005"``).
    """

    estimate: MeanEstimate
    sdc: int
    sdc_rate: float
    sdc_low: float
    sdc_high: float
    confidence: float
    conclusive: bool
    reason: str


def _g(x: float) -> str:
    return f"{x:.3g}"


def judge_cell(
    values: np.ndarray,
    golden: float | np.ndarray,
    faulted: np.ndarray | None,
    p0: float | None,
    *,
    precision: Precision | None = None,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
    higher_is_better: bool = True,
    threshold: float = 0.01,
    level_confidence: float | None = None,
    ok: np.ndarray | None = None,
    nonfinite_as_sdc: bool = True,
) -> CellJudgement:
    """Estimate a cell and decide whether it is conclusive.

    With a ``precision`` target the cell is conclusive iff the targeted half-width is at most
    the target: the mean's (absolute, or relative to |golden|) or the SDC rate's. Without one
    (fixed-count campaigns) it is conclusive iff it has at least 2 finite trials and the mean's
    interval does not contain the SDC threshold level ``golden * (1 -+ threshold)``: one can
    tell whether the mean dropped by more than ``threshold``.

    Args:
        values: Metric per trial (NaN for failed trials).
        golden: Fault-free metric: one value, or one per trial (SDC is judged per trial).
        faulted: Per trial, at least one fault was sampled; None when unknown.
        p0: Probability of a fault-free trial, or None when unknown (plain Student-t).
        precision: Target of an adaptive campaign, or None.
        confidence: Level of the intervals when ``level_confidence`` is None.
        bounds: Natural range of the metric, or None.
        higher_is_better: Metric direction (decides which way a drop is an SDC).
        threshold: Relative drop below golden that counts as an SDC.
        level_confidence: Level to compute the intervals at instead of ``confidence``: an
            adaptive campaign passes ``precision.look_confidence(min_reps)``.
        ok: Per trial, whether it ran (False: failed, left out of the SDC rate); all True when
            None.
        nonfinite_as_sdc: An ok trial with a non-finite metric counts as SDC.

    Returns:
        A :class:`CellJudgement`.

    Example:
        >>> j = judge_cell(np.full(10, 0.9), 1.0, np.ones(10, bool), 0.0, bounds=(0.0, 1.0))
        >>> j.conclusive, j.estimate.mean, j.sdc, j.reason
        (True, 0.9, 10, 'interval below the SDC threshold 0.99')
    """
    level = confidence if level_confidence is None else level_confidence
    x = np.asarray(values, dtype=float)
    ran = np.ones(x.shape, bool) if ok is None else np.asarray(ok, dtype=bool)
    if np.ndim(golden) == 0:
        gold = float(golden)
        golds = np.full(x.shape, gold)
    else:
        golds = np.asarray(golden, dtype=float)
        seen = golds[np.isfinite(golds)]
        gold = float(seen.mean()) if seen.size else math.nan
    known = p0 is not None and math.isfinite(p0) and faulted is not None
    hit = np.asarray(faulted, dtype=bool) if known else np.ones(x.shape, bool)
    est = estimate_mean(x, gold, hit if known else None, p0 if known else None, level, bounds)
    sign = 1.0 if higher_is_better else -1.0
    finite = np.isfinite(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = sign * (golds - x) / np.maximum(np.abs(golds), np.finfo(float).tiny)
    sdc = finite & (rel > threshold)
    if nonfinite_as_sdc:
        sdc |= ~finite
    counted = ran & hit
    k = int((sdc & counted).sum())
    rate, s_lo, s_hi = estimate_rate(k, int(counted.sum()), p0 if known else None, level)
    scale = abs(gold) if math.isfinite(gold) and gold != 0 else 1.0
    half = est.halfwidth
    if precision is not None and precision.on == "sdc_rate":
        width = (s_hi - s_lo) / 2.0
        conclusive = width <= precision.halfwidth
        reason = f"SDC-rate half-width {_g(width)} {'<=' if conclusive else '>'} " \
                 f"{_g(precision.halfwidth)}"
    elif precision is not None:
        target = precision.halfwidth * (scale if precision.relative else 1.0)
        conclusive = est.n > 0 and bool(half <= target)
        reason = "no finite metric" if est.n == 0 else \
            f"half-width {_g(half)} {'<=' if conclusive else '>'} {_g(target)}"
    else:
        boundary = gold - sign * threshold * scale  # metric value at the SDC threshold
        if est.n < 2:
            conclusive, reason = False, ("no finite metric" if est.n == 0 else
                                         "fewer than 2 finite trials")
        elif est.low <= boundary <= est.high:
            conclusive, reason = False, f"interval contains the SDC threshold {_g(boundary)}"
        else:
            conclusive = True
            reason = f"interval {'below' if est.high < boundary else 'above'} the SDC " \
                     f"threshold {_g(boundary)}"
    return CellJudgement(est, k, rate, s_lo, s_hi, level, bool(conclusive), reason)


def cell_inputs(g: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray | None, float | None]:
    """``(values, golden, ok, faulted, p0)`` of a cell's result rows, for :func:`judge_cell`.

    Failed rows (``status != 'ok'``) get a NaN metric. ``faulted`` and ``p0`` come from the
    ``n_faults_sampled`` and ``p_no_fault`` columns; both are None when a column is missing
    (older datasets), has no value, or when ``p_no_fault`` differs within the cell (a grouping
    across BERs): the cell mean is then estimated without it.
    """
    ok = g["status"].eq("ok").to_numpy() if "status" in g else np.ones(len(g), bool)
    values = pd.to_numeric(g[metric], errors="coerce").to_numpy(float)
    values = np.where(ok, values, np.nan)
    golden = pd.to_numeric(g[golden_column(metric)], errors="coerce").to_numpy(float)
    if not {"p_no_fault", "n_faults_sampled"} <= set(g):
        return values, golden, ok, None, None
    p = pd.to_numeric(g["p_no_fault"], errors="coerce").to_numpy(float)
    p = p[np.isfinite(p)]
    if not p.size or not np.allclose(p, p[0], rtol=1e-9, atol=1e-12):
        return values, golden, ok, None, None
    faulted = pd.to_numeric(g["n_faults_sampled"], errors="coerce").fillna(1).to_numpy() > 0
    return values, golden, ok, faulted, float(p[0])


def judge_cells(
    rows: pd.DataFrame,
    precision: Precision,
    min_reps: int,
    point_cols: Sequence[str] = POINT_COLS,
    *,
    mitigation_col: str = "mitigation",
    bounds: tuple[float, float] | None = None,
    adaptive: bool = True,
) -> Iterator[tuple[tuple, pd.DataFrame, CellJudgement]]:
    """Judge every cell (point x mitigation) of ``precision.metric`` in ``rows`` by the rule.

    The one loop behind :func:`open_points`, the run summary's cells at the cap
    (:func:`pytei_ray.campaign.rounds.cells_at_cap`) and the adaptive benchmark.

    Args:
        rows: Result rows (see :func:`open_points`).
        precision: The stopping rule.
        min_reps: Repetitions of the first look (sets the look level).
        point_cols: Columns identifying a point (those missing from ``rows`` are skipped).
        mitigation_col: Column of the mitigation (cells of a point differ only in it).
        bounds: Range of the metric; guessed from its name and the values in ``rows`` when None.
        adaptive: Judge at ``precision.look_confidence(min_reps)`` (an adaptive campaign's
            looks); False: at ``precision.confidence`` (one look, a fixed grid).

    Yields:
        ``(key, group, judgement)``: ``key`` holds the point columns present, then the
        mitigation; ``group`` the cell's rows.
    """
    metric = precision.metric
    cols = [c for c in point_cols if c in rows]
    if bounds is None:
        bounds = checked_bounds(metric, np.concatenate([
            pd.to_numeric(rows[metric], errors="coerce").to_numpy(float),
            pd.to_numeric(rows[golden_column(metric)], errors="coerce").to_numpy(float)]))
    higher = (guess_direction(metric) if precision.higher_is_better is None
              else precision.higher_is_better)
    level = precision.look_confidence(min_reps) if adaptive else precision.confidence
    keys = cols + ([mitigation_col] if mitigation_col in rows else [])
    for key, g in rows.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        values, golden, ok, faulted, p0 = cell_inputs(g, metric)
        yield key, g, judge_cell(values, golden, faulted, p0, precision=precision,
                                 confidence=precision.confidence, bounds=bounds,
                                 higher_is_better=higher, threshold=precision.threshold,
                                 level_confidence=level, ok=ok)


def stopped_at_cap(group: pd.DataFrame, judgement: CellJudgement, max_reps: int) -> bool:
    """Whether a cell is "at the cap": still inconclusive once it reached ``max_reps``
    repetitions (counted by the ``repetition`` column, so failed trials count and a coarser
    grouping does not). The run summary and the report list the same cells by this rule."""
    if judgement.conclusive or group.empty:
        return False
    if "repetition" not in group:
        return len(group) >= max_reps
    return int(pd.to_numeric(group["repetition"]).max()) + 1 >= max_reps


def open_points(
    frame: pd.DataFrame,
    precision: Precision,
    min_reps: int,
    look: int,
    point_cols: Sequence[str] = POINT_COLS,
    *,
    mitigation_col: str = "mitigation",
    bounds: tuple[float, float] | None = None,
) -> set[tuple]:
    """Points that need more repetitions after look number ``look`` of an adaptive campaign.

    Only rows with ``repetition < looks[look]`` count (the rounds complete at that look), so the
    decision is a pure function of the campaign and its stopping rule. A point is open when any
    mitigation's cell of ``precision.metric`` is not conclusive at
    ``precision.look_confidence(min_reps)``, unless ``looks[look]`` already is ``max_reps``.

    Args:
        frame: Result rows (``status``, ``repetition``, the metric and ``golden_<metric>``,
            ``n_faults_sampled`` / ``p_no_fault`` when known, ``mitigation``, point columns).
        precision: The stopping rule.
        min_reps: Repetitions of the first look.
        look: Index into ``precision.looks(min_reps)``.
        point_cols: Columns identifying a point (those missing from ``frame`` are skipped).
        mitigation_col: Column of the mitigation (cells of a point differ only in it).
        bounds: Range of the metric; guessed from its name and the observed values when None.

    Returns:
        Tuples of ``point_cols`` values (in the order given, missing columns left out).
    """
    looks = precision.looks(min_reps)
    if not 0 <= look < len(looks):
        raise IndexError(f"look {look} is not one of the {len(looks)} planned looks {looks}")
    if looks[look] >= precision.max_reps or frame.empty:
        return set()
    rows = frame[frame["repetition"] < looks[look]]
    n_cols = len([c for c in point_cols if c in rows])
    return {key[:n_cols] for key, _, verdict in judge_cells(
        rows, precision, min_reps, point_cols, mitigation_col=mitigation_col, bounds=bounds)
        if not verdict.conclusive}
