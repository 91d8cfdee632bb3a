"""Textbook intervals on top of SciPy: Student t, Wilson, Clopper-Pearson, sample sizes.

Pure functions of numbers (no files, no randomness). Quantiles are cached, since a campaign
report or an adaptive driver asks for the same few (level, degrees of freedom) many times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
from scipy import stats as _st

__all__ = [
    "check_confidence",
    "clopper_pearson",
    "mean_ci",
    "reps_for_halfwidth",
    "student_t_ppf",
    "wilson_interval",
]


def check_confidence(confidence: float) -> None:
    """Raise ValueError unless ``0 < confidence < 1``."""
    if isinstance(confidence, bool) or not 0.0 < confidence < 1.0:
        raise ValueError(
            "Expected argument `confidence` to be a float in the (0, 1) range, "
            f"but got {confidence!r}."
        )


@lru_cache(maxsize=8192)
def student_t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t distribution (``scipy.stats.t.ppf``, cached).

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
    return float(_st.t.ppf(q, df))


def _finite(values: Iterable[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    return x[np.isfinite(x)]


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
    check_confidence(confidence)
    x = _finite(values)
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


def _counts(k, n) -> tuple[bool, np.ndarray, np.ndarray]:
    scalar = np.ndim(k) == 0 and np.ndim(n) == 0
    k_arr, n_arr = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError(f"Expected 0 <= k <= n, but got k={k!r}, n={n!r}.")
    return scalar, k_arr, n_arr


def wilson_interval(
    k: int | Sequence[int] | np.ndarray,
    n: int | Sequence[int] | np.ndarray,
    confidence: float = 0.95,
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion ``k / n`` (no continuity correction).

    Works on scalars or arrays (broadcast). ``n == 0`` gives NaN bounds. Its coverage dips
    below nominal for proportions near 0 or 1; :func:`clopper_pearson` does not.

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
    check_confidence(confidence)
    scalar, k_arr, n_arr = _counts(k, n)
    z = float(_st.norm.ppf(0.5 + confidence / 2.0))
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


def clopper_pearson(
    k: int | Sequence[int] | np.ndarray,
    n: int | Sequence[int] | np.ndarray,
    confidence: float = 0.95,
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson ("exact") interval for a binomial proportion ``k / n``.

    Inverts two one-sided binomial tests with beta quantiles, so its coverage is at least the
    nominal level for every true proportion and every ``n`` (conservative near 0 and 1, where
    Wilson's dips below). ``n == 0`` gives ``(0, 1)``: nothing is known.

    Args:
        k: Number of successes (scalar or array).
        n: Number of trials (broadcast with ``k``).
        confidence: Two-sided confidence level.

    Returns:
        ``(low, high)``; floats for scalar input, arrays otherwise.

    Example:
        >>> lo, hi = clopper_pearson(0, 10)
        >>> lo, round(hi, 4)
        (0.0, 0.3085)
    """
    check_confidence(confidence)
    scalar, k_arr, n_arr = _counts(k, n)
    alpha = 1.0 - confidence
    with np.errstate(divide="ignore", invalid="ignore"):
        low = np.where(k_arr > 0, _st.beta.ppf(alpha / 2, k_arr, n_arr - k_arr + 1), 0.0)
        high = np.where(k_arr < n_arr, _st.beta.ppf(1 - alpha / 2, k_arr + 1, n_arr - k_arr),
                        1.0)
    low = np.where(n_arr > 0, low, 0.0)
    high = np.where(n_arr > 0, high, 1.0)
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
    check_confidence(confidence)
    if not (math.isfinite(std) and math.isfinite(target)) or target <= 0:
        return max_reps
    if std == 0:
        return 2
    q = 0.5 + confidence / 2.0
    n = max(2, math.ceil((float(_st.norm.ppf(q)) * std / target) ** 2))
    while n < max_reps and student_t_ppf(q, n - 1) * std / math.sqrt(n) > target:
        n += 1
    return min(n, max_reps)
