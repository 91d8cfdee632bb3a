"""Statistics of the report: Student-t and Wilson intervals, direction, paired recovery."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from pytei_ray.report import mean_ci, wilson_interval
from pytei_ray.stats import (
    higher_is_better,
    paired_recovery,
    reps_for_halfwidth,
    student_t_ppf,
)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [  # published Wilson 95% intervals (Newcombe 1998, Table I; Brown, Cai & DasGupta 2001)
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_known_values(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_matches_scipy(confidence: float) -> None:
    for n in (1, 2, 7, 10, 33, 100):
        for k in range(n + 1):
            ref = st.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
            lo, hi = wilson_interval(k, n, confidence)
            assert lo == pytest.approx(ref.low, abs=1e-12)
            assert hi == pytest.approx(ref.high, abs=1e-12)


def test_wilson_arrays_and_edges() -> None:
    lo, hi = wilson_interval(np.array([0, 5, 10]), 10)
    np.testing.assert_allclose(lo, [0.0, 0.236593, 0.722467], atol=1e-6)
    np.testing.assert_allclose(hi, [0.277533, 0.763407, 1.0], atol=1e-6)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match=r"`confidence` to be a float in the \(0, 1\) range"):
        wilson_interval(1, 10, confidence=1.5)


def test_student_t_quantile_matches_scipy() -> None:
    for df in (1, 2, 3, 4, 9, 30, 100, 1000, 10**6):
        for q in (0.8, 0.9, 0.95, 0.975, 0.995, 0.9995, 0.1):
            assert student_t_ppf(q, df) == pytest.approx(st.t.ppf(q, df), rel=1e-8)


def test_mean_ci_matches_scipy_and_ignores_nonfinite() -> None:
    rng = np.random.default_rng(3)
    for n in (2, 3, 10, 57):
        x = rng.normal(0.7, 0.05, n)
        m, lo, hi = mean_ci(np.concatenate([x, [np.nan, np.inf]]), 0.95)
        ref_lo, ref_hi = st.t.interval(0.95, n - 1, loc=x.mean(), scale=st.sem(x))
        assert (m, lo, hi) == pytest.approx((x.mean(), ref_lo, ref_hi), rel=1e-10)
    assert mean_ci([1.0, 2.0, 3.0]) == pytest.approx((2.0, -0.484138, 4.484138), abs=1e-6)
    assert mean_ci([0.5, 0.5]) == (0.5, 0.5, 0.5)
    m, lo, hi = mean_ci([0.3])
    assert m == 0.3 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert all(math.isnan(v) for v in mean_ci([np.nan]))


def test_direction_from_name() -> None:
    assert higher_is_better("auc") and higher_is_better("accuracy")
    for name in ("logloss", "val_loss", "error_rate", "mse", "MAE", "perplexity"):
        assert not higher_is_better(name)


def test_reps_for_halfwidth_is_minimal() -> None:
    for std, target in ((1.0, 0.5), (0.02, 0.004), (3.0, 0.1)):
        n = reps_for_halfwidth(std, target)
        assert st.t.ppf(0.975, n - 1) * std / math.sqrt(n) <= target
        assert st.t.ppf(0.975, n - 2) * std / math.sqrt(n - 1) > target
    assert reps_for_halfwidth(0.0, 0.1) == 2
    assert reps_for_halfwidth(1.0, 0.0, max_reps=50) == 50


def test_paired_recovery_by_hand() -> None:
    rows = [  # (ber, rep, mitigation, metric); golden 0.8
        (1e-3, 0, "none", 0.6), (1e-3, 0, "clip", 0.7), (1e-3, 0, "sbp", 0.8),
        (1e-3, 1, "none", 0.8), (1e-3, 1, "clip", 0.7),  # nothing lost: not a pair
        (1e-3, 2, "none", 0.4), (1e-3, 2, "clip", 0.3),  # made it worse
        (1e-3, 3, "none", np.nan), (1e-3, 3, "clip", 0.8),  # non-finite baseline: skipped
    ]
    df = pd.DataFrame(rows, columns=["ber", "repetition", "mitigation", "auc"])
    df["golden_auc"], df["model"], df["status"] = 0.8, "m", "ok"
    out = paired_recovery(df, "auc", ["model", "ber", "repetition"], "none")
    got = {(r.repetition, r.mitigation): r.recovery for r in out.itertuples()}
    assert got == pytest.approx({(0, "clip"): 0.5, (0, "sbp"): 1.0, (2, "clip"): -0.25})
    # lower-is-better: the same formula, the loss sign flipped
    df2 = df.rename(columns={"auc": "loss", "golden_auc": "golden_loss"})
    df2["golden_loss"] = 0.2
    df2["loss"] = 1.0 - df["auc"]
    out2 = paired_recovery(df2, "loss", ["model", "ber", "repetition"], "none")
    assert sorted(out2["recovery"]) == pytest.approx([-0.25, 0.5, 1.0])
