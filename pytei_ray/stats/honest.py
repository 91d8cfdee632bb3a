"""Cell estimates whose intervals hold for any outcome shape, and the judge that uses them.

The cell mean is stratified on the known probability ``p0`` of a fault-free trial (the golden
run): ``mu = p0 * golden + (1 - p0) * mu1``, ``mu1`` the mean given at least one sampled fault.

* Bounded metric (finite ``[a, b]``): ``mu1`` gets the betting confidence sequence of
  :func:`~pytei_ray.stats.betting.betting_cs` over the faulted trials in repetition order,
  mapped through the known ``p0``: ``golden + (1 - p0) * (CS1 - golden)``. ``p0`` and
  ``golden`` are known exactly, so the mapped interval has the CS's level, with no split. It
  holds for every distribution on ``[a, b]`` (a few catastrophes among many masked faults
  included) and at every number of trials at once: an adaptive campaign may stop on it
  without correcting for its looks. An ok trial with a non-finite metric (the outputs went
  NaN) counts as the WORST value of the range (``a`` when higher is better): a catastrophe,
  never dropped.
* Unbounded metric: no interval can be distribution-free. The mean and its Student-t interval
  are over the FINITE trials (``over == "finite"``); the non-finite trials are a failure rate
  with an exact (Clopper-Pearson) interval; the report leads with the median and the SDC rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .betting import TRUNCATION, betting_cs, check_bounded
from .estimate import MeanEstimate, estimate_mean, estimate_rate
from .intervals import check_confidence
from .metrics import Metric
from .precision import Precision

__all__ = ["CellEstimate", "CellJudgement", "cs_faulted_needed", "estimate_cell",
           "judge_cell_cs", "rate_cs"]


@dataclass(frozen=True)
class CellEstimate(MeanEstimate):
    """A :class:`MeanEstimate` that also says its level and what the mean is over.

    Attributes:
        confidence: Level of ``[low, high]``.
        over: ``"all"`` (every ok trial; a non-finite one counted as the range's worst value)
            or ``"finite"`` (unbounded metric: the finite trials only).
        nonfinite: Ok trials with a non-finite metric.
        nonfinite_rate: Their rate, ``(1 - p0)`` times their share of the faulted trials.
        nonfinite_low: Lower end of its exact interval.
        nonfinite_high: Upper end of its exact interval.
    """

    confidence: float = 0.95
    over: str = "all"
    nonfinite: int = 0
    nonfinite_rate: float = math.nan
    nonfinite_low: float = 0.0
    nonfinite_high: float = 1.0
    sd1: float = math.nan
    range_width: float = math.inf

    @property
    def halfwidth(self) -> float:
        """Largest distance from ``mean`` to an end of ``[low, high]``.

        Whenever the interval holds the truth, ``|mean - truth| <= halfwidth``: what a
        precision target "mean +- h" promises. A confidence sequence is often lopsided around
        the mean (all faulted trials at golden: the interval reaches down, not up), so this is
        up to twice ``(high - low) / 2``.
        """
        if math.isnan(self.mean):
            return (self.high - self.low) / 2.0
        return max(self.mean - self.low, self.high - self.mean)


@dataclass(frozen=True)
class CellJudgement:
    """What a cell's trials let one conclude.

    Attributes:
        estimate: The mean and its interval (:func:`estimate_cell`: a :class:`CellEstimate`).
        sdc: Trials counted as SDC (among ok faulted trials).
        sdc_rate: SDC rate (:func:`~pytei_ray.stats.estimate_rate` or :func:`rate_cs`).
        sdc_low: Lower end of its interval.
        sdc_high: Upper end of its interval.
        confidence: Level of the mean's interval.
        conclusive: Whether the cell is settled (see :func:`judge_cell_cs`).
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


def _known(p0: float | None) -> bool:
    return p0 is not None and math.isfinite(p0)


def estimate_cell(
    values: np.ndarray,
    golden: float,
    faulted: np.ndarray | None,
    p0: float | None,
    *,
    metric: Metric,
    confidence: float = 0.95,
    ok: np.ndarray | None = None,
    t_confidence: float | None = None,
) -> CellEstimate:
    """Mean of a cell and its interval: a confidence sequence for a bounded metric.

    Args:
        values: Metric per trial, IN REPETITION ORDER (the sequence's bets use the past).
        golden: The fault-free metric (exact: a fault-free trial reproduces it).
        faulted: Per trial, whether at least one fault was sampled; None when unknown.
        p0: Probability of a fault-free trial, or None (unknown: every trial is faulted).
        metric: Range and direction (:func:`~pytei_ray.stats.resolve_metric`).
        confidence: Level of the interval.
        ok: Per trial, it ran (False: failed, no outcome, left out); all True when None.
        t_confidence: Level of the Student-t interval of an UNBOUNDED metric (an adaptive
            campaign passes its Bonferroni look level: a t interval is not time-uniform);
            ``confidence`` when None.

    Returns:
        A :class:`CellEstimate`; ``method`` is ``"p0-cs"`` (``"cs"`` with ``p0`` unknown),
        ``"exact"`` (``p0 == 1``), or for an unbounded metric those of
        :func:`~pytei_ray.stats.estimate_mean`.

    Raises:
        ValueError: bad confidence, or a finite value (or golden) outside the declared bounds.

    Example:
        >>> acc = Metric(bounds=(0.0, 1.0), higher_is_better=True)
        >>> e = estimate_cell(np.full(40, 0.8), 0.8, np.ones(40, bool), 0.0, metric=acc)
        >>> round(e.low, 3), round(e.high, 3), e.method   # 40 golden-looking faulted trials
        (0.709, 0.832, 'p0-cs')
    """
    check_confidence(confidence)
    x = np.asarray(values, dtype=float)
    ran = np.ones(x.shape, bool) if ok is None else np.asarray(ok, dtype=bool)
    known = _known(p0) and faulted is not None
    p = float(p0) if known else 0.0
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"Expected argument `p0` to be a probability in [0, 1], but got {p0!r}.")
    hit = np.asarray(faulted, dtype=bool) if known else np.ones(x.shape, bool)
    finite = np.isfinite(x)
    n_nonfinite = int((ran & ~finite).sum())
    counted = ran & hit
    rate, r_lo, r_hi = estimate_rate(int((counted & ~finite).sum()), int(counted.sum()),
                                     p if known else None, confidence)
    extra = dict(confidence=confidence, nonfinite=n_nonfinite, nonfinite_rate=rate,
                 nonfinite_low=r_lo, nonfinite_high=r_hi)
    if not metric.bounded:
        level = confidence if t_confidence is None else t_confidence
        est = estimate_mean(np.where(ran, x, np.nan), golden, hit if known else None,
                            p if known else None, level, metric.bounds)
        return CellEstimate(**vars(est), **{**extra, "confidence": level}, over="finite")
    a, b = check_bounded(np.append(x[ran & finite], golden), metric.bounds)
    g = float(golden)
    worst = a if metric.higher_is_better is not False else b
    x = np.where(finite, x, worst)
    n = int(ran.sum())
    if known and p == 1.0:
        return CellEstimate(g, g, g, n, 0, p, "exact", True, **extra)
    x1 = x[ran & hit]
    lo1, hi1 = betting_cs(x1, (a, b), confidence)
    mean1 = float(x1.mean()) if x1.size else math.nan
    if known:
        mean = p * g + (1.0 - p) * mean1 if x1.size else (g if n else math.nan)
        low, high = g + (1.0 - p) * (lo1 - g), g + (1.0 - p) * (hi1 - g)
    else:
        mean, low, high = mean1, lo1, hi1
    sd1 = float(x1.std()) if x1.size else math.nan
    return CellEstimate(mean, low, high, n, int(x1.size), p, "p0-cs" if known else "cs", True,
                        **extra, sd1=sd1, range_width=b - a)


def cs_faulted_needed(sd: float, width: float, target: float, confidence: float = 0.95,
                      cap: int = 10**7) -> int:
    """Faulted trials after which a confidence sequence's half-width is about ``target``.

    A planning estimate (not a guarantee) for the relaunch advice: the half-width of
    :func:`~pytei_ray.stats.betting_cs` after ``n`` observations of spread ``sd`` on a range
    of ``width`` is about ``sd * sqrt(2 log(2/alpha) / n) + width * log(2/alpha) / (3/4 n)``
    (the second term: the catastrophes ``n`` clean trials cannot exclude).
    """
    if not target > 0 or not math.isfinite(width):
        return cap
    sd = 0.0 if not math.isfinite(sd) else sd
    k = math.log(2.0 / (1.0 - confidence))
    n = 1
    while n < cap and sd * math.sqrt(2 * k / n) + width * k / (TRUNCATION * n) > target:
        n *= 2
    lo = max(1, n // 2)
    while lo < n:  # the smallest n that gets there
        mid = (lo + n) // 2
        if sd * math.sqrt(2 * k / mid) + width * k / (TRUNCATION * mid) > target:
            lo = mid + 1
        else:
            n = mid
    return min(n, cap)


def rate_cs(k_seq: np.ndarray, p0: float | None, confidence: float = 0.95
            ) -> tuple[float, float, float]:
    """Rate of an event only a faulted trial can show, with a time-uniform interval.

    ``k_seq`` holds the event indicators of the faulted trials in order; the share ``q`` gets
    the betting confidence sequence on [0, 1] and the rate is ``(1 - p0) * q`` (as
    :func:`~pytei_ray.stats.estimate_rate`, whose Clopper-Pearson interval is exact at a fixed
    count but not under optional stopping).

    Returns:
        ``(rate, low, high)``; no faulted trial: ``(nan, 0, 1 - p0)`` (0 when ``p0 == 1``).
    """
    scale = 1.0 - (float(p0) if _known(p0) else 0.0)
    k = np.asarray(k_seq, dtype=float)
    if k.size == 0:
        return (0.0 if scale == 0 else math.nan), 0.0, scale
    lo, hi = betting_cs(k, (0.0, 1.0), confidence)
    return scale * float(k.mean()), scale * lo, scale * hi


def _g(x: float) -> str:
    return f"{x:.3g}"


def judge_cell_cs(
    values: np.ndarray,
    golden: float | np.ndarray,
    faulted: np.ndarray | None,
    p0: float | None,
    *,
    metric: Metric,
    precision: Precision | None = None,
    confidence: float = 0.95,
    threshold: float = 0.01,
    ok: np.ndarray | None = None,
    nonfinite_as_sdc: bool = True,
    sequential: bool = False,
    t_confidence: float | None = None,
) -> CellJudgement:
    """Estimate a cell with :func:`estimate_cell` and decide whether it is conclusive.

    The rule is :func:`~pytei_ray.stats.judge_cell`'s: with a ``precision`` target, the
    targeted half-width (mean, absolute or relative to |golden|, or SDC rate) is at most the
    target; without one, at least 2 trials and the mean's interval clear of the SDC threshold
    level ``golden * (1 -+ threshold)``. For a bounded metric the interval is a confidence
    sequence at ``confidence``: valid at whatever look an adaptive campaign stops, so NO
    correction for the number of looks. ``sequential`` (an adaptive campaign's looks) gives the
    SDC rate a time-uniform interval too (:func:`rate_cs`; else Clopper-Pearson); an unbounded
    metric's t interval is computed at ``t_confidence`` (pass the look level there).

    Args:
        values: Metric per trial, in repetition order (NaN for failed trials).
        golden: Fault-free metric: one value, or one per trial (SDC is judged per trial).
        faulted: Per trial, at least one fault was sampled; None when unknown.
        p0: Probability of a fault-free trial, or None when unknown.
        metric: Range and direction (:func:`~pytei_ray.stats.resolve_metric`).
        precision: Target of an adaptive campaign, or None.
        confidence: Level of the intervals.
        threshold: Relative drop below golden that counts as an SDC.
        ok: Per trial, whether it ran; all True when None.
        nonfinite_as_sdc: An ok trial with a non-finite metric counts as SDC.
        sequential: The cell is judged at several looks (adaptive rounds).
        t_confidence: Level of an unbounded metric's t interval (default ``confidence``).

    Returns:
        A :class:`~pytei_ray.stats.CellJudgement` whose ``estimate`` is a
        :class:`CellEstimate` and ``confidence`` the mean interval's level.

    Example:
        >>> acc = Metric(bounds=(0.0, 1.0), higher_is_better=True)
        >>> j = judge_cell_cs(np.full(10, 0.8), 0.8, np.ones(10, bool), 0.0, metric=acc,
        ...                   precision=Precision("acc", 0.025))
        >>> j.conclusive, j.reason                # ten golden-looking trials prove little
        (False, 'half-width 0.298 > 0.025')
    """
    x = np.asarray(values, dtype=float)
    ran = np.ones(x.shape, bool) if ok is None else np.asarray(ok, dtype=bool)
    if np.ndim(golden) == 0:
        gold = float(golden)
        golds = np.full(x.shape, gold)
    else:
        golds = np.asarray(golden, dtype=float)
        seen = golds[np.isfinite(golds)]
        gold = float(seen.mean()) if seen.size else math.nan
    known = _known(p0) and faulted is not None
    hit = np.asarray(faulted, dtype=bool) if known else np.ones(x.shape, bool)
    est = estimate_cell(x, gold, hit if known else None, p0 if known else None, metric=metric,
                        confidence=confidence, ok=ran, t_confidence=t_confidence)
    sign = -1.0 if metric.higher_is_better is False else 1.0
    finite = np.isfinite(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = sign * (golds - x) / np.maximum(np.abs(golds), np.finfo(float).tiny)
    sdc = finite & (rel > threshold)
    if nonfinite_as_sdc:
        sdc |= ~finite
    counted = ran & hit
    k = int((sdc & counted).sum())
    pk = p0 if known else None
    if sequential:
        rate, s_lo, s_hi = rate_cs(sdc[counted], pk, confidence)
    else:
        rate, s_lo, s_hi = estimate_rate(k, int(counted.sum()), pk, confidence)
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
        reason = "no trial" if est.n == 0 else \
            f"half-width {_g(half)} {'<=' if conclusive else '>'} {_g(target)}"
    else:
        boundary = gold - sign * threshold * scale  # metric value at the SDC threshold
        if est.n < 2:
            conclusive, reason = False, "no trial" if est.n == 0 else "fewer than 2 trials"
        elif est.low <= boundary <= est.high:
            conclusive, reason = False, f"interval contains the SDC threshold {_g(boundary)}"
        else:
            conclusive = True
            reason = f"interval {'below' if est.high < boundary else 'above'} the SDC " \
                     f"threshold {_g(boundary)}"
    return CellJudgement(est, k, rate, s_lo, s_hi, est.confidence, bool(conclusive), reason)
