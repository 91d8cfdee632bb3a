"""Estimators that use the known probability that a trial draws no fault.

A trial's faults are sampled from a Binomial (or an exact count) whose probability of drawing
nothing, ``p0``, is known before the trial runs; such a trial is the golden run. So the mean of a
cell is ``mu = p0 * golden + (1 - p0) * mu1`` with ``mu1 = E[metric | >= 1 sampled fault]``, and
only ``mu1`` has to be estimated, from the faulted trials. Where faults are rare this is what
keeps an interval honest: ten fault-free trials say nothing about ``mu1``, so the interval stays
``golden + (1 - p0) * ([a, b] - golden)`` (the metric's whole range) until faulted trials come,
instead of collapsing to zero width at the golden value as a plain Student-t interval does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .intervals import check_confidence, clopper_pearson, student_t_ppf

__all__ = ["HEAVY_MAD", "MeanEstimate", "estimate_mean", "estimate_rate", "looks_heavy_tailed"]

#: A sample is called heavy-tailed when a value lies more than this many median absolute
#: deviations (MAD) from its median. A normal sample's MAD is 0.67 sigma, so ten normal draws
#: reach ~2.3 MADs (above 10 about 1% of the time: the MAD of 10 values is noisy) and 160
#: reach ~4.2; an exponential sample of 160 ~9; an exploded trial 1e30.
#: (The MAD, unlike the interquartile range, is not dragged along by one outlier in 4 values.)
HEAVY_MAD = 15.0


@dataclass(frozen=True)
class MeanEstimate:
    """A cell mean with its confidence interval.

    Attributes:
        mean: Point estimate (with no finite faulted trial: the mean of the fault-free ones,
            i.e. golden; NaN when no trial has a finite metric and ``p0 < 1``).
        low: Lower end of the interval (may be ``-inf``: unknown).
        high: Upper end of the interval (may be ``inf``).
        n: Trials with a finite metric.
        n_faulted: Of those, trials with at least one sampled fault.
        p0: Probability of no fault used (0.0 when unknown: every trial counted as faulted).
        method: ``"p0"`` (golden + (1-p0) * Student-t on the faulted trials), ``"p0-range"``
            (fewer than 2 faulted trials: the metric's range), ``"t"`` (p0 unknown: plain
            Student-t), ``"range"`` (p0 unknown and fewer than 2 trials), ``"exact"``
            (``p0 == 1``: every trial is the golden run).
        guaranteed: False when the metric is unbounded and the faulted values look
            heavy-tailed (:func:`looks_heavy_tailed`): the t interval then has no
            finite-sample guarantee; read the median and the SDC rate instead.
    """

    mean: float
    low: float
    high: float
    n: int
    n_faulted: int
    p0: float
    method: str
    guaranteed: bool

    @property
    def halfwidth(self) -> float:
        """Half the interval's width (``inf`` when a side is unknown, NaN when both are)."""
        return (self.high - self.low) / 2.0


def looks_heavy_tailed(values: np.ndarray, factor: float = HEAVY_MAD) -> bool:
    """Whether a finite sample has a value more than ``factor`` MADs from its median.

    A zero MAD with any value off the median counts as heavy-tailed (most trials equal, a few
    far away: the rare-event shape a t interval cannot see). Fewer than 3 values: False.

    Example:
        >>> looks_heavy_tailed(np.array([0.1, 0.2, 0.15, 1e30])), looks_heavy_tailed(
        ...     np.array([0.1, 0.2, 0.15, 0.3]))
        (True, False)
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 3:
        return False
    dev = np.abs(x - np.median(x))
    return bool(dev.max() > factor * np.median(dev))


def _clamp(value: float, bounds: tuple[float, float] | None) -> float:
    if bounds is None or math.isnan(value):
        return value
    return min(max(value, bounds[0]), bounds[1])


def estimate_mean(
    values: np.ndarray,
    golden: float,
    faulted: np.ndarray | None,
    p0: float | None,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> MeanEstimate:
    """Mean of a cell and its interval, using the known probability of a fault-free trial.

    With ``p0`` known, ``mu1`` (the mean given at least one sampled fault) gets a Student-t
    interval ``CI1`` from the finite faulted trials, and the cell mean's interval is
    ``golden + (1 - p0) * (CI1 - golden)``; the point estimate ``p0 * golden + (1 - p0) *
    mean1``. With fewer than 2 finite faulted trials ``CI1`` is the metric's range ``bounds``
    (infinite when unbounded). Fault-free trials carry no information on ``mu1`` (they are the
    golden run) and enter only through ``p0``. With ``p0`` unknown (None: datasets without the
    column) every trial counts as faulted with ``p0 = 0``: a plain Student-t interval.

    Args:
        values: Metric per trial (non-finite values are left out: failed or exploded trials).
        golden: The fault-free metric of the cell.
        faulted: Per trial, whether it had at least one sampled fault (before mitigations);
            ignored (all True) when ``p0`` is None.
        p0: Probability that a trial samples no fault, or None when unknown.
        confidence: Two-sided level.
        bounds: Natural range ``(a, b)`` of the metric (sides may be infinite), or None.

    Returns:
        A :class:`MeanEstimate`, clamped to ``bounds``.

    Example:
        >>> e = estimate_mean(np.ones(10), 1.0, np.zeros(10, bool), 0.9, bounds=(0.0, 1.0))
        >>> e.mean, round(e.low, 3), e.high, e.method      # no fault seen: not zero width
        (1.0, 0.9, 1.0, 'p0-range')
    """
    check_confidence(confidence)
    x = np.asarray(values, dtype=float)
    finite = np.isfinite(x)
    known = p0 is not None and math.isfinite(p0)
    p = float(p0) if known else 0.0
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"Expected argument `p0` to be a probability in [0, 1], but got {p0!r}.")
    hit = np.asarray(faulted, dtype=bool) if known and faulted is not None else np.ones_like(
        finite)
    x1 = x[finite & hit]
    n, n1 = int(finite.sum()), int(x1.size)
    a, b = bounds if bounds is not None else (-math.inf, math.inf)
    g = float(golden)
    if known and p == 1.0:
        return MeanEstimate(g, g, g, n, n1, p, "exact", True)
    mean1 = float(x1.mean()) if n1 else math.nan
    if n1 >= 2:
        half1 = student_t_ppf(0.5 + confidence / 2.0, n1 - 1) * float(x1.std(ddof=1)) / math.sqrt(
            n1)
        lo1, hi1, method = mean1 - half1, mean1 + half1, "p0" if known else "t"
    else:
        lo1, hi1, method = a, b, "p0-range" if known else "range"
    if known:
        # no faulted trial: the observed trials are golden runs, so is their mean
        mean = p * g + (1.0 - p) * mean1 if n1 else float(x[finite].mean()) if n else math.nan
        low, high = g + (1.0 - p) * (lo1 - g), g + (1.0 - p) * (hi1 - g)
    else:
        mean, low, high = mean1, lo1, hi1
    bounded = math.isfinite(a) and math.isfinite(b)
    guaranteed = bounded or not looks_heavy_tailed(x1)
    return MeanEstimate(_clamp(mean, bounds), _clamp(low, bounds), _clamp(high, bounds), n, n1,
                        p, method, guaranteed)


def estimate_rate(
    k: int, n_faulted: int, p0: float | None = None, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Rate of an event that only a faulted trial can show (an SDC), with an exact interval.

    The rate is ``(1 - p0) * q`` where ``q`` is the event's proportion among faulted trials;
    ``q`` gets a Clopper-Pearson interval, scaled by ``1 - p0``. No faulted trial: the interval
    is ``[0, 1 - p0]`` and the point estimate NaN (0 when ``p0 == 1``).

    Args:
        k: Trials with the event (all of them faulted).
        n_faulted: Faulted trials (with ``p0`` None: every trial).
        p0: Probability that a trial samples no fault, or None (unknown: 0).
        confidence: Two-sided level.

    Returns:
        ``(rate, low, high)``.

    Example:
        >>> rate, lo, hi = estimate_rate(0, 0, p0=0.99)
        >>> rate, lo, round(hi, 2)
        (nan, 0.0, 0.01)
    """
    check_confidence(confidence)
    scale = 1.0 - (float(p0) if p0 is not None and math.isfinite(p0) else 0.0)
    if n_faulted <= 0:
        return (0.0 if scale == 0 else math.nan), 0.0, scale
    lo, hi = _exact(int(k), int(n_faulted), float(confidence))
    return scale * k / n_faulted, scale * lo, scale * hi


@lru_cache(maxsize=65536)
def _exact(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Cached scalar Clopper-Pearson (counts are small integers, asked again at every look)."""
    lo, hi = clopper_pearson(k, n, confidence)
    return float(lo), float(hi)
