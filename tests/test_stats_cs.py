"""Betting confidence sequences and what is built on them: properties, hand-checked values, bad
input (the coverage simulations are in tests/test_stats_cs_coverage.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from coverage_sim import BOUNDS, GOLDEN, cs_cells, draw_cells

from pytei_ray.errors import CampaignSpecError
from pytei_ray.stats import (
    Metric,
    Precision,
    betting_cs,
    capital,
    compare_mitigations,
    estimate_cell,
    judge_cell_cs,
    paired_comparison,
    resolve_metric,
)

ACC = Metric(bounds=(0.0, 1.0), higher_is_better=True)
X10 = np.array([0.8, 0.8, 0.3, 0.8, 0.9, 0.1, 0.8, 0.8, 0.75, 0.8])


@pytest.mark.parametrize(("m", "plus", "minus"), [
    # from confseq 0.0.11's own code (betting_strategies.lambda_predmix_eb with alpha/2 and bets
    # min(lambda, 1/(2m)), min(lambda, 1/(2(1-m))): its betting_mart defaults), t = 1, 5, 10
    (0.4, [1.5, 4.79882812, 14.55113411], [0.66666667, 0.1872428, 0.04912234]),
    (0.7, [1.07142857, 1.00404593, 0.73087847], [0.83333333, 0.64300412, 0.68219958]),
])
def test_capital_processes_match_the_authors_package(m, plus, minus) -> None:
    kp, km = capital(X10, m, truncation=0.5)
    np.testing.assert_allclose(kp[[0, 4, 9]], plus, rtol=1e-7)
    np.testing.assert_allclose(km[[0, 4, 9]], minus, rtol=1e-7)


def test_interval_is_exactly_the_set_the_capital_does_not_reject() -> None:
    rng = np.random.default_rng(3)
    for x in (rng.beta(2, 5, 60), np.where(rng.random(120) < 0.05, 0.1, 0.8), rng.random(4)):
        lo, hi = betting_cs(x)
        for m in np.linspace(0.001, 0.999, 400):
            kp, km = capital(x, m)
            rejected = max(kp.max(), km.max()) >= 40.0  # 2 / alpha, at any time so far
            if lo + 1e-8 < m < hi - 1e-8:
                assert not rejected, (m, lo, hi)
            elif m < lo - 1e-8 or m > hi + 1e-8:
                assert rejected, (m, lo, hi)


def test_range_at_zero_trials_never_wider_and_scaled_bounds() -> None:
    assert betting_cs(np.array([])) == (0.0, 1.0)
    assert betting_cs(np.array([]), (-2.0, 5.0)) == (-2.0, 5.0)
    assert betting_cs(np.full(3, np.nan), (0.0, 2.0)) == (0.0, 2.0)  # absent values
    rng = np.random.default_rng(1)
    x = rng.random((50, 30))
    lo, hi = betting_cs(x)
    assert np.all((0 <= lo) & (lo <= hi) & (hi <= 1))
    lo2, hi2 = betting_cs(3 + 4 * x, (3.0, 7.0))  # affine in the data and the range
    np.testing.assert_allclose(lo2, 3 + 4 * lo, atol=1e-8)
    np.testing.assert_allclose(hi2, 3 + 4 * hi, atol=1e-8)
    # rows in a batch = one call per row; NaN (absent) entries are skipped, order kept
    one = betting_cs(x[7])
    assert (lo[7], hi[7]) == pytest.approx(one, abs=1e-12)
    gappy = np.where(np.arange(30) % 3 == 0, np.nan, x[7])
    assert betting_cs(gappy) == pytest.approx(betting_cs(x[7][np.arange(30) % 3 != 0]))


def test_running_intersection_is_monotone_in_the_number_of_trials() -> None:
    rng = np.random.default_rng(5)
    x = np.where(rng.random(300) < 0.1, 0.2, rng.beta(40, 10, 300))
    bounds = np.array([betting_cs(x[:n]) for n in range(0, 301, 5)])
    assert np.all(np.diff(bounds[:, 0]) >= 0) and np.all(np.diff(bounds[:, 1]) <= 0)


def test_width_shrinks_at_the_law_of_the_iterated_logarithm_rate_and_adapts_to_variance():
    rng = np.random.default_rng(8)
    ns = np.array([100, 400, 1600, 6400])
    coin = rng.random((40, ns[-1])) < 0.5
    widths = np.array([np.median(np.subtract(*betting_cs(coin[:, :n].astype(float))[::-1]))
                       for n in ns])
    scaled = widths * np.sqrt(ns / np.log(ns))  # roughly constant: width ~ sqrt(log n / n)
    assert scaled.max() / scaled.min() < 1.3, scaled
    assert np.all(widths[1:] < widths[:-1] * 0.65)  # 4x the trials: about half the width
    narrow = rng.beta(400, 100, 1600)  # sd 0.018: a Hoeffding interval cannot know it
    lo, hi = betting_cs(narrow)
    hoeffding = 2 * math.sqrt(math.log(2 / 0.05) / (2 * 1600))
    assert hi - lo < hoeffding / 5


def test_all_golden_trials_leave_a_catastrophe_open() -> None:
    """n trials all at 0.8 cannot exclude a catastrophe chance of ~log(40)/(c n)."""
    for n in (20, 100, 400):
        lo, hi = betting_cs(np.full(n, 0.8))
        assert lo < 0.8 - 0.8 * 3.0 / n and hi >= 0.8  # at least the rule of three
        assert hi - lo < 0.8 * 8.0 / n + 0.02          # and not much more


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(bounds=(1.0, 1.0)), r"`bounds` to be finite numbers \(low, high\) with low < high"),
    (dict(bounds=(0.0, math.inf)), r"`bounds` to be finite"),
    (dict(confidence=1.0), r"`confidence` to be a float in the \(0, 1\) range"),
    (dict(confidence=0.0), r"`confidence`"),
    (dict(truncation=1.0), r"`truncation` to be in \(0, 1\)"),
])
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        betting_cs(X10, **kwargs)


def test_a_value_outside_the_bounds_is_named() -> None:
    with pytest.raises(ValueError, match=r"outside the metric's declared bounds \[0, 1\]\.\n"
                                         r"  value: 1\.5 at position 3"):
        betting_cs(np.array([0.1, 0.2, 0.3, 1.5]))


def test_estimate_cell_maps_the_sequence_through_p0() -> None:
    x = np.array([0.8, 0.8, 0.3, 0.8, 0.8, 0.8, 0.8, 0.8])
    hit = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
    e = estimate_cell(x, 0.8, hit, 0.5, metric=ACC)
    lo1, hi1 = betting_cs(x[hit])
    assert (e.low, e.high) == pytest.approx((0.8 + 0.5 * (lo1 - 0.8), 0.8 + 0.5 * (hi1 - 0.8)))
    assert e.mean == pytest.approx(0.5 * 0.8 + 0.5 * x[hit].mean())
    assert (e.method, e.n, e.n_faulted, e.confidence, e.over) == ("p0-cs", 8, 6, 0.95, "all")
    assert e.halfwidth == pytest.approx(max(e.mean - e.low, e.high - e.mean))
    none = estimate_cell(np.full(5, 0.8), 0.8, np.zeros(5, bool), 0.9, metric=ACC)
    assert (none.mean, none.low, none.high) == pytest.approx((0.8, 0.72, 0.82))  # (1-p0) range
    exact = estimate_cell(np.full(5, 0.8), 0.8, np.zeros(5, bool), 1.0, metric=ACC)
    assert (exact.low, exact.high, exact.method) == (0.8, 0.8, "exact")
    plain = estimate_cell(x, 0.8, None, None, metric=ACC)
    assert plain.method == "cs" and (plain.low, plain.high) == pytest.approx(betting_cs(x))


def test_nonfinite_bounded_trials_count_as_the_worst_value_and_failed_ones_drop() -> None:
    x = np.array([0.8, np.nan, 0.8, np.inf, 0.8, 0.9])
    ok = np.array([1, 1, 1, 1, 1, 0], bool)  # the last one failed: no outcome
    e = estimate_cell(x, 0.8, np.ones(6, bool), 0.0, metric=ACC, ok=ok)
    ref = estimate_cell(np.array([0.8, 0.0, 0.8, 0.0, 0.8]), 0.8, np.ones(5, bool), 0.0,
                        metric=ACC)
    assert (e.mean, e.low, e.high) == pytest.approx((ref.mean, ref.low, ref.high))
    assert e.nonfinite == 2 and e.nonfinite_rate == pytest.approx(0.4)
    loss = estimate_cell(np.array([0.1, np.nan]), 0.1, None, None,
                         metric=Metric(bounds=(0.0, 1.0), higher_is_better=False))
    assert loss.mean == pytest.approx(0.55)  # a loss's worst value is its top


def test_unbounded_metric_mean_is_over_finite_trials_with_a_failure_rate() -> None:
    x = np.array([0.3, 0.31, np.inf, 0.29, np.nan, 0.3])
    e = estimate_cell(x, 0.3, np.ones(6, bool), 0.0, metric=resolve_metric("logloss"),
                      t_confidence=0.99)
    assert e.over == "finite" and e.n == 4 and e.mean == pytest.approx(0.3)
    assert e.method == "p0" and e.confidence == 0.99
    assert e.nonfinite == 2 and e.nonfinite_rate == pytest.approx(2 / 6)
    assert 0.04 < e.nonfinite_low < 1 / 3 < e.nonfinite_high < 0.8  # Clopper-Pearson at 0.99


def test_golden_or_trial_outside_declared_bounds_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside the metric's declared bounds"):
        estimate_cell(np.array([0.5]), 1.5, None, None, metric=ACC)
    with pytest.raises(ValueError, match=r"`p0` to be a probability"):
        estimate_cell(np.array([0.5]), 0.5, np.ones(1, bool), 1.5, metric=ACC)


def test_judge_uses_no_look_correction_and_the_lopsided_halfwidth() -> None:
    hit = np.ones(400, bool)
    j = judge_cell_cs(np.full(400, 0.8), 0.8, hit, 0.0, metric=ACC,
                      precision=Precision("acc", 0.025), sequential=True)
    assert j.confidence == 0.95 and j.conclusive  # the campaign's level, whatever the looks
    assert j.reason == f"half-width {j.estimate.halfwidth:.3g} <= 0.025"
    assert j.estimate.halfwidth == pytest.approx(0.8 - j.estimate.low)  # reaches down only
    fixed = judge_cell_cs(np.full(400, 0.5), 0.8, hit, 0.0, metric=ACC)
    assert fixed.conclusive and fixed.reason == "interval below the SDC threshold 0.792"
    close = judge_cell_cs(np.full(40, 0.8), 0.8, hit[:40], 0.0, metric=ACC)
    assert not close.conclusive and close.reason == "interval contains the SDC threshold 0.792"
    rate = judge_cell_cs(np.full(40, 0.8), 0.8, hit[:40], 0.0, metric=ACC, sequential=True,
                         precision=Precision("acc", 0.05, on="sdc_rate"))
    assert rate.sdc == 0 and rate.sdc_high == pytest.approx(betting_cs(np.zeros(40))[1])
    assert not rate.conclusive  # 40 clean trials: a time-uniform rate bound near 0.09
    logloss = judge_cell_cs(np.array([0.3, 0.31, 0.29]), 0.3, None, None,
                            metric=resolve_metric("logloss"), t_confidence=0.99)
    assert logloss.confidence == 0.99  # an unbounded metric's t interval keeps the look level


def test_metric_declaration_validation_and_spec() -> None:
    for bad, match in [((1, 0), "low < high"), ((0, 0), "low < high"), ((0,), "pair"),
                       ("ab", "pair"), ((0, float("nan")), "pair"), ((True, 2), "pair")]:
        with pytest.raises(CampaignSpecError, match=match):
            Metric(bounds=bad)
    with pytest.raises(CampaignSpecError, match="`higher_is_better` to be a bool"):
        Metric(higher_is_better="yes")
    m = Metric(bounds=(0, math.inf), higher_is_better=False)
    assert m.to_spec() == {"bounds": [0.0, None], "higher_is_better": False}
    assert Metric.from_spec(m.to_spec()) == m and not m.bounded and ACC.bounded
    with pytest.raises(ValueError, match=r"Metric 'auc' is declared in \[0, 1\] but trial "
                                         r"'t2' has 1\.2 \(1 value\(s\) outside\)"):
        ACC.check("auc", [0.5, np.nan, 1.2], trials=["t0", "t1", "t2"])
    assert resolve_metric("score") == Metric((-math.inf, math.inf), True)  # the name's guess
    assert resolve_metric("score", Metric(bounds=(0, 1))) == Metric((0.0, 1.0), True)
    assert resolve_metric("acc", observed=[50.0]).bounds == (0.0, math.inf)  # guessed: dropped
    with pytest.raises(ValueError, match="declared in"):
        resolve_metric("acc", ACC, observed=[50.0])  # declared: an error, never dropped


def test_batched_simulation_equals_estimate_cell() -> None:
    rng = np.random.default_rng(2)
    values, faulted, _ = draw_cells(rng, "cat:0.1:0.5", 0.5, 6, 40)
    mean, low, high = cs_cells(values, faulted, 0.5, 40)
    for i in range(6):
        e = estimate_cell(values[i], GOLDEN, faulted[i], 0.5, metric=Metric(bounds=BOUNDS))
        assert (mean[i], low[i], high[i]) == pytest.approx((e.mean, e.low, e.high), abs=1e-9)


def pairs_frame() -> pd.DataFrame:
    rows = []  # golden 0.8 (none) and 0.79 (clip); rep 3 explodes without the mitigation
    for rep, (none, clip, nf) in enumerate([(0.8, 0.79, 0), (0.3, 0.7, 1), (0.8, 0.79, 1),
                                            (np.nan, 0.75, 1), (0.6, 0.6, 1)]):
        for mit, v in (("none", none), ("clip", clip)):
            rows.append(dict(model="m", ber=1e-3, repetition=rep, mitigation=mit, status="ok",
                             acc=v, golden_acc=0.8 if mit == "none" else 0.79,
                             n_faults_sampled=nf, p_no_fault=0.25))
    return pd.DataFrame(rows)


def test_paired_comparison_by_hand_and_from_a_frame() -> None:
    df = pairs_frame()
    out = compare_mitigations(df, "acc", ["model", "ber", "repetition"], "none", info=ACC)
    assert len(out) == 1
    r = out.iloc[0]
    # faulted pairs: d = 0.4, -0.01, 0.75 (nan counted as 0.0), 0.0; fault-free d = -0.01
    assert r.delta == pytest.approx(0.25 * -0.01 + 0.75 * (0.4 - 0.01 + 0.75 + 0.0) / 4)
    assert r.lost == pytest.approx(0.75 * (0.5 + 0.0 + 0.8 + 0.2) / 4)
    assert r.recovery == pytest.approx(r.delta / r.lost)
    assert (r.pairs, r.faulted, r.catastrophes, r.p0, r.method) == (5, 4, 1, 0.25, "p0-cs")
    direct = paired_comparison(np.array([0.79, 0.7, 0.79, 0.75, 0.6]),
                               np.array([0.8, 0.3, 0.8, np.nan, 0.6]), 0.79, 0.8,
                               np.array([0, 1, 1, 1, 1], bool), 0.25, metric=ACC)
    assert (r.delta_low, r.delta_high, r.recovery_low, r.recovery_high) == pytest.approx(
        (direct.delta_low, direct.delta_high, direct.recovery_low, direct.recovery_high))
    assert direct.recovery_low == -math.inf  # 4 faulted pairs cannot exclude "no loss"
    shuffled = compare_mitigations(df.sample(frac=1, random_state=1), "acc",
                                   ["model", "ber", "repetition"], "none", info=ACC)
    pd.testing.assert_frame_equal(shuffled, out)  # pairs are taken in repetition order


def test_paired_comparison_lower_is_better_flips_both_signs() -> None:
    loss = Metric(bounds=(0.0, 1.0), higher_is_better=False)
    up = paired_comparison(np.array([0.8, 0.7, 0.5]), np.array([0.8, 0.3, 0.5]), 0.8, 0.8,
                           None, None, metric=ACC)
    down = paired_comparison(1 - np.array([0.8, 0.7, 0.5]), 1 - np.array([0.8, 0.3, 0.5]),
                             0.2, 0.2, None, None, metric=loss)
    assert up.recovery == pytest.approx(0.4 / 0.8)
    assert (down.delta, down.lost, down.recovery) == pytest.approx((up.delta, up.lost,
                                                                    up.recovery))
