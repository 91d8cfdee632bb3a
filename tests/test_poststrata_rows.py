"""Post-stratification from rows alone: trials sampled as an unstratified campaign samples them
(trial seeds, sample_fault_map), rows labelled by ClassStrata, the cell estimated from the rows
and equal to the formula of docs/strata.md computed by hand with pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from pytei_ray.campaign.trials import trial_seed
from pytei_ray.faults import BitFlip, SiteInfo, sample_fault_map
from pytei_ray.faults.poststrata import STRATA_COLUMNS, ClassStrata
from pytei_ray.faults.strata import count_in_class, site_classes
from pytei_ray.stats.stratified import empirical_bernstein, estimate_from_rows

SITES = [SiteInfo("fc.weight", torch.float32, (64, 32)), SiteInfo("fc.bias", torch.float16, (64,))]


def _rows(ber: float, reps: int) -> pd.DataFrame:
    design = ClassStrata("exponent_msb")
    error = BitFlip(ber)
    split = site_classes(SITES, error, design.bits)
    rows = []
    for rep in range(reps):
        fmap = sample_fault_map(SITES, error, trial_seed(0, "m", "all", "bitflip", ber, rep))
        hit = count_in_class(fmap, "exponent_msb") > 0
        metric = 0.3 if hit else (0.8 if fmap.n_faults == 0 else 0.79)
        rows.append({"repetition": rep, "acc": metric, "golden_acc": 0.8,
                     "p_no_fault": error.p_no_fault(fmap.n_targeted),
                     **design.row_columns(fmap, split, ber)})
    return pd.DataFrame(rows)


def test_rows_carry_exact_weights_and_labels_that_follow_them():
    ber = 2e-4
    df = _rows(ber, 400)
    assert set(STRATA_COLUMNS) <= set(df.columns)
    n_class, n_all = 64 * 32 + 64, 64 * 32 * 32 + 64 * 16  # one exponent MSB per word
    assert df["p_class_hit"].iloc[0] == pytest.approx(stats.binom.sf(0, n_class, ber), rel=1e-9)
    assert df["p_no_fault"].iloc[0] == pytest.approx(stats.binom.pmf(0, n_all, ber), rel=1e-9)
    w = {"C0/O0": df["p_no_fault"].iloc[0], "C1-/O0-": df["p_class_hit"].iloc[0]}
    w["C0/O1-"] = 1 - w["C0/O0"] - w["C1-/O0-"]
    for key, weight in df.groupby("stratum")["stratum_weight"].first().items():
        assert weight == pytest.approx(w[key], rel=1e-9)
    obs = [int((df["stratum"] == k).sum()) for k in w]
    _, pv = stats.chisquare(obs, np.array(list(w.values())) * len(df))
    assert pv > 1e-4


def test_the_cell_from_rows_equals_the_formula_by_hand():
    df = _rows(2e-4, 300)
    est = estimate_from_rows(df, "acc", (0.0, 1.0), 0.95)
    alpha, share = 0.05, 0.25
    w0, w2 = df["p_no_fault"].iloc[0], df["p_class_hit"].iloc[0]
    w1 = 1 - w0 - w2
    faulted = df[df["stratum"] != "C0/O0"]
    lo_u, hi_u = empirical_bernstein(faulted["acc"].to_numpy(), (0, 1), 1 - alpha * (1 - share))
    parts = {k: empirical_bernstein(g["acc"].to_numpy(), (0, 1), 1 - alpha * share / 2)
             for k, g in faulted.groupby("stratum")}
    low_s = w0 * 0.8 + w1 * parts["C0/O1-"][0] + w2 * parts["C1-/O0-"][0]
    high_s = w0 * 0.8 + w1 * parts["C0/O1-"][1] + w2 * parts["C1-/O0-"][1]
    low_u, high_u = 0.8 + (1 - w0) * (lo_u - 0.8), 0.8 + (1 - w0) * (hi_u - 0.8)
    assert est.low == pytest.approx(max(low_s, low_u), abs=1e-12)
    assert est.high == pytest.approx(min(high_s, high_u), abs=1e-12)
    means = faulted.groupby("stratum")["acc"].mean()
    assert est.mean == pytest.approx(w0 * 0.8 + w1 * means["C0/O1-"] + w2 * means["C1-/O0-"])
    truth_hit = 0.3  # the metric is a function of the stratum here
    assert est.low <= w0 * 0.8 + w1 * 0.79 + w2 * truth_hit <= est.high


def test_bad_rows_and_bad_designs_are_refused():
    with pytest.raises(ValueError, match="need the columns"):
        estimate_from_rows(pd.DataFrame({"acc": [0.8], "golden_acc": [0.8]}), "acc", (0, 1))
    df = pd.concat([_rows(2e-4, 5), _rows(1e-3, 5)])
    with pytest.raises(ValueError, match="one value of 'p_no_fault'"):
        estimate_from_rows(df, "acc", (0, 1))
    with pytest.raises(ValueError, match="field names"):
        ClassStrata("exponent_top")
    with pytest.raises(ValueError, match="share"):
        ClassStrata("sign", share=1.0)
