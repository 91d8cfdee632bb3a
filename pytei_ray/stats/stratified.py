"""The stratified mean of a bounded metric, its honest interval, and the allocation of trials.

The fault distribution splits into strata of exactly known probability ``w_s`` (see
:mod:`pytei_ray.faults.strata`): the cell mean is ``mu = sum_s w_s mu_s + w_tail mu_tail``,
where ``mu_s`` is the metric's mean within stratum ``s`` (known exactly for the golden stratum)
and the tail (strata a design leaves out, e.g. more than ``k_max`` faults) has a known mass.

Interval: each sampled stratum gets an interval from a per-stratum method that holds for every
distribution on the metric's range ``[a, b]`` (a :data:`StratumInterval`); an unsampled stratum
and the tail get ``[a, b]``, which holds surely. **Confidence split**: the error ``1 - level``
is divided equally among the strata the design samples (weight > 0, value not known), fixed
by the design before any trial runs; by the union bound the sum ``sum_s w_s [lo_s, hi_s] +
w_tail [a, b]`` then covers ``mu`` with probability at least ``level``. With a time-uniform
per-stratum method (a confidence sequence) this holds at every look, whatever rule decides
the looks and the allocation; with a fixed-sample method (:func:`empirical_bernstein`, the
default) it holds for counts fixed in advance.

A stratum the design leaves to the range (``bounded``, chosen from the weights alone by
:func:`plan_strata`) takes no share of the error. :func:`post_stratified_mean` applies the same
combination to unstratified trials labelled after the fact by their stratum.

Point estimate: ``sum_s w_s mean_s``, with the exact value of a known stratum and the range's
midpoint ``(a + b) / 2`` for an unsampled stratum and for the tail (so the estimate lies in the
interval; their weight is part of the interval's width).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .intervals import check_confidence

__all__ = ["StratifiedEstimate", "StratumCell", "StratumInterval", "allocate",
           "empirical_bernstein", "estimate_from_rows", "plan_strata", "post_stratified_mean",
           "split_confidence", "stratified_mean"]

#: A per-stratum interval: ``(values, (a, b), level) -> (low, high)`` for the mean of a
#: distribution on ``[a, b]``, valid for every such distribution.
StratumInterval = Callable[[np.ndarray, tuple[float, float], float], tuple[float, float]]


def empirical_bernstein(values: np.ndarray, bounds: tuple[float, float],
                        confidence: float) -> tuple[float, float]:
    """Maurer & Pontil's empirical Bernstein interval (COLT 2009, Thm 4), both sides.

    Valid for every distribution on ``bounds`` and a sample size fixed in advance; its width
    follows the sample's spread, so a stratum whose trials agree gets ``~ 2.3 R log(4/alpha) /
    n`` instead of Hoeffding's ``R / sqrt(n)``. Fewer than 2 values: the range.

    Example:
        >>> lo, hi = empirical_bernstein(np.full(100, 0.8), (0.0, 1.0), 0.95)
        >>> round(lo, 3), round(hi, 3)
        (0.697, 0.903)
    """
    a, b = bounds
    x = np.asarray(values, dtype=float)
    n = x.size
    if n < 2:
        return a, b
    r = b - a
    log_term = math.log(4.0 / (1.0 - confidence))  # ln(2 / delta), delta = alpha / 2 a side
    var = float(np.var((x - a) / r, ddof=1))
    half = r * (math.sqrt(2.0 * var * log_term / n) + 7.0 * log_term / (3.0 * (n - 1)))
    m = float(x.mean())
    return max(a, m - half), min(b, m + half)


@dataclass(frozen=True)
class StratumCell:
    """One stratum of a cell: its exact probability and its trials' metric values.

    Attributes:
        weight: the stratum's probability (exact, from the fault model).
        values: the metric of its trials (empty: none run yet).
        exact: the stratum's value when it is known without trials (the golden stratum).
        bounded: the design does not sample it: its mean is bounded by the range and it takes
            no share of the error (see :func:`plan_strata`).
    """

    weight: float
    values: np.ndarray = field(default_factory=lambda: np.empty(0))
    exact: float | None = None
    bounded: bool = False

    @property
    def sampled(self) -> bool:
        """Whether the design samples this stratum (value not known, weight > 0, not bounded)."""
        return self.exact is None and self.weight > 0.0 and not self.bounded


@dataclass(frozen=True)
class StratifiedEstimate:
    """A stratified cell mean with its interval.

    Attributes:
        mean: point estimate.
        low, high: interval at the overall level.
        n: trials used.
        tail: mass the design leaves out (bounded by the range).
        levels: per stratum, the level its interval was computed at (None: known or weight 0).
        parts: per stratum, ``(low, high)`` of its mean (the range when unsampled).
    """

    mean: float
    low: float
    high: float
    n: int
    tail: float
    levels: tuple[float | None, ...]
    parts: tuple[tuple[float, float], ...]

    @property
    def halfwidth(self) -> float:
        """Half the interval's width."""
        return (self.high - self.low) / 2.0


def _check_bounds(bounds: tuple[float, float] | None) -> tuple[float, float]:
    if bounds is None or len(bounds) != 2 or not all(math.isfinite(v) for v in bounds) or \
            not bounds[0] < bounds[1]:
        raise ValueError("Expected argument `bounds` to be a finite range (low, high) with "
                         f"low < high (stratified intervals are for bounded metrics), but got "
                         f"{bounds!r}.")
    return float(bounds[0]), float(bounds[1])


def split_confidence(cells: Sequence[StratumCell], confidence: float) -> list[float | None]:
    """Per stratum, the level of its interval: ``1 - (1 - confidence) / S`` for each of the
    ``S`` strata the design samples, None for the others (known value or weight 0)."""
    check_confidence(confidence)
    n_sampled = sum(c.sampled for c in cells)
    alpha = (1.0 - confidence) / max(n_sampled, 1)
    return [1.0 - alpha if c.sampled else None for c in cells]


def _check_cells(cells: Sequence[StratumCell], tail: float, a: float, b: float) -> None:
    weights = [c.weight for c in cells] + [tail]
    if any(not math.isfinite(w) or w < 0.0 for w in weights):
        raise ValueError(f"Expected stratum weights and tail in [0, 1], but got {weights!r}.")
    if abs(sum(weights) - 1.0) > 1e-9:
        raise ValueError("Expected the stratum weights and the tail to sum to 1 (a partition of "
                         f"the fault distribution), but they sum to {sum(weights)!r}.")
    for i, c in enumerate(cells):
        x = np.asarray(c.values, dtype=float)
        bad = np.flatnonzero(~((x >= a) & (x <= b)))
        if bad.size:
            raise ValueError(f"Stratum {i}: trial {int(bad[0])} has value {float(x[bad[0]])!r} "
                             f"outside the metric's bounds [{a}, {b}]; fix the bounds or the "
                             "metric.")
        if c.exact is not None and not a <= c.exact <= b:
            raise ValueError(f"Stratum {i}: its known value {c.exact!r} is outside the "
                             f"metric's bounds [{a}, {b}].")


def stratified_mean(cells: Sequence[StratumCell], bounds: tuple[float, float],
                    confidence: float = 0.95,
                    interval: StratumInterval = empirical_bernstein,
                    tail: float = 0.0) -> StratifiedEstimate:
    """The stratified mean of a bounded metric and its interval (see the module docstring).

    Args:
        cells: the strata, with exact weights; with ``tail`` they must sum to 1.
        bounds: the metric's finite range ``(a, b)``.
        confidence: overall two-sided level.
        interval: the per-stratum method (valid for any distribution on ``bounds``).
        tail: probability of the faults no stratum covers (bounded by the range).

    Raises:
        ValueError: for unbounded ``bounds``, weights that do not sum to 1, or a value
            outside ``bounds`` (naming the stratum and the trial), before anything is computed.

    Example:
        >>> cells = [StratumCell(0.9, exact=0.8), StratumCell(0.1, np.full(50, 0.8))]
        >>> e = stratified_mean(cells, (0.0, 1.0))
        >>> e.mean, round(e.low, 4), round(e.high, 4), e.levels
        (0.8, 0.7791, 0.82, (None, 0.95))
    """
    a, b = _check_bounds(bounds)
    _check_cells(cells, tail, a, b)
    levels = split_confidence(cells, confidence)
    mid = (a + b) / 2.0
    mean = low = high = 0.0
    parts: list[tuple[float, float]] = []
    n = 0
    for c, level in zip(cells, levels):
        x = np.asarray(c.values, dtype=float)
        if c.bounded and x.size:
            raise ValueError(f"A stratum the design bounds by the range has {x.size} trials; "
                             "sample it in the design (bounded=False) to use them.")
        if c.exact is not None:
            lo = hi = m = float(c.exact)
        elif level is not None and x.size:
            lo, hi = interval(x, (a, b), level)
            lo, hi, m = max(a, lo), min(b, hi), float(x.mean())
            n += x.size
        else:
            lo, hi, m = a, b, mid
        parts.append((lo, hi))
        mean += c.weight * m
        low += c.weight * lo
        high += c.weight * hi
    mean += tail * mid
    low += tail * a
    high += tail * b
    return StratifiedEstimate(mean, low, high, n, float(tail), tuple(levels), tuple(parts))


def post_stratified_mean(values: np.ndarray, stratum: np.ndarray, weights: Sequence[float],
                         golden: float, bounds: tuple[float, float], confidence: float = 0.95,
                         interval: StratumInterval = empirical_bernstein,
                         bounded: Sequence[bool] | None = None,
                         strata_share: float = 0.25) -> StratifiedEstimate:
    """Unstratified trials, labelled after the fact by their stratum: the unstratified interval
    (at ``1 - strata_share`` of the error) and the stratified one (at ``strata_share``),
    intersected.

    The trials are drawn from the faulted law (``>= 1`` fault), as an unstratified campaign
    draws them; each one's stratum (e.g. whether a flip hit the class) is read off its fault
    map. Within a stratum they are then i.i.d. from that stratum's law, so per-stratum
    intervals hold as in a stratified design (with a time-uniform per-stratum method, at any
    look); the intersection holds with probability ``>= confidence`` by the union bound, and
    is never much wider than the better of the two. The default share (a quarter of the error
    to the stratified interval) costs the unstratified one ``log(2 / (0.75 alpha))`` instead
    of ``log(2 / alpha)`` (~8% at 95%), and keeps most of the stratified gain where there is
    one (benchmarks/strata.py: 6.7x instead of 8.4x with an even split, on the worst cell).

    Args:
        values: metric of the faulted trials.
        stratum: per trial, its stratum ``1 .. S`` (0 is the golden, fault-free stratum).
        weights: ``S + 1`` exact probabilities, ``weights[0]`` the golden one (``p0``).
        golden: the golden metric.
        bounds: the metric's finite range.
        confidence: overall level.
        interval: the per-stratum method.
        bounded: per stratum ``1 .. S``, whether the design leaves it to the range
            (:func:`plan_strata`); its trials then count in the unstratified interval only.
        strata_share: the part of the error ``1 - confidence`` given to the stratified
            interval, in (0, 1); fixed before any trial, as the union bound requires.

    Example:
        >>> x = np.r_[np.full(60, 0.8), np.full(40, 0.3)]
        >>> lab = np.r_[np.ones(60, int), np.full(40, 2)]
        >>> e = post_stratified_mean(x, lab, [0.0, 0.6, 0.4], 0.8, (0.0, 1.0))
        >>> round(e.mean, 3), e.low <= 0.6 <= e.high
        (0.6, True)
    """
    check_confidence(confidence)
    x = np.asarray(values, dtype=float)
    lab = np.asarray(stratum)
    w = [float(v) for v in weights]
    skip = list(bounded) if bounded is not None else [False] * (len(w) - 1)
    if lab.shape != x.shape or (lab.size and (lab.min() < 1 or lab.max() >= len(w))):
        raise ValueError(f"Expected one stratum label in 1..{len(w) - 1} per trial, but got "
                         f"labels {sorted(set(lab.tolist()))} for {x.size} values.")
    if not 0.0 < strata_share < 1.0:
        raise ValueError(f"Expected argument `strata_share` in (0, 1), but got {strata_share!r}.")
    alpha = 1.0 - confidence
    whole = stratified_mean([StratumCell(w[0], exact=golden),
                             StratumCell(1.0 - w[0], np.empty(0) if all(skip) else x,
                                         bounded=all(skip))], bounds,
                            1.0 - alpha * (1.0 - strata_share), interval)
    cells = [StratumCell(w[0], exact=golden)] + [
        StratumCell(w[i], np.empty(0) if skip[i - 1] else x[lab == i], bounded=skip[i - 1])
        for i in range(1, len(w))]
    strat = stratified_mean(cells, bounds, 1.0 - alpha * strata_share, interval)
    low, high = max(whole.low, strat.low), min(whole.high, strat.high)
    return StratifiedEstimate(min(max(strat.mean, low), high), low, high, whole.n, 0.0,
                              strat.levels, strat.parts)


_LABELS = {"C0/O1-": 1, "C1-/O0-": 2}  # the faulted strata of faults.strata.bit_class_strata(1)


def estimate_from_rows(rows: Any, metric: str, bounds: tuple[float, float],
                       confidence: float = 0.95, interval: StratumInterval = empirical_bernstein,
                       strata_share: float = 0.25) -> StratifiedEstimate:
    """A post-stratified cell from its rows alone (the columns of
    :data:`pytei_ray.faults.poststrata.STRATA_COLUMNS`, ``p_no_fault``, ``golden_<metric>``).

    Weights: ``w0 = p_no_fault``, ``w2 = p_class_hit`` (>= 1 fault in the class), ``w1 = 1 -
    w0 - w2``; the faulted rows (stratum not ``"C0/O0"``) are the trials, in repetition order
    (a confidence sequence's bets depend on it), labelled by their ``stratum``; then
    :func:`post_stratified_mean`.

    Raises:
        ValueError: when the rows mix points (several ``p_no_fault``, ``p_class_hit`` or
            golden values) or lack the strata columns.
    """
    need = {metric, f"golden_{metric}", "p_no_fault", "p_class_hit", "stratum"}
    missing = sorted(need - set(rows.columns))
    if missing:
        raise ValueError(f"Rows of a post-stratified cell need the columns {missing}; was the "
                         "campaign run with strata=ClassStrata(...)?")
    one = {}
    for col in (f"golden_{metric}", "p_no_fault", "p_class_hit"):
        values = rows[col].unique()
        if len(values) != 1:
            raise ValueError(f"Expected the rows of one cell (one value of {col!r}), but got "
                             f"{sorted(values.tolist())}.")
        one[col] = float(values[0])
    w0, w2 = one["p_no_fault"], one["p_class_hit"]
    faulted = rows[rows["stratum"] != "C0/O0"]
    if "repetition" in faulted.columns:  # a confidence sequence bets in the order of drawing
        faulted = faulted.sort_values("repetition", kind="stable")
    unknown = sorted(set(faulted["stratum"]) - set(_LABELS))
    if unknown:
        raise ValueError(f"Unknown strata {unknown} (expected {sorted(_LABELS)} or 'C0/O0').")
    labels = faulted["stratum"].map(_LABELS).to_numpy(dtype=np.int64)
    return post_stratified_mean(faulted[metric].to_numpy(dtype=float), labels,
                                [w0, max(0.0, 1.0 - w0 - w2), w2], one[f"golden_{metric}"],
                                bounds, confidence, interval, strata_share=strata_share)


def plan_strata(weights: Sequence[float], bounds: tuple[float, float], target: float,
                tail: float = 0.0, share: float = 0.25) -> list[bool]:
    """Which strata a design samples: the fewest, heaviest first, such that the strata left
    out and the tail together weigh at most ``2 * share * target / (b - a)``, so that bounding
    them by the range adds at most ``share * target`` to the half-width. A function of the
    design alone (weights, range, target), fixed before any trial, as the confidence split
    requires. Pass the weights of the strata whose value is unknown (not the golden one).

    Example:
        >>> plan_strata([0.0967, 0.0031], (0.0, 1.0), 0.01), plan_strata([0.5, 0.5], (0, 1), 0.01)
        ([True, False], [True, True])
    """
    a, b = _check_bounds(bounds)
    if not target > 0:
        raise ValueError(f"Expected argument `target` > 0, but got {target!r}.")
    budget = 2.0 * share * target / (b - a) - tail
    w = np.asarray(weights, dtype=float)
    keep = [False] * w.size
    left = float(w.sum())
    for i in sorted(range(w.size), key=lambda i: (-w[i], i)):
        if left <= budget:
            break
        keep[i] = True
        left -= float(w[i])
    return keep


def allocate(weights: Sequence[float], halfwidths: Sequence[float], counts: Sequence[int],
             total: int) -> list[int]:
    """Trials per stratum after the next round: ``total`` in all, none fewer than ``counts``,
    the new ones where ``weight * halfwidth`` is largest. Deterministic.

    The targets ``n_s`` are proportional to ``w_s h_s`` (water-filled above ``counts``), then
    rounded by largest remainder, ties to the lower index. With ``h_s ~ c / n_s`` (a stratum
    whose trials agree) this settles at ``n_s ~ sqrt(w_s)``, which minimises ``sum_s w_s h_s``
    for a fixed total; a stratum with ``w_s h_s = 0`` (known, or weight 0) gets no trial.

    Example:
        >>> allocate([0.5, 0.3, 0.2], [0.5, 0.5, 0.5], [0, 0, 0], 10)
        [5, 3, 2]
        >>> allocate([0.5, 0.3, 0.2], [0.01, 0.5, 0.5], [5, 3, 2], 20)
        [5, 9, 6]
    """
    score = np.array([w * h for w, h in zip(weights, halfwidths)], dtype=float)
    score[~np.isfinite(score)] = 0.0
    have = np.asarray(counts, dtype=np.int64)
    extra = int(total) - int(have.sum())
    if extra <= 0 or score.sum() <= 0.0:
        return have.tolist()
    fixed = score <= 0.0
    while True:  # water-filling: strata already above their share keep their count
        free = ~fixed
        budget = float(total - have[fixed].sum())
        target = np.where(free, budget * score / score[free].sum(), have.astype(float))
        over = free & (target < have)
        if not over.any():
            break
        fixed |= over
    floor = np.maximum(np.floor(target).astype(np.int64), have)
    left = int(total) - int(floor.sum())
    frac = np.where(fixed, -1.0, target - floor)
    for i in sorted(range(len(frac)), key=lambda i: (-frac[i], i))[:max(left, 0)]:
        floor[i] += 1
    return floor.tolist()
