"""Coverage of the confidence-sequence intervals on the grid of issue 19, by seeded simulation.

Cells: a faulted trial's metric from the rare-catastrophe family (golden 0.8, a drop of 0.05 or
0.5 with chance 0.3% to 50%) or a normal, Beta or Bernoulli family; the chance of a fault-free
trial p0 in {0, 0.5, 0.9, 0.99}; 10 to 640 trials; fixed counts and adaptive runs at targets
+-0.01 and +-0.025 at nominal 95%. The old Student-t interval is measured on the same grid (by
exact enumeration over the catastrophe counts) to show what the new one repairs. Figures are
printed (``pytest -s``); ``benchmarks/intervals.py`` runs the heavier sweeps.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from coverage_sim import (
    CAT_CHANCES,
    CAT_SIZES,
    GOLDEN,
    P0S,
    TARGETS,
    TRIALS,
    adaptive,
    adaptive_fast,
    cs_cells,
    draw_cells,
    family,
    first_miss,
    t_cells,
)
from scipy import stats as st

from pytei_ray.stats import Metric, estimate_mean, paired_comparison

CAT = [f"cat:{q}:{s}" for q in CAT_CHANCES for s in CAT_SIZES]
FAMILIES = ["normal", "beta", "bernoulli:0.5", "bernoulli:0.02"]


def fixed_coverage(rng, name: str, p0: float, reps: int) -> np.ndarray:
    """Coverage at each count of TRIALS, from the first count that excludes the truth."""
    values, faulted, _ = draw_cells(rng, name, p0, reps, TRIALS[-1])
    miss = first_miss(values, faulted, family(name)[1])
    n1 = np.cumsum(faulted, axis=1)[:, np.array(TRIALS) - 1]  # faulted trials at each count
    return (miss[:, None] > n1).mean(axis=0)


@pytest.mark.parametrize("names", [CAT, FAMILIES], ids=["rare-catastrophe", "families"])
def test_fixed_counts_cover_in_every_cell(names) -> None:
    rng = np.random.default_rng(2024)
    worst = {}
    for name, p0 in itertools.product(names, P0S):
        cov = fixed_coverage(rng, name, p0, 1000)
        worst[(name, p0)] = (float(cov.min()), TRIALS[int(cov.argmin())])
    print("\nlowest coverage over 10..640 trials per (family, p0):")
    for key, (c, n) in sorted(worst.items(), key=lambda kv: kv[1][0])[:8]:
        print(f"  {key}: {c:.3f} at {n} trials")
    assert min(c for c, _ in worst.values()) >= 0.94, worst


def test_first_miss_equals_the_reported_intervals() -> None:
    """The shortcut of the grid test counts exactly the cells the intervals miss."""
    rng = np.random.default_rng(5)
    for name, p0, n in (("cat:0.5:0.5", 0.0, 160), ("bernoulli:0.5", 0.5, 80),
                        ("cat:0.03:0.5", 0.0, 640)):
        values, faulted, truth = draw_cells(rng, name, p0, 300, n)
        _, low, high = cs_cells(values, faulted, p0, n)
        covered = (low <= truth) & (truth <= high)
        miss = first_miss(values, faulted, family(name)[1])
        np.testing.assert_array_equal(covered, miss > faulted.sum(axis=1))
        print(f"\n{name} p0={p0} n={n}: {covered.mean():.3f}")


def old_t_exact_coverage(q: float, size: float, n: int) -> dict[float, float]:
    """Exact coverage of the old p0 + Student-t interval on the two-point family, per p0."""
    n1 = np.arange(n + 1)[:, None]
    k = np.arange(n + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean1 = GOLDEN - size * k / n1
        sd = size * np.sqrt(k * (n1 - k) / (n1 * (n1 - 1)))
        half = st.t.ppf(0.975, n1 - 1) * sd / np.sqrt(n1)
        cov = np.where(n1 >= 2, np.abs(mean1 - (GOLDEN - q * size)) <= half, True)
    given_n1 = np.nansum(np.where(k <= n1, st.binom.pmf(k, n1, q) * cov, 0.0), axis=1)
    return {p0: float(st.binom.pmf(n1[:, 0], n, 1 - p0) @ given_n1) for p0 in P0S}


def test_old_t_interval_fails_the_grid_where_the_sequence_holds() -> None:
    x = np.array([0.8] * 7 + [0.3, 0.8, 0.8])  # the enumeration's formula is estimate_mean's
    e = estimate_mean(x, 0.8, np.ones(10, bool), 0.0, bounds=(0.0, 1.0))
    half = st.t.ppf(0.975, 9) * 0.5 * np.sqrt(9 / 90) / np.sqrt(10)
    assert (e.low, e.high) == pytest.approx((0.75 - half, 0.75 + half))
    old = {(q, s, p0, n): c for q, s, n in itertools.product(CAT_CHANCES, CAT_SIZES, TRIALS)
           for p0, c in old_t_exact_coverage(q, s, n).items()}
    bad = {k: v for k, v in old.items() if v < 0.94}
    print(f"\nold t interval: {len(bad)} of {len(old)} cells below 94%, worst "
          f"{min(old.values()):.3f} at {min(old, key=old.get)}")
    assert len(bad) >= len(old) // 4 and min(old.values()) < 0.3
    for p0, n, issue in ((0.9, 10, 0.75), (0.9, 40, 0.19), (0.5, 20, 0.26), (0.0, 160, 0.86)):
        assert old[(0.03, 0.5, p0, n)] == pytest.approx(issue, abs=0.006)  # issue 19's table
    # ...and the same cells with the confidence sequence (fixed counts, see above): >= 94%
    rng = np.random.default_rng(11)
    for (q, s, p0, n), _ in sorted(bad.items(), key=lambda kv: kv[1])[:6]:
        cov = fixed_coverage(rng, f"cat:{q}:{s}", p0, 1000)[TRIALS.index(n)]
        assert cov >= 0.94, (q, s, p0, n, cov)


def test_fast_adaptive_decisions_equal_the_intervals() -> None:
    rng = np.random.default_rng(9)
    for name, p0, target in (("cat:0.1:0.5", 0.0, 0.025), ("bernoulli:0.5", 0.9, 0.025),
                             ("cat:0.03:0.5", 0.5, 0.01)):
        values, faulted, truth = draw_cells(rng, name, p0, 150, TRIALS[-1])
        mean, low, high, stop, done = adaptive(values, faulted, p0, target)
        mean_f, covered_f, stop_f, done_f = adaptive_fast(values, faulted, p0, target,
                                                          family(name)[1])
        np.testing.assert_array_equal(stop, stop_f)
        np.testing.assert_array_equal(done, done_f)
        np.testing.assert_allclose(mean, mean_f, atol=1e-12)
        np.testing.assert_array_equal((low <= truth) & (truth <= high), covered_f)


@pytest.mark.parametrize("names", [CAT, FAMILIES], ids=["rare-catastrophe", "families"])
def test_adaptive_runs_cover_and_conclusive_cells_are_within_target(names) -> None:
    """Stop at the first look where mean +- target holds the interval (no look correction)."""
    rng = np.random.default_rng(7)
    rows, pooled = [], [0, 0]
    for name, p0 in itertools.product(names, P0S):
        values, faulted, truth = draw_cells(rng, name, p0, 600, TRIALS[-1])
        for target in TARGETS:
            mean, covered, stop, done = adaptive_fast(values, faulted, p0, target,
                                                      family(name)[1])
            close = np.abs(mean[done] - truth) <= target
            pooled[0] += int(close.sum())
            pooled[1] += int(done.sum())
            rows.append((name, p0, target, float(covered.mean()), float(done.mean()),
                         float(close.mean()) if done.sum() >= 30 else np.nan,
                         float(stop.mean())))
    print("\nfamily p0 target: coverage, share conclusive, within target, mean trials")
    for r in rows:
        print(f"  {r[0]} {r[1]} {r[2]}: {r[3]:.3f} {r[4]:.2f} {r[5]:.3f} {r[6]:.0f}")
    assert min(r[3] for r in rows) >= 0.94
    assert np.nanmin([r[5] for r in rows]) >= 0.94 and pooled[0] / pooled[1] >= 0.94


def test_old_adaptive_rule_over_claims_on_rare_catastrophes() -> None:
    """Student-t with Bonferroni over the looks: zero width at golden, so it stops wrong."""
    rng = np.random.default_rng(3)
    level = 1 - 0.05 / len(TRIALS)
    covs = []
    for q, p0 in ((0.03, 0.0), (0.03, 0.5), (0.01, 0.0)):
        values, faulted, truth = draw_cells(rng, f"cat:{q}:0.5", p0, 400, TRIALS[-1])
        _, low, high, _, _ = adaptive(values, faulted, p0, 0.025, method=t_cells,
                                      confidence=level)
        covs.append(float(np.mean((low <= truth) & (truth <= high))))
    print(f"\nold adaptive rule coverage: {covs}")
    assert max(covs) < 0.6


def test_paired_intervals_cover_on_simulated_mitigations() -> None:
    rng = np.random.default_rng(17)
    acc = Metric(bounds=(0.0, 1.0), higher_is_better=True)
    reps, n, p0 = 150, 200, 0.5
    hit = rng.random((reps, n)) >= p0
    cat = hit & (rng.random((reps, n)) < 0.1)
    none = np.where(cat, 0.2, 0.8)
    clip = np.where(cat & (rng.random((reps, n)) < 0.3), 0.2, 0.79)  # restores 70%
    true_delta = p0 * -0.01 + (1 - p0) * (0.1 * 0.7 * 0.59 - 0.9 * 0.01)
    true_lost = (1 - p0) * 0.1 * 0.6
    hits = np.zeros((2, reps), bool)
    for i in range(reps):
        c = paired_comparison(clip[i], none[i], 0.79, 0.8, hit[i], p0, metric=acc)
        hits[0, i] = c.delta_low <= true_delta <= c.delta_high
        hits[1, i] = c.recovery_low <= true_delta / true_lost <= c.recovery_high
    print(f"\npaired difference coverage {hits[0].mean():.3f}, recovery {hits[1].mean():.3f}")
    assert hits.mean(axis=1).min() >= 0.94, hits.mean(axis=1)
