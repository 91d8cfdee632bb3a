"""Precision targets (validation, parsing, looks, specs) and open_points on a hand-built frame."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pytei_ray.errors import CampaignSpecError
from pytei_ray.stats import Precision, judge_cell, open_points


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(halfwidth=-1), r"`halfwidth` to be a number > 0, but got -1\."),
    (dict(halfwidth=0.0), r"`halfwidth` to be a number > 0"),
    (dict(halfwidth=float("nan")), r"`halfwidth` to be a number > 0"),
    (dict(halfwidth="0.1"), r"`halfwidth` to be a number > 0"),
    (dict(confidence=1.0), r"`confidence` to be a number in the \(0, 1\) range, but got 1\.0"),
    (dict(confidence=0), r"`confidence`"),
    (dict(max_reps=0), r"`max_reps` to be an int >= 1, but got 0"),
    (dict(max_reps=2.5), r"`max_reps` to be an int >= 1"),
    (dict(threshold=1.0), r"`threshold` to be a number in the \[0, 1\) range"),
    (dict(threshold=-0.1), r"`threshold`"),
    (dict(on="median"), r"`on` to be 'mean' or 'sdc_rate', but got 'median'"),
    (dict(on="sdc_rate", relative=True), r"`relative` to be False for an sdc_rate target"),
    (dict(metric=""), r"`metric` to be a non-empty metric name"),
    (dict(higher_is_better="yes"), r"`higher_is_better` to be a bool or None"),
    (dict(growth=1.0), r"`growth` to be a number in \(1, 16\]"),
    (dict(growth=0.5), r"`growth`"),
    (dict(growth=float("inf")), r"`growth`"),
    (dict(growth=True), r"`growth`"),
])
def test_precision_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = dict(metric="auc", halfwidth=0.01) | kwargs
    with pytest.raises(CampaignSpecError, match=match):
        Precision(**args)


def test_parse_forms_and_text_round_trip() -> None:
    p = Precision.parse("auc=0.005")
    assert (p.metric, p.halfwidth, p.relative, p.on) == ("auc", 0.005, False, "mean")
    p = Precision.parse("auc=1%", confidence=0.9, max_reps=320)
    assert (p.halfwidth, p.relative, p.confidence, p.max_reps) == (0.01, True, 0.9, 320)
    p = Precision.parse("val.auc.sdc_rate=0.05")
    assert (p.metric, p.on, p.halfwidth, p.relative) == ("val.auc", "sdc_rate", 0.05, False)
    assert Precision.parse("acc.sdc_rate=5%").halfwidth == pytest.approx(0.05)
    for text in ("auc=0.005", "auc=1%", "auc.sdc_rate=0.05", "top1_acc=0.25%"):
        assert Precision.parse(text).text() == text
    assert Precision.parse("auc=1%").cli_flags(320) == "--precision auc=1% --max-reps 320"
    assert "at most 160 repetitions" in Precision.parse("auc=1%").describe()
    for bad in ("auc", "auc=", "=0.1", "auc=abc", "auc=0.1=2", "", None):
        with pytest.raises(CampaignSpecError, match="expected one of: METRIC=H"):
            Precision.parse(bad)
    with pytest.raises(CampaignSpecError, match="`halfwidth` to be a number > 0"):
        Precision.parse("auc=-0.1")


def test_looks_and_look_confidence() -> None:
    assert Precision("a", 0.1, max_reps=160).looks(10) == [10, 20, 40, 80, 160]
    assert Precision("a", 0.1, max_reps=100).looks(10) == [10, 20, 40, 80, 100]
    assert Precision("a", 0.1, max_reps=10).looks(10) == [10]
    assert Precision("a", 0.1, max_reps=11).looks(10) == [10, 11]
    p = Precision("a", 0.1, confidence=0.95, max_reps=160)
    assert p.look_confidence(10) == pytest.approx(1 - 0.05 / 5)
    with pytest.raises(CampaignSpecError, match="maximum repetitions are below the minimum"):
        Precision("a", 0.1, max_reps=5).looks(10)
    with pytest.raises(CampaignSpecError, match="`min_reps` to be an int >= 1"):
        p.looks(0)


def test_growth_looks_spec_and_flags() -> None:
    assert Precision("a", 0.1, max_reps=120, growth=1.5).looks(10) == [10, 15, 23, 35, 53, 80,
                                                                         120]
    # 10 * 1.1 is 11.000000000000002 in floats: the look is 11, not 12; always at least +1
    assert Precision("a", 0.1, max_reps=14, growth=1.1).looks(10) == [10, 11, 13, 14]
    assert Precision("a", 0.1, max_reps=5, growth=1.01).looks(1) == [1, 2, 3, 4, 5]
    assert Precision("a", 0.1, max_reps=160, growth=2).looks(10) == [10, 20, 40, 80, 160]
    p = Precision("a", 0.1, confidence=0.95, max_reps=120, growth=1.5)
    assert p.look_confidence(10) == pytest.approx(1 - 0.05 / 7)  # Bonferroni over 7 looks
    # doubling (the default) stays out of the spec: directories written before `growth`
    # existed keep theirs; any other factor is stored and read back
    assert "growth" not in Precision("a", 0.1).to_spec()
    assert Precision.from_spec(Precision("a", 0.1).to_spec()).growth == 2.0
    assert Precision.from_spec(json.loads(json.dumps(p.to_spec()))) == p
    assert p.cli_flags() == "--precision a=0.1 --max-reps 120 --growth 1.5"
    assert "x1.5 a look" in p.describe()
    assert Precision.parse("a=0.1", growth=1.5).growth == 1.5


def test_spec_round_trip() -> None:
    p = Precision("auc", 0.01, relative=True, on="mean", confidence=0.9, max_reps=320,
                  threshold=0.02, higher_is_better=True)
    spec = json.loads(json.dumps(p.to_spec()))
    assert Precision.from_spec(spec) == p
    assert Precision.from_spec({**spec, "min_reps": 10}) == p  # the manifest's stopping entry
    with pytest.raises(CampaignSpecError, match=r"Unknown precision field\(s\) \['width'\]"):
        Precision.from_spec({**spec, "width": 1})
    with pytest.raises(CampaignSpecError, match="`halfwidth`"):
        Precision.from_spec({**spec, "halfwidth": 0})


def test_judge_cell_reasons() -> None:
    x = np.array([0.9, 0.95, 0.92, 0.91])
    f = np.ones(4, bool)
    wide = judge_cell(x, 1.0, f, 0.0, precision=Precision("acc", 0.001), bounds=(0.0, 1.0))
    assert not wide.conclusive and wide.reason.startswith("half-width 0.6") and "> 0.001" in \
        wide.reason  # a bounded metric: a confidence sequence, 4 trials prove little
    assert judge_cell(x, 1.0, f, 0.0, precision=Precision("acc", 0.5)).conclusive
    rel = judge_cell(x, 2.0, f, 0.0, precision=Precision("acc", 0.02, relative=True))
    assert rel.reason.endswith("<= 0.04") and rel.conclusive  # 2% of |golden| 2.0
    straddle = judge_cell(np.array([0.98, 1.0, 0.985, 0.995]), 1.0, f, 0.0, bounds=(0, 1))
    assert not straddle.conclusive and straddle.reason == \
        "interval contains the SDC threshold 0.99"
    one = judge_cell(np.array([0.5, np.nan]), 1.0, None, None)
    assert not one.conclusive and one.reason == "fewer than 2 trials" and one.sdc == 2
    rate = judge_cell(np.ones(10), 1.0, np.ones(10, bool), 0.0,
                      precision=Precision("acc", 0.1, on="sdc_rate"))
    assert not rate.conclusive and rate.sdc_high == pytest.approx(0.3085, abs=1e-4)


def rows(values: dict[tuple, list[float]], p0: float = 0.0) -> pd.DataFrame:
    """Result rows: {(model, ber, mitigation): metric per repetition}; golden 1.0."""
    out = []
    for (model, ber, mit), vals in values.items():
        for rep, v in enumerate(vals):
            failed = v is None
            out.append(dict(model=model, target="all", error_model="bitflip", ber=ber,
                            mitigation=mit, repetition=rep, status="failed" if failed else "ok",
                            acc=np.nan if failed else v, golden_acc=1.0,
                            n_faults_sampled=int(not failed and v != 1.0) if p0 else 1,
                            p_no_fault=p0))
    return pd.DataFrame(out)


def test_open_points_uses_the_look_and_any_mitigation() -> None:
    tight = [0.90, 0.901, 0.899, 0.9, 0.9005, 0.8995, 0.9, 0.9] + [0.5, 0.1] * 4
    loose = [0.5, 0.9, 0.2, 0.8, 0.4, 0.7, 0.3, 0.6] * 2
    df = rows({("m", 1e-3, "none"): tight, ("m", 1e-3, "clip"): tight,
               ("m", 1e-2, "none"): tight, ("m", 1e-2, "clip"): loose,
               ("n", 1e-3, "none"): [None] * 16, ("n", 1e-3, "clip"): tight})
    p = Precision("acc", 0.01, max_reps=32)
    assert p.looks(8) == [8, 16, 32]
    free = (-np.inf, np.inf)  # unbounded: Student-t intervals at the look level
    # look 0 sees repetitions 0..7 only: the tight cells are conclusive there
    assert open_points(df, p, 8, 0, bounds=free) == {
        ("m", "all", "bitflip", 1e-2),  # clip is loose
        ("n", "all", "bitflip", 1e-3)}  # failed rows: no metric
    # look 1 sees the wide tail of `tight` too: every point is open
    assert len(open_points(df, p, 8, 1, bounds=free)) == 3
    assert open_points(df, p, 8, 2) == set()  # max_reps reached: nothing more to add
    assert open_points(df, p, 8, 0, point_cols=("model", "ber"), bounds=free) == {
        ("m", 1e-2), ("n", 1e-3)}
    # acc in [0, 1] (from its name): 8 trials cannot exclude a rare collapse to 0
    assert len(open_points(df, p, 8, 0)) == 3
    with pytest.raises(IndexError):
        open_points(df, p, 8, 3)


def test_open_points_with_known_p0_stays_open_until_faults_are_seen() -> None:
    df = rows({("m", 1e-6, "none"): [1.0] * 8, ("m", 1e-6, "clip"): [1.0] * 8}, p0=0.5)
    p = Precision("acc", 0.05, max_reps=64)
    assert open_points(df, p, 8, 0) == {("m", "all", "bitflip", 1e-6)}  # [0.5, 1] is wide
    rare = rows({("m", 1e-9, "none"): [1.0] * 8}, p0=0.999)
    assert open_points(rare, p, 8, 0) == set()  # (1 - p0) * range = 0.001: already tight
