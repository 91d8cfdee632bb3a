"""Report of p0-aware rows and of an adaptive campaign: new columns, at-cap cells, advice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pytei_ray.report import summarize, write_report
from pytei_ray.stats import Precision


def rows(reps: int, p0: float, seed: int = 0) -> pd.DataFrame:
    """Two BERs x two mitigations; a trial without a fault is golden (acc 1.0)."""
    rng = np.random.default_rng(seed)
    out = []
    for ber, q in ((1e-6, p0), (1e-2, 0.0)):
        for rep in range(reps):
            hit = rng.random() >= q
            drop = rng.beta(2, 5) if hit else 0.0
            for mit, keep in (("none", 1.0), ("clip", 0.5)):
                out.append(dict(model="m", target="all", error_model="bitflip", ber=ber,
                                repetition=rep, mitigation=mit, status="ok",
                                acc=1.0 - keep * drop, golden_acc=1.0,
                                n_faults_sampled=int(hit), p_no_fault=q))
    return pd.DataFrame(out)


def test_p0_columns_and_no_zero_width_interval() -> None:
    s = summarize(rows(10, 0.9, seed=3), metric="acc").set_index(["ber", "mitigation"])
    rare = s.loc[(1e-6, "none")]
    assert rare["p0"] == 0.9 and rare["ci_method"].startswith("p0")
    assert rare["ci_high"] - rare["ci_low"] > 0.01  # not the golden value alone
    for col in ("n_faulted", "guaranteed", "conclusive", "inconclusive", "reason", "at_cap"):
        assert col in s
    assert (s["conclusive"] == ~s["inconclusive"]).all()
    old = summarize(rows(10, 0.9, seed=3).drop(columns=["p_no_fault", "n_faults_sampled"]),
                    metric="acc")
    assert old["p0"].isna().all() and set(old["ci_method"]) == {"cs"}  # acc is in [0, 1]


def test_adaptive_campaign_advice_uses_precision_flags(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    rows(20, 0.5).to_parquet(root / "part-00000.parquet", index=False)
    target = Precision("acc", 0.001, max_reps=20)
    manifest = {"job": {"path": "jobs/x.py", "params": {}}, "metrics": ["acc"],
                "spec": {"stopping": {**target.to_spec(), "min_reps": 10}}}
    (root / "_manifest.json").write_text(json.dumps(manifest))
    rep = write_report(root, plots=False)
    s = rep.summary
    assert s["at_cap"].all() and not s["at_threshold"].any()
    assert (s["ci_level"] == target.confidence).all()  # a confidence sequence: no correction
    assert rep.command.endswith("--extend --precision acc=0.001 --max-reps 40")
    assert rep.repetitions is None and "at the cap of 20 repetitions" in rep.text
    page = rep.html.read_text()
    assert page.index("by BER and mitigation") < page.index("Still open")
    assert (rep.out_dir / "cells.csv").exists()


def test_fixed_campaign_also_shows_the_precision_alternative(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    rows(4, 0.0).to_parquet(root / "part-00000.parquet", index=False)
    (root / "_manifest.json").write_text(json.dumps({"job": {"path": "j.py", "params": {}}}))
    rep = write_report(root, plots=False, threshold=0.25)  # means ~0.71..0.86: near 0.75
    assert rep.summary["inconclusive"].any()
    assert "--repetitions" in (rep.command or "--repetitions")
    assert "--extend --precision acc=25% --max-reps 40" in rep.text


def test_precision_flag_keeps_the_stopping_rule_and_bad_input_changes_nothing(
        tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    rows(20, 0.5).to_parquet(root / "part-00000.parquet", index=False)
    target = Precision("acc", 0.001, max_reps=20)
    manifest = {"job": {"path": "jobs/x.py", "params": {}}, "metrics": ["acc"],
                "spec": {"stopping": {**target.to_spec(), "min_reps": 10}}}
    (root / "_manifest.json").write_text(json.dumps(manifest))
    rep = write_report(root, plots=False, precision=0.5)  # a (looser) precision of its own
    assert rep.summary["at_cap"].all()  # the campaign's rule still judges its metric
    assert rep.command.endswith("--extend --precision acc=0.001 --max-reps 40")
    page = rep.html.read_text()
    assert "95% CI" in page and "Bonferroni-corrected look level" in page
    before = sorted(p.name for p in rep.out_dir.iterdir())
    for bad in (dict(confidence=1.5), dict(confidence=0.0), dict(threshold=1.0)):
        with pytest.raises(ValueError, match="Expected argument"):
            write_report(root, plots=False, **bad)
    assert sorted(p.name for p in rep.out_dir.iterdir()) == before
