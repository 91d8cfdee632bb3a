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

import numpy as np
import pandas as pd

from pytei_ray.columns import POINT_FACTORS, UNREAD_COLUMNS, golden_column

from .honest import CellJudgement, judge_cell_cs
from .metrics import Metric, resolve_metric
from .precision import Precision

__all__ = ["POINT_COLS", "CellJudgement", "cell_inputs", "judge_cell", "judge_cells",
           "known_stratum", "open_points", "stopped_at_cap", "stratum_label",
           "without_unread"]

#: Columns that identify a point of the grid (the driver adds repetitions per point).
POINT_COLS = POINT_FACTORS


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
    sequential: bool = False,
    metric: Metric | None = None,
) -> CellJudgement:
    """Estimate a cell and decide whether it is conclusive (:func:`judge_cell_cs`).

    With a ``precision`` target the cell is conclusive iff the targeted half-width is at most
    the target: the mean's (absolute, or relative to |golden|; the largest distance from the
    mean to an end of its interval) or the SDC rate's. Without one (fixed-count campaigns) it
    is conclusive iff it has at least 2 trials and the mean's interval does not contain the
    SDC threshold level ``golden * (1 -+ threshold)``. A bounded metric gets a confidence
    sequence at ``confidence``, valid at every look: an adaptive campaign judges it with NO
    correction for its looks.

    Args:
        values: Metric per trial, in repetition order (NaN for failed trials).
        golden: Fault-free metric: one value, or one per trial (SDC is judged per trial).
        faulted: Per trial, at least one fault was sampled; None when unknown.
        p0: Probability of a fault-free trial, or None when unknown.
        precision: Target of an adaptive campaign, or None.
        confidence: Level of the intervals.
        bounds: Range of the metric, or None (unbounded); ignored when ``metric`` is given.
        higher_is_better: Metric direction; ignored when ``metric`` is given.
        threshold: Relative drop below golden that counts as an SDC.
        level_confidence: Level of an UNBOUNDED metric's Student-t interval (not time-uniform:
            an adaptive campaign passes ``precision.look_confidence(min_reps)``, Bonferroni
            over its looks); ``confidence`` when None.
        ok: Per trial, whether it ran (False: failed, left out); all True when None.
        nonfinite_as_sdc: An ok trial with a non-finite metric counts as SDC.
        sequential: Judged at several looks (adaptive rounds): the SDC rate gets a
            time-uniform interval too.
        metric: Declared or resolved range and direction (:func:`resolve_metric`).

    Returns:
        A :class:`CellJudgement`.

    Example:
        Ten faulted trials that all lost 10% cannot exclude a rare trial near golden; forty can:

        >>> j = judge_cell(np.full(10, 0.9), 1.0, np.ones(10, bool), 0.0, bounds=(0.0, 1.0))
        >>> j.conclusive, j.estimate.mean, j.sdc, j.reason
        (False, 0.9, 10, 'interval contains the SDC threshold 0.99')
        >>> j = judge_cell(np.full(40, 0.9), 1.0, np.ones(40, bool), 0.0, bounds=(0.0, 1.0))
        >>> j.conclusive, j.reason
        (True, 'interval below the SDC threshold 0.99')
    """
    info = metric if metric is not None else Metric(
        bounds=bounds if bounds is not None else (-math.inf, math.inf),
        higher_is_better=bool(higher_is_better))
    return judge_cell_cs(values, golden, faulted, p0, metric=info, precision=precision,
                         confidence=confidence, threshold=threshold, ok=ok,
                         nonfinite_as_sdc=nonfinite_as_sdc, sequential=sequential,
                         t_confidence=level_confidence)


def cell_inputs(g: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray | None, float | None]:
    """``(values, golden, ok, faulted, p0)`` of a cell's result rows, for :func:`judge_cell`.

    In ``repetition`` order (the confidence sequence bets on the past; rows arrive in any
    order). Failed rows (``status != 'ok'``) get a NaN metric. ``faulted`` and ``p0`` come from
    the ``n_words_read`` and ``p_none_read`` columns when every row of the cell has them and one
    ``p_none_read`` (a trial whose faults the evaluation does not read is the golden run, with
    that known chance: the unread stratum), else from ``n_faults_sampled`` and ``p_no_fault``;
    both are None when a column is missing (older datasets), has no value, or when
    ``p_no_fault`` differs within the cell (a grouping across BERs): the cell mean is then
    estimated without it.
    """
    if "repetition" in g and not g["repetition"].is_monotonic_increasing:
        g = g.sort_values("repetition", kind="stable")
    ok = g["status"].eq("ok").to_numpy() if "status" in g else np.ones(len(g), bool)
    values = pd.to_numeric(g[metric], errors="coerce").to_numpy(float)
    values = np.where(ok, values, np.nan)
    golden = pd.to_numeric(g[golden_column(metric)], errors="coerce").to_numpy(float)
    faulted, p0 = known_stratum(g)
    return values, golden, ok, faulted, p0


def _one_value(col: pd.Series, complete: bool) -> float | None:
    p = pd.to_numeric(col, errors="coerce").to_numpy(float)
    if complete and not np.isfinite(p).all():
        return None
    p = p[np.isfinite(p)]
    if not p.size or not np.allclose(p, p[0], rtol=1e-9, atol=1e-12):
        return None
    return float(p[0])


def _stratum(g: pd.DataFrame, suffix: str) -> tuple[str, str, float] | None:
    """``(count column, chance column, chance)`` of the known golden stratum (see
    :func:`known_stratum`), or None."""
    read, p_read = (c + suffix for c in UNREAD_COLUMNS)
    if {read, p_read} <= set(g) and g[read].notna().all():
        p = _one_value(g[p_read], complete=True)
        if p is not None:
            return read, p_read, p
    sampled, p_none = "n_faults_sampled" + suffix, "p_no_fault" + suffix
    if {sampled, p_none} <= set(g):
        p = _one_value(g[p_none], complete=False)
        if p is not None:
            return sampled, p_none, p
    return None


def stratum_label(g: pd.DataFrame, p0: float | None) -> str:
    """What the known golden stratum of a cell is, for tables, given its chance ``p0`` (from
    :func:`cell_inputs`): ``"fault-free"`` (trials with no fault, also an unread stratum of the
    same chance: weights every sample reads), ``"unread"`` (trials whose faults the evaluation
    does not read), or ``""`` (none known: ``p0`` is None)."""
    if p0 is None:
        return ""
    none = _one_value(g["p_no_fault"], complete=False) if "p_no_fault" in g else None
    return "fault-free" if none is not None and math.isclose(none, p0, rel_tol=1e-12,
                                                             abs_tol=0.0) else "unread"


def known_stratum(g: pd.DataFrame, suffix: str = "") -> tuple[np.ndarray | None, float | None]:
    """``(faulted, p0)`` of a cell's rows: which trials are outside the known golden stratum
    (``n_words_read``/``p_none_read``, the unread stratum, when every row has both and one
    chance, else ``n_faults_sampled``/``p_no_fault`` when the rows have one chance), and its exact
    probability; ``(None, None)`` when unknown. ``suffix`` reads the columns of a merged frame
    (``"_b"``: a pair's baseline)."""
    found = _stratum(g, suffix)
    if found is None:
        return None, None
    count, _, p0 = found
    return pd.to_numeric(g[count], errors="coerce").fillna(1).to_numpy() > 0, p0


def without_unread(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without the unread-stratum columns: how a campaign run with
    ``stratify_unread=False`` is judged (its rows keep them; its rule did not use them)."""
    return df.drop(columns=[c for c in UNREAD_COLUMNS if c in df])


def judge_cells(
    rows: pd.DataFrame,
    precision: Precision,
    min_reps: int,
    point_cols: Sequence[str] = POINT_COLS,
    *,
    mitigation_col: str = "mitigation",
    bounds: tuple[float, float] | None = None,
    adaptive: bool = True,
    metric: Metric | None = None,
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
        bounds: Range of the metric; guessed from its name and the values in ``rows`` when None
            (a side an observed value crosses is dropped).
        adaptive: The cells are judged at each look of an adaptive campaign: bounded metrics
            (confidence sequences) at ``precision.confidence`` all the same, unbounded ones
            (Student-t) at ``precision.look_confidence(min_reps)``, and the SDC rate with a
            time-uniform interval. False: one look at ``precision.confidence`` (a fixed grid).
        metric: The campaign's declaration for ``precision.metric`` (bounds, direction): its
            values are checked against its bounds (:meth:`Metric.check`); None: guessed.

    Yields:
        ``(key, group, judgement)``: ``key`` holds the point columns present, then the
        mitigation; ``group`` the cell's rows.
    """
    name = precision.metric
    cols = [c for c in point_cols if c in rows]
    observed = np.concatenate([
        pd.to_numeric(rows[name], errors="coerce").to_numpy(float),
        pd.to_numeric(rows[golden_column(name)], errors="coerce").to_numpy(float)])
    declared = metric or Metric()
    info = resolve_metric(name, Metric(bounds if bounds is not None else declared.bounds,
                                       declared.higher_is_better), observed)
    if precision.higher_is_better is not None:
        info = Metric(info.bounds, precision.higher_is_better)
    level = precision.look_confidence(min_reps) if adaptive else precision.confidence
    keys = cols + ([mitigation_col] if mitigation_col in rows else [])
    for key, g in rows.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        values, golden, ok, faulted, p0 = cell_inputs(g, name)
        yield key, g, judge_cell(values, golden, faulted, p0, precision=precision,
                                 confidence=precision.confidence, metric=info,
                                 threshold=precision.threshold, level_confidence=level,
                                 ok=ok, sequential=adaptive)


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
    metric: Metric | None = None,
) -> set[tuple]:
    """Points that need more repetitions after look number ``look`` of an adaptive campaign.

    Only rows with ``repetition < looks[look]`` count (the rounds complete at that look), so the
    decision is a pure function of the campaign and its stopping rule. A point is open when any
    mitigation's cell of ``precision.metric`` is not conclusive (:func:`judge_cells`, adaptive:
    a bounded metric's confidence sequence needs no correction for the looks), unless
    ``looks[look]`` already is ``max_reps``.

    Args:
        frame: Result rows (``status``, ``repetition``, the metric and ``golden_<metric>``,
            ``n_faults_sampled`` / ``p_no_fault`` when known, ``mitigation``, point columns).
        precision: The stopping rule.
        min_reps: Repetitions of the first look.
        look: Index into ``precision.looks(min_reps)``.
        point_cols: Columns identifying a point (those missing from ``frame`` are skipped).
        mitigation_col: Column of the mitigation (cells of a point differ only in it).
        bounds: Range of the metric; guessed from its name and the observed values when None.
        metric: The campaign's declaration of ``precision.metric``, or None.

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
        rows, precision, min_reps, point_cols, mitigation_col=mitigation_col, bounds=bounds,
        metric=metric) if not verdict.conclusive}
