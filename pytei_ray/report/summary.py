"""Summary tables of a campaign: per-cell statistics, mitigation recovery, cells needing more reps.

A *cell* is one combination of the factors (model, target, mitigation, BER; plus error_model and
any extra factor that has more than one value). Trial outcomes in a cell:

* ``failed``: ``status != 'ok'`` (no metric); every other count is over the ``ok`` trials.
* ``nonfinite``: ok trials whose metric is NaN/inf (the evaluation produced non-finite outputs).
  They are left out of the mean and its CI, and count as silent data corruption unless
  ``nonfinite_as_sdc=False``.
* ``sdc``: ok trials whose metric is worse than the trial's golden metric by more than
  ``threshold`` relative to it (``(golden - m) / |golden| > threshold`` when higher is better,
  ``(m - golden) / |golden| > threshold`` when lower is better). NaN (``sdc_method`` "n/a
  (subsampled)") in a cell with ``subsampled`` trials (scored on a random subset of the
  samples, ``n_scored``): their metric is an unbiased estimate, so the mean and its interval
  hold, but a per-trial verdict against a 1% threshold would be sampling noise.

Relaunch advice (:func:`suggest_repetitions`): an inconclusive cell whose estimated need exceeds
``ADVICE_FACTOR`` (10) times its current trials does not drive the suggestion: it sits *at the
threshold* (its mean is about the SDC level) or *at the floor* (trials that all agree would need
that many too: honest intervals exclude a rare collapse only slowly); either way more
repetitions will not settle it cheaply. The
suggestion is the largest need of the other cells, at least one more than now and at most
``ADVICE_FACTOR`` times the current repetitions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pytei_ray.columns import CELL_ORDER, FACTORS, golden_column

from ..stats import (
    Metric,
    Precision,
    cell_inputs,
    compare_mitigations,
    cs_faulted_needed,
    judge_cell,
    reps_for_halfwidth,
    resolve_metric,
    stopped_at_cap,
    student_t_ppf,
)
from ..stats import higher_is_better as guess_direction
from ..stats.judge import stratum_label, without_unread
from .data import Dataset, extra_factors, load_dataset, metric_columns

__all__ = ["ADVICE_FACTOR", "baseline_mitigation", "cell_keys", "recovery", "stopping_rule",
           "suggest_repetitions", "summarize"]

MAX_REPS = 10_000  # cap of a repetition estimate (a mean sitting on the threshold needs ~inf)
#: A cell needing more than this many times its current trials is "at the threshold": it does
#: not drive the relaunch advice, which is also capped at this many times the current count.
ADVICE_FACTOR = 10
BASELINE_NAMES = ("none", "", "no", "off", "null", "baseline", "unmitigated")

DirectionArg = bool | Mapping[str, bool] | None
BoundsArg = bool | Mapping[str, tuple[float, float]] | None
Source = pd.DataFrame | Dataset | str | os.PathLike[str]


def _frame(source: Source) -> tuple[pd.DataFrame, dict[str, Any]]:
    if isinstance(source, pd.DataFrame):
        return _prepare(source), {}
    ds = source if isinstance(source, Dataset) else load_dataset(source)
    df = _prepare(ds.frame)
    if ((ds.manifest or {}).get("spec") or {}).get("stratify_unread") is False:
        # the campaign's rule stratified on fault-free trials only: judge as it did
        df = without_unread(df)
    return df, ds.manifest


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    if "mitigation" in df and df["mitigation"].isna().any():
        df = df.assign(mitigation=df["mitigation"].fillna("none"))
    if "status" not in df:
        df = df.assign(status="ok")
    return df


def _direction(metric: str, higher: DirectionArg) -> bool:
    """Direction of ``metric``: a dict entry, else the dict's ``"*"`` entry, else the name."""
    if isinstance(higher, Mapping):
        if metric in higher:
            return bool(higher[metric])
        return bool(higher["*"]) if "*" in higher else guess_direction(metric)
    return guess_direction(metric) if higher is None else bool(higher)


def _dir(metric: str, higher: DirectionArg, declared: Mapping[str, Metric]) -> bool:
    """Direction: given (a bool or a dict entry), else declared by the campaign, else guessed."""
    given = isinstance(higher, bool) or (isinstance(higher, Mapping) and (
        metric in higher or "*" in higher))
    info = declared.get(metric)
    if not given and info is not None and info.higher_is_better is not None:
        return info.higher_is_better
    return _direction(metric, higher)


def _check_direction(df: pd.DataFrame, higher: DirectionArg) -> None:
    if isinstance(higher, Mapping):
        found = metric_columns(df)
        unknown = [m for m in higher if m != "*" and m not in found]
        if unknown:
            raise ValueError(
                f"Metric direction given for {unknown}, not metric(s) of the results.\n"
                f"  expected one of: {found}"
            )


def declared_metrics(manifest: Mapping[str, Any] | None) -> dict[str, Metric]:
    """The campaign's ``Metric`` declarations (``spec["metrics"]`` of its manifest)."""
    spec = (manifest or {}).get("spec")
    found = spec.get("metrics") if isinstance(spec, Mapping) else None
    return {k: Metric.from_spec(v) for k, v in found.items()} if isinstance(found, Mapping) \
        else {}


def _info(df: pd.DataFrame, metric: str, bounds: BoundsArg, higher: bool,
          declared: Mapping[str, Metric]) -> Metric:
    """Range and direction of ``metric``: ``bounds`` (a dict entry; False: unbounded), else
    the campaign's declaration (values outside it: an error naming the trial), else the name's
    guess kept only where every observed value (trials and golden) lies inside it (an accuracy
    stored in percent is not treated as [0, 1])."""
    if bounds is False:
        return Metric((-math.inf, math.inf), higher)
    given = bounds[metric] if isinstance(bounds, Mapping) and metric in bounds else None
    base = Metric(given) if given is not None else declared.get(metric, Metric())
    values = pd.to_numeric(df[metric], errors="coerce")
    if base.bounds is not None and "trial_id" in df:
        base.check(metric, values.to_numpy(float), trials=list(df["trial_id"]))
    info = resolve_metric(metric, base, pd.concat([
        values, pd.to_numeric(df[golden_column(metric)], errors="coerce")]).to_numpy(float))
    return Metric(info.bounds, higher)


def _metrics(df: pd.DataFrame, metric: str | Sequence[str] | None) -> list[str]:
    found = metric_columns(df)
    wanted = found if metric is None else [metric] if isinstance(metric, str) else list(metric)
    for m in wanted:
        if m not in found:
            raise ValueError(
                f"Metric {m!r} is not in the results (a metric column needs a golden_<m> twin).\n"
                f"  expected one of: {found}"
            )
    return wanted


def cell_keys(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> list[str]:
    """Columns that define a table cell: base factors present (error_model and extra factors
    only when they take more than one value)."""
    keys = [c for c in CELL_ORDER if c in df
            and (c != "error_model" or df[c].nunique(dropna=False) > 1)]
    extras = [c for c in extra_factors(df, manifest) if df[c].nunique(dropna=False) > 1]
    return keys + extras


def baseline_mitigation(values: Sequence[Any]) -> str | None:
    """The mitigation value meaning "unmitigated" (``'none'``, ``''``, ``'off'``...), if any."""
    for v in values:
        if isinstance(v, str) and v.strip().lower() in BASELINE_NAMES:
            return v
    return None


def stopping_rule(manifest: Mapping[str, Any] | None) -> tuple[Precision, int] | None:
    """``(precision, min_reps)`` of an adaptive campaign (its manifest's ``spec["stopping"]``),
    or None for a fixed-count campaign."""
    spec = (manifest or {}).get("spec")
    stop = spec.get("stopping") if isinstance(spec, Mapping) else None
    if not isinstance(stop, Mapping):
        return None
    return Precision.from_spec(dict(stop)), int(stop.get("min_reps", 1))


def _need(g: pd.DataFrame, j: Any, boundary: float, target: float | None, level: float
          ) -> tuple[int, int]:
    """Trials an inconclusive cell needs: the current interval's implied spread, scaled to the
    wanted half-width (0 = unknown: no finite metric, more of the same will not help); and, for
    a confidence sequence, the trials it needs even if every faulted trial agreed (its floor:
    trials that agree exclude a rare collapse only to ~log(2/alpha)/n of the range), else 0."""
    e = j.estimate
    if e.n == 0:
        return 0, 0
    half = e.halfwidth
    if e.n < 2 or not math.isfinite(half):  # too few (faulted) trials to see a spread
        need = 3 if e.p0 >= 1 else max(3, math.ceil(3 / (1 - e.p0)))
        return min(MAX_REPS, math.ceil(need * len(g) / e.n)), 0
    wanted = [t for t in (target,) if t is not None]
    if target is None and e.low <= boundary <= e.high:  # CI straddles the threshold
        wanted.append(abs(e.mean - boundary))
    if e.method in ("p0-cs", "cs") and wanted:  # faulted trials the sequence needs
        scale = max(1.0 - e.p0, 1e-12)
        n1, n0 = (cs_faulted_needed(sd, e.range_width, min(wanted) / scale, level)
                  for sd in (e.sd1, 0.0))
        return (min(MAX_REPS, math.ceil(n1 / scale)), min(MAX_REPS, math.ceil(n0 / scale)))
    std = half * math.sqrt(e.n) / student_t_ppf(0.5 + level / 2.0, e.n - 1)
    need = max(3, *(reps_for_halfwidth(std, t, level, MAX_REPS) for t in wanted)) if wanted \
        else len(g)
    # scaled up by the share of trials without a finite metric
    return min(MAX_REPS, math.ceil(need * len(g) / e.n)), 0


def _cell(g: pd.DataFrame, metric: str, info: Metric, threshold: float, confidence: float,
          nonfinite_as_sdc: bool, precision: Precision | None, level: float | None = None,
          cap: int | None = None) -> dict[str, Any]:
    values, golden, ok, faulted, p0 = cell_inputs(g, metric)
    j = judge_cell(values, golden, faulted, p0, precision=precision, confidence=confidence,
                   metric=info, threshold=threshold, level_confidence=level, ok=ok,
                   nonfinite_as_sdc=nonfinite_as_sdc, sequential=cap is not None)
    e = j.estimate
    m = values[ok]
    finite = np.isfinite(m)
    sign = 1.0 if info.higher_is_better else -1.0
    n_ok, n = int(ok.sum()), e.n
    gold = float(np.nanmean(golden)) if np.isfinite(golden).any() else math.nan
    scale = abs(gold) if math.isfinite(gold) and gold != 0 else 1.0
    boundary = gold - sign * threshold * scale  # metric value at the SDC threshold
    target = None
    if precision is not None and precision.on == "mean":
        target = precision.halfwidth * (scale if precision.relative else 1.0)
    need, floor = (len(g), 0) if j.conclusive else _need(g, j, boundary, target, j.confidence)
    costly = cap is None and not j.conclusive and need > ADVICE_FACTOR * len(g)
    row = {
        "trials": len(g), "failed": len(g) - n_ok, "ok": n_ok, "n": n, "golden": gold,
        "mean": e.mean, "ci_low": e.low, "ci_high": e.high, "mean_over": e.over,
        "median": float(np.median(m[finite])) if n else math.nan,
        "q25": float(np.quantile(m[finite], 0.25)) if n else math.nan,
        "q75": float(np.quantile(m[finite], 0.75)) if n else math.nan,
        "mean_loss": sign * (gold - e.mean), "rel_loss": sign * (gold - e.mean) / scale,
        "sdc": j.sdc, "sdc_rate": j.sdc_rate, "sdc_low": j.sdc_low, "sdc_high": j.sdc_high,
        "sdc_method": "betting-cs" if cap is not None else "clopper-pearson",
        "nonfinite": e.nonfinite, "nonfinite_rate": e.nonfinite_rate,
        "nonfinite_low": e.nonfinite_low, "nonfinite_high": e.nonfinite_high,
    }
    sampled = int(pd.to_numeric(g["n_scored"], errors="coerce").notna().sum()) \
        if "n_scored" in g else 0
    row["subsampled"] = sampled
    if sampled:  # a subset's metric is an estimate: a per-trial SDC verdict would be noise
        row.update(sdc=math.nan, sdc_rate=math.nan, sdc_low=math.nan, sdc_high=math.nan,
                   sdc_method="n/a (subsampled)")
    if "n_nonfinite" in g:
        nw = pd.to_numeric(g.loc[ok, "n_nonfinite"], errors="coerce").fillna(0).to_numpy()
        row["nonfinite_weights_rate"] = float((nw > 0).mean()) if n_ok else math.nan
    row.update(p0=e.p0 if p0 is not None else math.nan, n_faulted=e.n_faulted,
               p0_stratum=stratum_label(g, p0),
               ci_method=e.method, ci_level=j.confidence, guaranteed=e.guaranteed,
               conclusive=j.conclusive, inconclusive=not j.conclusive, reason=j.reason,
               reps_needed=int(need),
               at_threshold=bool(costly and floor <= ADVICE_FACTOR * len(g)),
               at_floor=bool(costly and floor > ADVICE_FACTOR * len(g)),
               at_cap=bool(cap is not None and stopped_at_cap(g, j, cap)))
    return row


def summarize(
    df_or_path: Source,
    metric: str | Sequence[str] | None = None,
    threshold: float = 0.01,
    *,
    by: Sequence[str] | None = None,
    confidence: float = 0.95,
    higher_is_better: DirectionArg = None,
    nonfinite_as_sdc: bool = True,
    precision: float | Precision | None = None,
    bounds: BoundsArg = None,
) -> pd.DataFrame:
    """Per-cell summary of a campaign, one row per (cell, metric).

    Args:
        df_or_path: Result rows, a loaded :class:`Dataset`, or a dataset path / URI.
        metric: Metric name(s); all metrics (columns with a ``golden_`` twin) when None.
        threshold: Relative drop below golden that counts as silent data corruption.
        by: Cell columns; default :func:`cell_keys` (model, target, [error_model], mitigation,
            ber, extra factors with more than one value).
        confidence: Level of every interval.
        higher_is_better: Metric direction: a bool for all metrics, a ``{metric: bool}`` dict
            (metrics it does not name: its ``"*"`` entry if any, else guessed), or None to guess
            from the name (loss-like names are lower-is-better, see
            :func:`~pytei_ray.stats.higher_is_better`).
        nonfinite_as_sdc: Count ok trials with a non-finite metric as SDC.
        precision: A precision target: a :class:`~pytei_ray.stats.Precision` (for its metric),
            or a float = wanted half-width of every metric's mean relative to |golden|. A cell is
            ``conclusive`` per :func:`pytei_ray.stats.judge_cell`: with a target, when its
            targeted half-width is at most the target; without one, when it has 2 trials and
            its interval does not contain the SDC threshold level. When the dataset's manifest
            has ``spec["stopping"]`` (an adaptive campaign), that rule is kept (also when a
            precision is given: it decided where each cell stopped) for its metric, at its
            level; every metric is then judged as looked at sequentially (time-uniform SDC
            rates, an unbounded metric's t interval at the Bonferroni look level), and a cell
            that reached ``max_reps`` while inconclusive is ``at_cap``. ``reps_needed``
            estimates the trials an inconclusive cell needs (0 when no trial has a finite
            metric); in a fixed campaign those needing more than ``ADVICE_FACTOR`` (10) times
            their trials are ``at_floor`` when even trials that all agreed would need that many
            (the confidence sequence's floor: the outcome shape, not the threshold), else
            ``at_threshold`` (the mean sits about on the SDC level).
        bounds: Metric ranges: None takes the campaign's declaration
            (``Campaign(metrics=...)``, recorded in the manifest; a value outside it is an
            error naming the trial), else guesses from the name
            (:func:`~pytei_ray.stats.metric_bounds`: [0, 1] for accuracy-like names, >= 0 for
            loss-like ones; a guessed bound is dropped when an observed value lies outside it);
            a ``{metric: (low, high)}`` dict overrides; False treats every metric as unbounded.

    Returns:
        Columns ``by..., metric, higher_is_better, trials, failed, ok, n, golden, mean, ci_low,
        ci_high, mean_over, median, q25, q75, mean_loss, rel_loss, sdc, sdc_rate, sdc_low,
        sdc_high, sdc_method, nonfinite, nonfinite_rate, nonfinite_low, nonfinite_high,
        subsampled, [nonfinite_weights_rate,] p0, n_faulted, p0_stratum, ci_method, ci_level,
        guaranteed, conclusive, inconclusive, reason, reps_needed, at_threshold, at_floor,
        at_cap``. ``mean``/
        ``ci_low``/``ci_high`` come from :func:`pytei_ray.stats.estimate_cell`: for a bounded
        metric a confidence sequence over every ok trial (``mean_over`` "all", non-finite ones
        at the range's worst value), else a Student-t interval over the finite trials
        (``mean_over`` "finite"), p0-stratified when the rows have ``p_no_fault`` and
        ``n_faults_sampled``
        (``p0`` NaN otherwise), or on the unread stratum (``p_none_read``, ``n_words_read``)
        when every row of the cell has it (``p0_stratum`` "unread" / "fault-free" / "");
        all at ``ci_level``. The SDC and non-finite rates have exact
        (Clopper-Pearson) intervals, time-uniform ones for an adaptive campaign's SDC rate.
        ``mean_loss`` = (golden - mean), sign-flipped for lower-is-better: positive = worse.

    Example:
        >>> s = summarize("results/drs", metric="auc", threshold=0.01)     # doctest: +SKIP
        >>> s[s.mitigation == "clip"][["model", "ber", "mean", "sdc_rate"]]  # doctest: +SKIP
    """
    if not 0.0 <= threshold < 1.0 or isinstance(threshold, bool):
        raise ValueError(
            "Expected argument `threshold` to be a float in the [0, 1) range, "
            f"but got {threshold!r}."
        )
    df, manifest = _frame(df_or_path)
    if df.empty:
        return pd.DataFrame()
    if "repetition" in df:  # each cell's rows in trial order once, not once per cell
        df = df.sort_values("repetition", kind="stable")
    keys = list(by) if by is not None else cell_keys(df, manifest)
    _check_direction(df, higher_is_better)
    rule = stopping_rule(manifest)  # kept when a precision is given too: it decided the stops
    declared = declared_metrics(manifest)
    infos = {m: _info(df, m, bounds, _dir(m, higher_is_better, declared), declared)
             for m in _metrics(df, metric)}  # every check before any cell is computed
    rows = []
    for m, info in infos.items():
        target, level, cap, level_of = None, None, None, confidence
        if isinstance(precision, Precision):
            target = precision if precision.metric == m else None
        elif precision is not None:
            target = Precision(m, float(precision), relative=True, confidence=confidence)
        if rule is not None:  # every metric of an adaptive campaign: sequential, look level
            cap, level = rule[0].max_reps, rule[0].look_confidence(rule[1])
            if rule[0].metric == m:
                target, level_of = rule[0], rule[0].confidence
        for key, g in df.groupby(keys, sort=True, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            stats = _cell(g, m, info, threshold, level_of, nonfinite_as_sdc, target, level, cap)
            rows.append({**dict(zip(keys, key)), "metric": m,
                         "higher_is_better": info.higher_is_better, **stats})
    return pd.DataFrame(rows)


def recovery(
    df_or_path: Source,
    metric: str | Sequence[str] | None = None,
    *,
    baseline: str | None = None,
    confidence: float = 0.95,
    higher_is_better: DirectionArg = None,
    bounds: BoundsArg = None,
) -> pd.DataFrame:
    """Each mitigation against the unmitigated trials with the same faults, per cell.

    Rows with the same (model, target, error_model, ber, repetition, extra factors) saw the same
    faults. Per cell: the p0-stratified mean paired difference ``delta`` (> 0: the mitigation
    helps) with its interval, the baseline's mean loss ``lost``, and the recovered share
    ``recovery = delta / lost`` (column ``mean``) with an interval at the same level
    (:func:`pytei_ray.stats.compare_mitigations`; formulas in docs/report.md). A pair whose
    unmitigated metric is non-finite counts (as the range's worst value), never dropped.

    Args:
        df_or_path: Result rows, a :class:`Dataset`, or a dataset path / URI.
        metric: Metric name(s); all when None.
        baseline: The unmitigated ``mitigation`` value; found by name (``'none'``...) when None.
        confidence: Level of the intervals.
        higher_is_better: Metric direction (see :func:`summarize`).
        bounds: Metric ranges (see :func:`summarize`).

    Returns:
        ``cell columns..., mitigation, metric, pairs, faulted, catastrophes, delta,
        delta_low, delta_high, lost, mean, ci_low, ci_high, ci_level, method``; empty when
        there is no baseline or no mitigated trial.
    """
    df, manifest = _frame(df_or_path)
    if df.empty or "mitigation" not in df:
        return pd.DataFrame()
    baseline = baseline if baseline is not None else baseline_mitigation(df["mitigation"].unique())
    if baseline is None or df["mitigation"].nunique() < 2:
        return pd.DataFrame()
    base_keys = [k for k in FACTORS if k != "mitigation" and k in df]  # same faults
    pair_on = base_keys + [f for f in extra_factors(df, manifest) if f in df]
    declared = declared_metrics(manifest)
    out = []
    for m in _metrics(df, metric):
        info = _info(df, m, bounds, _dir(m, higher_is_better, declared), declared)
        res = compare_mitigations(df, m, pair_on, baseline, info=info, confidence=confidence)
        res = res.rename(columns={"recovery": "mean", "recovery_low": "ci_low",
                                  "recovery_high": "ci_high", "confidence": "ci_level"})
        res.insert(res.columns.get_loc("mitigation") + 1, "metric", m)
        out.append(res)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def suggest_repetitions(
    summary: pd.DataFrame,
    current: int | None = None,
    *,
    metric: str | None = None,
    factor: float = ADVICE_FACTOR,
) -> int | None:
    """Repetitions per cell that would settle the inconclusive cells that can be settled, or
    None (nothing to settle).

    The rule: a cell counts when it is inconclusive, has a finite metric (``reps_needed > 0``)
    and needs at most ``factor`` times its current trials; a cell needing more (``at_threshold``:
    its mean is about the SDC level; ``at_floor``: even agreeing trials would need that many) is
    left out: more repetitions will not settle it cheaply. The suggestion is the largest
    need of the counted cells, at least ``current + 1`` and at most ``factor * current``.

    Args:
        summary: Output of :func:`summarize`.
        current: Repetitions the campaign has now (default: the largest cell's trials).
        metric: Only rows of this metric (the advice is per metric); all rows when None.
        factor: Multiple of the current trials beyond which a cell is "at the threshold".
    """
    if summary.empty:
        return None
    rows = summary if metric is None else summary[summary["metric"] == metric]
    trials = rows["trials"].astype(float)
    settle = rows["inconclusive"] & (rows["reps_needed"] > 0) & (
        rows["reps_needed"] <= factor * trials)
    if not settle.any():
        return None
    now = current if current is not None else int(trials.max())
    need = max(int(rows.loc[settle, "reps_needed"].max()), now + 1)
    return min(need, max(now + 1, math.floor(factor * now)))
