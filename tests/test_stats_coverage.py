"""Coverage of the report's intervals, measured by seeded simulation.

Each test draws many cells with a known true mean (or rate), computes the library's interval for
each and counts how often it contains the truth. The numbers are printed (``pytest -s``) so a
reader sees what was measured, not only that a bound held.
"""

from __future__ import annotations

import numpy as np
import pytest

from pytei_ray.stats import Precision, estimate_mean, estimate_rate, judge_cell

N_SITES = 10**6  # targeted sites: p0 = (1 - lam / N) ** N, the exact binomial form
BETA_MEAN = 2 / 7  # metric of a faulted trial ~ Beta(2, 5); fault-free trials are golden = 1
LAMBDAS = np.geomspace(0.05, 10, 8)  # expected faults per trial, one bin each


def rare_fault_cells(rng: np.random.Generator, lam: float, cells: int, reps: int):
    """Values, faulted flags, p0 and true mean of ``cells`` bounded rare-fault cells."""
    rate = lam / N_SITES
    p0 = (1 - rate) ** N_SITES
    faulted = rng.binomial(N_SITES, rate, size=(cells, reps)) > 0
    values = np.where(faulted, rng.beta(2, 5, size=(cells, reps)), 1.0)
    return values, faulted, p0, p0 + (1 - p0) * BETA_MEAN


def covers(e, truth: float) -> bool:
    return bool(e.low <= truth <= e.high)


def test_p0_aware_interval_covers_rare_faults_where_student_t_fails() -> None:
    rng = np.random.default_rng(20240601)
    aware, plain = {}, {}
    for lam in LAMBDAS:
        values, faulted, p0, mu = rare_fault_cells(rng, lam, 4000, 10)
        aware[lam] = np.mean([covers(estimate_mean(v, 1.0, f, p0, 0.95, (0.0, 1.0)), mu)
                              for v, f in zip(values, faulted)])
        plain[lam] = np.mean([covers(estimate_mean(v, 1.0, None, None, 0.95, (0.0, 1.0)), mu)
                              for v, f in zip(values[:1000], faulted[:1000])])
    print("\nlambda  p0-aware  student-t")
    for lam in LAMBDAS:
        print(f"{lam:6.3f}  {aware[lam]:.3f}     {plain[lam]:.3f}")
    overall, overall_t = np.mean(list(aware.values())), np.mean(list(plain.values()))
    print(f"all     {overall:.3f}     {overall_t:.3f}")
    assert overall >= 0.93 and min(aware.values()) >= 0.93, aware
    assert overall_t < 0.85 and plain[LAMBDAS[0]] < 0.6  # zero width at golden: misses


def test_zero_faults_seen_keeps_the_interval_open() -> None:
    e = estimate_mean(np.ones(10), 1.0, np.zeros(10, bool), 0.6, bounds=(0.0, 1.0))
    assert e.method == "p0-range" and e.low == pytest.approx(0.6) and e.high == 1.0
    t = estimate_mean(np.ones(10), 1.0, None, None, bounds=(0.0, 1.0))
    assert t.method == "t" and t.halfwidth == 0.0  # the over-claim the p0 estimator removes
    unbounded = estimate_mean(np.ones(10), 1.0, np.zeros(10, bool), 0.6)
    assert unbounded.low == -np.inf and unbounded.high == np.inf
    exact = estimate_mean(np.ones(10), 1.0, np.zeros(10, bool), 1.0)
    assert (exact.low, exact.high, exact.method) == (1.0, 1.0, "exact")


@pytest.mark.parametrize("shape", ["normal", "beta(2,5)", "gamma(10)"])
def test_unimodal_metrics_student_t_coverage(shape: str) -> None:
    rng = np.random.default_rng(7)
    draws = {"normal": lambda s: rng.normal(0.8, 0.05, s),
             "beta(2,5)": lambda s: rng.beta(2, 5, s),
             "gamma(10)": lambda s: rng.gamma(10, 0.1, s)}
    truth = {"normal": 0.8, "beta(2,5)": BETA_MEAN, "gamma(10)": 1.0}[shape]
    values = draws[shape]((6000, 10))
    bounds = (0.0, 1.0) if shape == "beta(2,5)" else None
    est = [estimate_mean(v, 1.0, np.ones(10, bool), 0.0, 0.95, bounds) for v in values]
    coverage = np.mean([covers(e, truth) for e in est])
    print(f"\n{shape}: coverage {coverage:.3f}, flagged heavy-tailed "
          f"{np.mean([not e.guaranteed for e in est]):.3f}")
    assert coverage >= 0.93
    assert np.mean([e.guaranteed for e in est]) >= 0.995  # light tails are rarely flagged


def test_sdc_rate_clopper_pearson_coverage_near_zero() -> None:
    rng = np.random.default_rng(11)
    misses, total, worst = 0, 0, 1.0
    for n in (10, 20, 30, 50):
        for rate in (0.001, 0.003, 0.01, 0.02, 0.05):
            for p0 in (0.0, 0.5, 0.9):  # an SDC needs a fault: q = rate / (1 - p0)
                q = min(rate / (1 - p0), 1.0)
                faulted = rng.random((400, n)) >= p0
                sdc = faulted & (rng.random((400, n)) < q)
                truth = (1 - p0) * q
                hit = [lo <= truth <= hi for _, lo, hi in (
                    estimate_rate(int(k), int(nf), p0) for k, nf in
                    zip(sdc.sum(1), faulted.sum(1)))]
                misses += len(hit) - sum(hit)
                total += len(hit)
                worst = min(worst, np.mean(hit))
    print(f"\nClopper-Pearson: coverage {1 - misses / total:.4f} over {total} cells, "
          f"worst setting {worst:.3f}")
    assert 1 - misses / total >= 0.93 and worst >= 0.93


LOOKS_MIN = 10


def adaptive(values: np.ndarray, faulted: np.ndarray, p0: float, precision: Precision,
             level: float, bounds):
    """Judge a cell at each look (10, 20, 40, 80, 160); return the judgement it stops with."""
    for n in precision.looks(LOOKS_MIN):
        j = judge_cell(values[:n], 1.0, faulted[:n], p0, precision=precision,
                       confidence=precision.confidence, bounds=bounds, threshold=0.01,
                       level_confidence=level)
        if j.conclusive:
            break
    return j, n


def stopping_coverage(rng: np.random.Generator, scenario: str, cells: int):
    """(coverage with look_confidence, coverage with nominal 0.95 at each look, mean stop)."""
    out = {}
    for rule in ("corrected", "naive"):
        local = np.random.default_rng(rng.integers(2**32))  # same cells for both rules
        hits, stops = [], []
        for _ in range(cells):
            if scenario == "normal":
                p = Precision("score", 0.03, max_reps=160)
                values, faulted, p0, truth, bounds = (local.normal(0.8, 0.05, 160),
                                                      np.ones(160, bool), 0.0, 0.8, None)
            elif scenario == "rare faults":
                p = Precision("acc", 0.05, max_reps=160)
                lam = float(np.exp(local.uniform(np.log(0.05), np.log(10))))
                v, f, p0, truth = rare_fault_cells(local, lam, 1, 160)
                values, faulted, bounds = v[0], f[0], (0.0, 1.0)
            else:  # SDC rate near 0: metric drops to 0.5 in an SDC trial
                p = Precision("acc", 0.03, on="sdc_rate", max_reps=160)
                rate = float(local.uniform(0.001, 0.05))
                values = np.where(local.random(160) < rate, 0.5, 1.0)
                faulted, p0, truth, bounds = np.ones(160, bool), 0.0, rate, (0.0, 1.0)
            level = p.look_confidence(LOOKS_MIN) if rule == "corrected" else p.confidence
            j, n = adaptive(values, faulted, p0, p, level, bounds)
            lo, hi = (j.sdc_low, j.sdc_high) if p.on == "sdc_rate" else (j.estimate.low,
                                                                        j.estimate.high)
            hits.append(lo <= truth <= hi)
            stops.append(n)
        out[rule] = (float(np.mean(hits)), float(np.mean(stops)))
    return out


@pytest.mark.parametrize("scenario", ["normal", "rare faults", "sdc rate"])
def test_optional_stopping_keeps_coverage_with_look_confidence(scenario: str) -> None:
    got = stopping_coverage(np.random.default_rng(99), scenario, 1000)
    print(f"\n{scenario}: corrected coverage {got['corrected'][0]:.3f} (mean stop "
          f"{got['corrected'][1]:.0f} reps), naive {got['naive'][0]:.3f} (mean stop "
          f"{got['naive'][1]:.0f} reps)")
    assert got["corrected"][0] >= 0.93
    if scenario == "normal":  # stopping on a small sample spread at 95% each look over-claims
        assert got["naive"][0] < got["corrected"][0] - 0.02
