"""Simulated cells with a known true mean, for the coverage tests and benchmarks/intervals.py.

A cell has ``p0`` (chance of a fault-free trial: the golden value ``GOLDEN``) and a family for a
faulted trial's metric on [0, 1]. The interval computations are batched over many simulated
cells (one row each) with :func:`pytei_ray.stats.betting_cs`, by the formula of
:func:`pytei_ray.stats.estimate_cell` (``tests/test_stats_cs.py`` checks that they agree).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats as st

from pytei_ray.stats import betting_cs, capital, student_t_ppf
from pytei_ray.stats.betting import TRUNCATION

GOLDEN = 0.8
BOUNDS = (0.0, 1.0)
#: The grid of issue 19: catastrophe chance given a fault, catastrophe size, p0, trials.
CAT_CHANCES = (0.003, 0.01, 0.03, 0.1, 0.5)
CAT_SIZES = (0.05, 0.5)
P0S = (0.0, 0.5, 0.9, 0.99)
TRIALS = (10, 20, 40, 80, 160, 320, 640)
TARGETS = (0.01, 0.025)


def family(name: str):
    """``(draw(rng, shape), mean)`` of a faulted trial's metric on [0, 1].

    ``cat:Q:S``: golden with chance 1-Q, golden - S with chance Q (rare catastrophes);
    ``normal``: N(0.75, 0.05) clipped to [0, 1]; ``beta``: Beta(8, 2); ``bernoulli:P``: 0/1.
    """
    kind, *args = name.split(":")
    if kind == "cat":
        q, s = float(args[0]), float(args[1])
        return (lambda rng, shape: np.where(rng.random(shape) < q, GOLDEN - s, GOLDEN),
                GOLDEN - q * s)
    if kind == "normal":
        mu, sd = 0.75, 0.05
        a, b = (0 - mu) / sd, (1 - mu) / sd  # mean of the clipped normal, exactly
        mean = (mu * (st.norm.cdf(b) - st.norm.cdf(a)) + sd * (st.norm.pdf(a) - st.norm.pdf(b))
                + 1.0 * st.norm.sf(b))
        return lambda rng, shape: np.clip(rng.normal(mu, sd, shape), 0, 1), float(mean)
    if kind == "beta":
        return lambda rng, shape: rng.beta(8, 2, shape), 0.8
    if kind == "bernoulli":
        p = float(args[0])
        return lambda rng, shape: (rng.random(shape) < p).astype(float), p
    raise ValueError(name)


def draw_cells(rng: np.random.Generator, name: str, p0: float, reps: int, n: int):
    """``(values, faulted, truth)``: ``reps`` cells of ``n`` trials each (rows)."""
    draw, mean1 = family(name)
    faulted = rng.random((reps, n)) >= p0
    values = np.where(faulted, draw(rng, (reps, n)), GOLDEN)
    return values, faulted, p0 * GOLDEN + (1 - p0) * mean1


def cs_cells(values, faulted, p0: float, n: int, confidence: float = 0.95):
    """``(mean, low, high)`` per row over its first ``n`` trials: estimate_cell's formula."""
    x1 = np.where(faulted[:, :n], values[:, :n], np.nan)
    lo1, hi1 = betting_cs(x1, BOUNDS, confidence)
    n1 = faulted[:, :n].sum(1)
    mean1 = np.nansum(x1, axis=1) / np.maximum(n1, 1)
    mean = np.where(n1 > 0, p0 * GOLDEN + (1 - p0) * mean1, GOLDEN)
    return mean, GOLDEN + (1 - p0) * (lo1 - GOLDEN), GOLDEN + (1 - p0) * (hi1 - GOLDEN)


def t_cells(values, faulted, p0: float, n: int, confidence: float = 0.95):
    """``(mean, low, high)`` per row by the OLD estimate_mean (Student-t on faulted trials)."""
    f = faulted[:, :n]
    x1 = np.where(f, values[:, :n], np.nan)
    n1 = f.sum(1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # rows with < 2 faulted trials
        mean1 = np.nanmean(x1, axis=1)
        sd = np.nanstd(x1, axis=1, ddof=1)
        q = np.array([student_t_ppf(0.5 + confidence / 2, k - 1) if k >= 2 else math.nan
                      for k in n1])
        half = q * sd / np.sqrt(n1)
    lo1 = np.where(n1 >= 2, mean1 - half, BOUNDS[0])
    hi1 = np.where(n1 >= 2, mean1 + half, BOUNDS[1])
    mean = np.where(n1 > 0, p0 * GOLDEN + (1 - p0) * mean1, GOLDEN)
    low = np.clip(GOLDEN + (1 - p0) * (lo1 - GOLDEN), *BOUNDS)
    high = np.clip(GOLDEN + (1 - p0) * (hi1 - GOLDEN), *BOUNDS)
    return np.clip(mean, *BOUNDS), low, high


def adaptive(values, faulted, p0: float, target: float, method=cs_cells, looks=TRIALS,
             confidence: float = 0.95):
    """Stop each row at the first look where mean +- ``target`` holds its interval (or the last).

    Returns ``(mean, low, high, stop, conclusive)`` per row at its stopping look.
    """
    reps = len(values)
    out = np.full((3, reps), np.nan)
    stop = np.full(reps, looks[-1])
    done = np.zeros(reps, bool)
    for n in looks:
        rows = np.flatnonzero(~done)
        if rows.size == 0:
            break
        mean, low, high = method(values[rows], faulted[rows], p0, n, confidence)
        out[:, rows] = mean, low, high
        hit = np.maximum(high - mean, mean - low) <= target  # CellEstimate.halfwidth
        done[rows[hit]] = True
        stop[rows[hit]] = n
    return out[0], out[1], out[2], stop, done


def faulted_first(values, faulted):
    """Each row's faulted values first, in order (NaN after), columns cut to the most faulted."""
    order = np.argsort(~faulted, axis=1, kind="stable")
    x1 = np.take_along_axis(np.where(faulted, values, np.nan), order, axis=1)
    return x1[:, :int(faulted.sum(axis=1).max(initial=0))]


def first_miss(values, faulted, truth1: float, confidence: float = 0.95,
               truncation: float = TRUNCATION) -> np.ndarray:
    """Per row, the number of faulted trials after which the sequence first excludes ``truth1``
    (the faulted-trial mean), or a number above every count when it never does.

    The running intersection after ``k`` faulted trials holds ``truth1`` iff neither capital
    process at ``truth1`` has reached ``2 / alpha`` by then: coverage at every count from one
    evaluation per row (``test_stats_cs_coverage`` checks it against the intervals).
    """
    x1 = faulted_first(values, faulted)
    kp, km = capital(x1, truth1, confidence, truncation=truncation)
    hit = np.maximum(kp, km) >= 2.0 / (1.0 - confidence)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, values.shape[1] + 1)


def adaptive_fast(values, faulted, p0: float, target: float, truth1: float, looks=TRIALS,
                  confidence: float = 0.95, truncation: float = TRUNCATION):
    """:func:`adaptive` with ``cs_cells``, deciding each look without computing the bounds.

    ``mean +- target`` holds the cell interval iff the faulted-trial sequence has rejected
    ``m_lo = golden + (mean - target - golden) / (1 - p0)`` from below and ``m_hi`` (with
    ``+ target``) from above (a side beyond the range holds trivially): one capital
    evaluation per look instead of a root search. Coverage at the stop comes from
    :func:`first_miss` (``truth1``: the faulted-trial mean). Returns
    ``(mean, covered, stop, conclusive)`` per row.
    """
    reps = len(values)
    thr = 2.0 / (1.0 - confidence)
    v1 = faulted_first(values, faulted)
    counts = faulted.cumsum(axis=1)
    mean_out = np.full(reps, np.nan)
    stop = np.full(reps, looks[-1])
    done = np.zeros(reps, bool)
    for n in looks:
        rows = np.flatnonzero(~done)
        if rows.size == 0:
            break
        n1 = counts[rows, n - 1]
        width = int(n1.max(initial=0))
        x1 = np.where(np.arange(width) < n1[:, None], v1[rows, :width], np.nan)
        mean1 = np.nansum(x1, axis=1) / np.maximum(n1, 1)
        mean = np.where(n1 > 0, p0 * GOLDEN + (1 - p0) * mean1, GOLDEN)
        mean_out[rows] = mean
        m_lo = GOLDEN + (mean - target - GOLDEN) / (1 - p0)
        m_hi = GOLDEN + (mean + target - GOLDEN) / (1 - p0)
        kp, km = capital(x1, np.clip(m_lo, 0, 1), confidence, m_minus=np.clip(m_hi, 0, 1),
                         truncation=truncation)
        low_ok = (m_lo <= 0) | (kp.max(axis=1, initial=0) >= thr)
        high_ok = (m_hi >= 1) | (km.max(axis=1, initial=0) >= thr)
        hit = low_ok & high_ok
        done[rows[hit]] = True
        stop[rows[hit]] = n
    miss = first_miss(values, faulted, truth1, confidence, truncation)
    return mean_out, miss > counts[np.arange(reps), stop - 1], stop, done
