"""The stratified mean: equal to a direct computation from rows, coverage of its interval on the
rare-catastrophe family computed exactly over every outcome, and deterministic allocation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pytei_ray.faults.strata import GOLDEN, Stratum, bit_class_strata
from pytei_ray.stats.stratified import (
    StratumCell,
    allocate,
    empirical_bernstein,
    plan_strata,
    split_confidence,
    stratified_mean,
)

BOUNDS = (0.0, 1.0)


def test_stratified_estimate_equals_a_direct_computation_from_rows():
    rng = np.random.default_rng(3)
    rows = pd.DataFrame({"stratum": rng.choice(["C0/O1-", "C1-/O0-", "C2-/O0-"], 300),
                         "metric": rng.uniform(0.2, 0.9, 300)})
    weights = {"C0/O0": 0.6, "C0/O1-": 0.25, "C1-/O0-": 0.1, "C2-/O0-": 0.04}
    tail = 0.01
    cells = [StratumCell(weights["C0/O0"], exact=0.8)] + [
        StratumCell(weights[s], rows.loc[rows.stratum == s, "metric"].to_numpy())
        for s in ("C0/O1-", "C1-/O0-", "C2-/O0-")]
    est = stratified_mean(cells, BOUNDS, 0.9, tail=tail)
    # by hand, from the rows: each sampled stratum's interval at 1 - 0.1 / 3
    by = rows.groupby("stratum")["metric"]
    mean = 0.6 * 0.8 + sum(weights[s] * by.mean()[s] for s in by.groups) + tail * 0.5
    low = 0.6 * 0.8 + tail * 0.0
    high = 0.6 * 0.8 + tail * 1.0
    for s, g in by:
        lo, hi = empirical_bernstein(g.to_numpy(), BOUNDS, 1 - 0.1 / 3)
        low += weights[s] * lo
        high += weights[s] * hi
    assert est.mean == pytest.approx(mean, abs=1e-12)
    assert (est.low, est.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert est.levels == (None, 1 - 0.1 / 3, 1 - 0.1 / 3, 1 - 0.1 / 3)
    assert est.n == 300 and est.low <= est.mean <= est.high


def test_unsampled_and_bounded_strata_take_the_range_and_no_share_of_the_error():
    cells = [StratumCell(0.5, exact=0.8), StratumCell(0.3, np.full(40, 0.8)),
             StratumCell(0.15), StratumCell(0.05, bounded=True)]
    assert split_confidence(cells, 0.95) == [None, 0.975, 0.975, None]
    est = stratified_mean(cells, BOUNDS)
    lo, hi = empirical_bernstein(np.full(40, 0.8), BOUNDS, 0.975)
    assert est.low == pytest.approx(0.4 + 0.3 * lo)
    assert est.high == pytest.approx(0.4 + 0.3 * hi + 0.2)
    assert est.mean == pytest.approx(0.4 + 0.24 + 0.2 * 0.5)


@pytest.mark.parametrize("bad,match", [
    (dict(bounds=(0.0, math.inf)), "finite range"),
    (dict(bounds=(1.0, 0.0)), "low < high"),
    (dict(tail=0.2), "sum to 1"),
    (dict(confidence=1.0), "confidence"),
])
def test_bad_input_is_refused_before_any_work(bad, match):
    kw = dict(bounds=BOUNDS, confidence=0.95, tail=0.0) | bad
    with pytest.raises(ValueError, match=match):
        stratified_mean([StratumCell(0.5, exact=0.8), StratumCell(0.5, np.ones(3))], **kw)


def test_a_value_outside_the_bounds_names_the_stratum_and_trial():
    with pytest.raises(ValueError, match=r"Stratum 1: trial 2 has value 1\.5"):
        stratified_mean([StratumCell(0.5, exact=0.8), StratumCell(0.5, np.array([1, 1, 1.5]))],
                        BOUNDS)
    with pytest.raises(ValueError, match="bounds by the range has 2 trials"):
        stratified_mean([StratumCell(1.0, np.ones(2), bounded=True)], BOUNDS)


def test_allocation_is_deterministic_complete_and_never_takes_back():
    w, h = [0.6, 0.3, 0.09, 0.01], [0.2, 0.4, 0.5, 0.5]
    counts = [0, 0, 0, 0]
    for total in (10, 20, 40, 80, 160):
        new = allocate(w, h, counts, total)
        assert sum(new) == total and all(n >= c for n, c in zip(new, counts))
        assert new == allocate(w, h, counts, total)
        counts = new
    # a stratum already above its share keeps its trials, the others share the rest
    assert allocate([0.5, 0.5], [0.001, 0.5], [30, 0], 40) == [30, 10]
    # a known stratum (h = 0) gets nothing
    assert allocate([0.5, 0.5], [0.0, 0.3], [0, 0], 7) == [0, 7]


def test_plan_leaves_to_the_range_at_most_its_share_of_the_target():
    w = [0.5, 0.2, 0.004, 0.003, 0.002]
    keep = plan_strata(w, BOUNDS, 0.01)
    left = sum(x for x, k in zip(w, keep) if not k)
    assert keep[:2] == [True, True] and left * 1.0 / 2 <= 0.25 * 0.01
    assert plan_strata(w, BOUNDS, 0.01, tail=0.005) == [True, True, True, True, True]


# ---- coverage on the rare-catastrophe family, exact over every outcome -------------------------
N_SITES, N_CLASS = 32 * 10**4, 10**4  # 1e4 fp32 words; the class: one bit of each word


def _family(p0: float, q_c: float, q_o: float):
    """Weights and catastrophe chances of the strata golden, C0/O>=1, C>=1 at the BER of p0
    (p0 = 0: 200 expected faults), from the pgf of the two Binomials (not from the library)."""
    ber = 200 / N_SITES if p0 == 0 else -math.log(p0) / N_SITES
    n_o = N_SITES - N_CLASS
    def power(x: float, n: int) -> float:  # (1 - x) ** n without rounding 1 - x first
        return math.exp(n * math.log1p(-x))

    z_c, z_o = power(ber, N_CLASS), power(ber, n_o)
    g_c, g_o = power(ber * q_c, N_CLASS), power(ber * q_o, n_o)
    w = [z_c * z_o, z_c * (1 - z_o), 1 - z_c]
    q = [0.0, 1 - (g_o - z_o) / (1 - z_o), 1 - (g_c - z_c) / (1 - z_c) * g_o]
    return ber, w, q


def _coverage(w, q, size, n_total, target, golden=0.8, interval=empirical_bernstein):
    truth = golden - size * sum(wi * qi for wi, qi in zip(w, q))
    sample = plan_strata(w[1:], BOUNDS, target)
    counts = allocate(w[1:], [0.5 if s else 0.0 for s in sample], [0, 0], n_total)
    levels = split_confidence([StratumCell(w[0], exact=golden)] + [
        StratumCell(wi, bounded=not s) for wi, s in zip(w[1:], sample)], 0.95)[1:]
    lows, highs, probs = [], [], []
    for n, qi, level in zip(counts, q[1:], levels):
        c = np.arange(n + 1)
        pr = stats.binom.pmf(c, n, qi)
        if n == 0 or level is None:
            lows.append(np.zeros(1)), highs.append(np.ones(1)), probs.append(np.ones(1))
            continue
        ends = [interval(np.r_[np.full(n - k, golden), np.full(k, golden - size)],
                         BOUNDS, level) if pr[k] > 1e-12 else (0.0, 1.0) for k in c]
        lows.append(np.array([e[0] for e in ends])), highs.append(np.array([e[1] for e in ends]))
        probs.append(pr)
    low = w[0] * golden + w[1] * lows[0][:, None] + w[2] * lows[1][None, :]
    high = w[0] * golden + w[1] * highs[0][:, None] + w[2] * highs[1][None, :]
    covered = (low <= truth + 1e-12) & (truth - 1e-12 <= high)
    return float((probs[0][:, None] * probs[1][None, :] * covered).sum())


@pytest.mark.parametrize("size", [0.05, 0.5])
@pytest.mark.parametrize("leak", [(1.0, 0.0), (0.9, 1e-3), (0.5, 0.03)])
def test_stratified_interval_covers_the_rare_catastrophe_family(size, leak):
    worst = 1.0
    for p0 in (0.0, 0.5, 0.9, 0.99):
        _, w, q = _family(p0, *leak)
        for n_total in (10, 40, 160, 640):
            for target in (0.025, 0.01):
                worst = min(worst, _coverage(w, q, size, n_total, target))
    assert worst >= 0.94


def test_the_coverage_computation_catches_an_interval_that_collapses():
    # Negative control: a per-stratum interval that is the sample's min..max (zero width when
    # every trial agrees, as a t interval) misses the truth on this family.
    def minmax(x, bounds, level):
        return float(x.min()), float(x.max())

    _, w, q = _family(0.0, 1.0, 0.0)
    assert _coverage(w, q, 0.5, 40, 0.01) >= 0.94
    _, w, q = _family(0.0, 0.9, 1e-3)
    assert _coverage(w, q, 0.5, 40, 0.01, interval=minmax) < 0.5


def test_family_weights_match_the_library_strata():
    from pytei_ray.faults.strata import SiteClasses  # noqa: F401 - the fields read below

    class Split:
        n_class, n_other = N_CLASS, N_SITES - N_CLASS

    ber, w, _ = _family(0.5, 1.0, 0.0)
    got = [s.probability(Split, ber) for s in bit_class_strata(1)]
    assert got == pytest.approx(w, rel=1e-12)
    assert GOLDEN.probability(Split, ber) == pytest.approx(w[0], rel=1e-12)
    assert Stratum((1, None)).probability(Split, ber) == pytest.approx(w[2], rel=1e-12)


def test_post_stratified_interval_is_the_intersection_of_the_two_at_their_shares():
    from pytei_ray.stats.stratified import post_stratified_mean

    rng = np.random.default_rng(5)
    lab = rng.choice([1, 2], 200, p=[0.7, 0.3])
    x = np.where(lab == 2, 0.3 + 0.1 * rng.random(200), 0.8 - 0.01 * rng.random(200))
    w = [0.2, 0.56, 0.24]
    for share in (0.25, 0.5):
        est = post_stratified_mean(x, lab, w, 0.8, BOUNDS, 0.95, strata_share=share)
        u = stratified_mean([StratumCell(0.2, exact=0.8), StratumCell(0.8, x)], BOUNDS,
                            1 - 0.05 * (1 - share))
        s = stratified_mean([StratumCell(0.2, exact=0.8), StratumCell(0.56, x[lab == 1]),
                             StratumCell(0.24, x[lab == 2])], BOUNDS, 1 - 0.05 * share)
        assert est.low == pytest.approx(max(u.low, s.low), abs=1e-12)
        assert est.high == pytest.approx(min(u.high, s.high), abs=1e-12)
        assert est.mean == pytest.approx(s.mean) and est.n == 200
        assert est.levels == pytest.approx((None, 1 - 0.05 * share / 2, 1 - 0.05 * share / 2))
    with pytest.raises(ValueError, match="one stratum label in 1..2"):
        post_stratified_mean(x, np.zeros(200, int), w, 0.8, BOUNDS)


def test_post_stratified_interval_covers_the_rare_catastrophe_family():
    from pytei_ray.stats.stratified import post_stratified_mean

    rng = np.random.default_rng(11)
    worst = 1.0
    for p0 in (0.0, 0.5, 0.9):
        _, w, q = _family(p0, 0.9, 1e-3)
        hit = w[2] / (w[1] + w[2])
        truth = 0.8 - 0.5 * (w[1] * q[1] + w[2] * q[2])
        for n in (10, 40, 160):
            covered = 0
            for _ in range(150):
                lab = np.where(rng.random(n) < hit, 2, 1)
                cat = rng.random(n) < np.where(lab == 2, q[2], q[1])
                e = post_stratified_mean(0.8 - 0.5 * cat, lab, w, 0.8, BOUNDS)
                covered += e.low <= truth <= e.high
            worst = min(worst, covered / 150)
    assert worst >= 0.94
