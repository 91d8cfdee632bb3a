"""Pure statistics for campaign reports: confidence intervals, metric direction, paired recovery.

Nothing here reads files or draws; every function takes numbers (or a results DataFrame for
:func:`paired_recovery`) and returns numbers, so notebooks and tests can call them directly.
SciPy is not a runtime dependency: the Student t quantile is computed here from the regularized
incomplete beta function (accurate to ~1e-10, checked against SciPy in the tests).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import pandas as pd

__all__ = [
    "LOWER_IS_BETTER_TOKENS",
    "LOWER_IS_BETTER_WORDS",
    "UNIT_RANGE_TOKENS",
    "UNIT_RANGE_WORDS",
    "higher_is_better",
    "mean_ci",
    "metric_bounds",
    "paired_recovery",
    "reps_for_halfwidth",
    "student_t_ppf",
    "wilson_interval",
]

#: A metric whose name contains one of these words is treated as lower-is-better (loss-like).
LOWER_IS_BETTER_WORDS = ("loss", "error", "mse", "rmse", "mape", "perplexity", "nll", "xent",
                         "crossentropy", "cross_entropy", "latency", "distance")
#: ...or has one of these short words as a whole token (``val_ce``, ``wer``, ``time_s``), so that
#: e.g. ``precision`` or ``power`` are not mistaken for ``ce`` / ``wer``.
LOWER_IS_BETTER_TOKENS = ("ce", "mae", "wer", "cer", "ter", "err", "ppl", "eer", "fpr", "fnr",
                          "time", "seconds", "ms")
#: Metrics bounded to [0, 1]: names containing one of these words...
UNIT_RANGE_WORDS = ("accuracy", "auroc", "auprc", "precision", "recall", "specificity",
                    "sensitivity", "jaccard")
#: ...or having one of these whole tokens (``acc``, ``top1_acc``, ``error_rate``, ``f1``).
UNIT_RANGE_TOKENS = ("acc", "auc", "f1", "iou", "miou", "dice", "ap", "map", "rate", "top1",
                     "top5", "fpr", "fnr", "tpr", "tnr", "eer")


def _tokens(metric: str) -> list[str]:
    """Words of a metric name: split on non-alphanumerics and camelCase, lower-cased."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", metric)
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(
            "Expected argument `confidence` to be a float in the (0, 1) range, "
            f"but got {confidence!r}."
        )


def higher_is_better(metric: str) -> bool:
    """Guess the direction of a metric from its name.

    Args:
        metric: Metric column name, e.g. ``"auc"`` or ``"logloss"``.

    Returns:
        False when the name contains a loss-like word (see :data:`LOWER_IS_BETTER_WORDS`:
        ``loss``, ``error``, ``xent``, ``cross_entropy``, ``nll``, ``rmse``, ``latency``...) or
        has a loss-like token (:data:`LOWER_IS_BETTER_TOKENS`: ``ce``, ``wer``, ``cer``,
        ``mae``, ``ppl``, ``time``...), True otherwise.

    Example:
        >>> higher_is_better("auc"), higher_is_better("logloss"), higher_is_better("val_ce")
        (True, False, False)
    """
    name = metric.lower()
    if any(word in name for word in LOWER_IS_BETTER_WORDS):
        return False
    return not any(tok in LOWER_IS_BETTER_TOKENS for tok in _tokens(metric))


def metric_bounds(metric: str) -> tuple[float, float]:
    """Natural range of a metric, guessed from its name (used to clamp confidence intervals).

    Args:
        metric: Metric column name.

    Returns:
        ``(0, 1)`` for proportions (``accuracy``, ``acc``, ``auc``, ``auroc``, ``precision``,
        ``recall``, ``f1``, ``iou``, names with a ``rate`` token...), ``(0, inf)`` for other
        lower-is-better (loss-like) metrics, ``(-inf, inf)`` otherwise.

    Example:
        >>> metric_bounds("top1_acc"), metric_bounds("logloss"), metric_bounds("score")
        ((0.0, 1.0), (0.0, inf), (-inf, inf))
    """
    name = metric.lower()
    tokens = _tokens(metric)
    if any(w in name for w in UNIT_RANGE_WORDS) or any(t in UNIT_RANGE_TOKENS for t in tokens):
        return 0.0, 1.0
    if not higher_is_better(metric):
        return 0.0, math.inf
    return -math.inf, math.inf


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _student_t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@lru_cache(maxsize=4096)
def student_t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t distribution.

    Args:
        q: Probability in (0, 1).
        df: Degrees of freedom (> 0).

    Returns:
        ``t`` with ``P(T <= t) = q``.

    Example:
        >>> round(student_t_ppf(0.975, 9), 4)
        2.2622
    """
    if not 0.0 < q < 1.0 or df <= 0:
        raise ValueError(f"Expected 0 < q < 1 and df > 0, but got q={q!r}, df={df!r}.")
    if q < 0.5:
        return -student_t_ppf(1.0 - q, df)
    if q == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while _student_t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _student_t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(
    values: Iterable[float],
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of the finite values.

    NaN and infinite values are ignored. With no finite value all three results are NaN; with a
    single value the bounds are NaN (no variance estimate); with zero spread the bounds equal
    the mean.

    Args:
        values: Sample (any iterable of numbers).
        confidence: Two-sided confidence level.
        bounds: Optional natural range ``(low, high)`` of the metric (e.g. ``(0, 1)`` for an
            accuracy): the interval is clipped to it, so it never claims impossible values.

    Returns:
        ``(mean, low, high)``.

    Example:
        >>> m, lo, hi = mean_ci([1.0, 2.0, 3.0])
        >>> m, round(lo, 4), round(hi, 4)
        (2.0, -0.4841, 4.4841)
    """
    _check_confidence(confidence)
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan
    half = student_t_ppf(0.5 + confidence / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high


def wilson_interval(
    k: int | Sequence[int] | np.ndarray,
    n: int | Sequence[int] | np.ndarray,
    confidence: float = 0.95,
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion ``k / n`` (no continuity correction).

    Works on scalars or arrays (broadcast). ``n == 0`` gives NaN bounds.

    Args:
        k: Number of successes.
        n: Number of trials.
        confidence: Two-sided confidence level.

    Returns:
        ``(low, high)``; floats for scalar input, arrays otherwise.

    Example:
        >>> lo, hi = wilson_interval(0, 10)
        >>> lo, round(hi, 4)
        (0.0, 0.2775)
    """
    _check_confidence(confidence)
    scalar = np.ndim(k) == 0 and np.ndim(n) == 0
    k_arr, n_arr = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError(f"Expected 0 <= k <= n, but got k={k!r}, n={n!r}.")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k_arr / n_arr
        denom = 1.0 + z * z / n_arr
        center = (p + z * z / (2.0 * n_arr)) / denom
        half = z / denom * np.sqrt(p * (1.0 - p) / n_arr + z * z / (4.0 * n_arr * n_arr))
        low = np.where(k_arr == 0, 0.0, np.clip(center - half, 0.0, 1.0))
        high = np.where(k_arr == n_arr, 1.0, np.clip(center + half, 0.0, 1.0))
    low = np.where(n_arr > 0, low, np.nan)
    high = np.where(n_arr > 0, high, np.nan)
    if scalar:
        return float(low), float(high)
    return low, high


def reps_for_halfwidth(
    std: float, target: float, confidence: float = 0.95, max_reps: int = 100_000
) -> int:
    """Smallest sample size whose Student-t CI half-width is at most ``target``.

    Args:
        std: Sample standard deviation (estimate).
        target: Wanted half-width of the confidence interval of the mean (> 0).
        confidence: Two-sided confidence level.
        max_reps: Upper bound returned when the target is out of reach.

    Returns:
        Number of repetitions (at least 2).

    Example:
        >>> reps_for_halfwidth(1.0, 0.5)
        18
    """
    _check_confidence(confidence)
    if not (math.isfinite(std) and math.isfinite(target)) or target <= 0:
        return max_reps
    if std == 0:
        return 2
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    n = max(2, math.ceil((z * std / target) ** 2))
    q = 0.5 + confidence / 2.0
    while n < max_reps and student_t_ppf(q, n - 1) * std / math.sqrt(n) > target:
        n += 1
    return min(n, max_reps)


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
    rows = df.loc[ok, [*pair_on, "mitigation", metric, f"golden_{metric}"]].copy()
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
