"""The unread stratum: a trial whose sampled faults all lie in table rows no evaluation sample
looks up is the golden run for every mitigation, with an exactly known chance (``p_none_read``).
Rows say it, the stopping rule and the report judge cells on the other trials, and an adaptive
campaign using it stays a pure function of the campaign (kill + rerun = uninterrupted run)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from launch_fixtures import sigkill_launch_midway, stored_rows, table

from pytei_ray.campaign.compare import compare_specs
from pytei_ray.faults.faultmap import SiteInfo, sample_fault_map
from pytei_ray.faults.models import BitFlip
from pytei_ray.launch import run
from pytei_ray.stats import judge_cells
from pytei_ray.stats.judge import cell_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


JOB = '''
import os, time, torch
from torch import nn
from pytei_ray import BitFlip, Campaign
from pytei_ray.injection import SplitEvaluation, sample_batches
from pytei_ray.mitigations import SBP
from pytei_ray.stats import Precision

ROWS, READ = 2000, 100  # table rows; rows the evaluation looks up

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(ROWS, 8)
        self.out = nn.Linear(16, 4)
    def forward(self, x):
        return self.out(self.emb(x).flatten(1))

def build():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Net().eval()

def data(name):
    x = torch.randint(0, READ, (200, 2), generator=torch.Generator().manual_seed(1)) * 7
    return x, build()(x).argmax(1)

def outputs(model, d, indices=None):
    time.sleep(float(os.environ.get("PYTEI_TEST_SLEEP", "0")))
    x = d[0]
    return torch.cat([model(x[ids])[:n] for ids, n in sample_batches(len(x), indices, 64)])

def score(out, d):
    return {{"accuracy": (out.argmax(1) == d[1]).float().mean().item()}}

campaign = Campaign(name="unread", models={{"m": build}}, data=data,
                    evaluate=SplitEvaluation(outputs, score),
                    bers=[3e-6, 3e-5], repetitions=4, seed=5,
                    error_models={{"flip": BitFlip, "two": lambda ber: BitFlip(n=2)}},
                    mitigations={{"none": None, "sbp": SBP()}},
                    precision=Precision("accuracy", 0.2, max_reps=32), {extra})
'''


def _job(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "job.py"
    path.write_text(JOB.format(extra=extra))
    return str(path)


def _quiet(**kw):
    return dict(executor="local", progress=False, echo=lambda s: None, **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The job with the unread stratum (the default) and without it."""
    base = tmp_path_factory.mktemp("unread")
    out = {}
    for name, extra in (("on", ""), ("off", "stratify_unread=False")):
        (base / name).mkdir()
        summary = run(_job(base / name, extra), str(base / name / "out"), **_quiet())
        assert summary.complete and summary.failed == 0
        out[name] = (summary, pd.read_parquet(base / name / "out"), base / name / "out")
    return out


def _rows_read() -> set[int]:
    """The table rows the job's evaluation data looks up (its data, redrawn here)."""
    x = torch.randint(0, 100, (200, 2), generator=torch.Generator().manual_seed(1)) * 7
    return set(x.unique().tolist())


def _read_sites() -> tuple[int, int]:
    """(bits the evaluation reads, bits targeted) of the job's model, counted by hand."""
    table_bits, linear_bits = 2000 * 8 * 32, (16 * 4 + 4) * 32
    return len(_rows_read()) * 8 * 32 + linear_bits, table_bits + linear_bits


def test_rows_say_the_unread_stratum_and_its_exact_chance(runs):
    _, df, _ = runs["on"]
    read, total = _read_sites()
    assert df["n_words_read"].notna().all() and df["p_none_read"].notna().all()
    flip = df[df["error_model"] == "flip"]
    for ber, g in flip.groupby("ber"):
        assert np.allclose(g["p_none_read"], (1 - ber) ** read, rtol=1e-12, atol=0)
        assert np.allclose(g["p_no_fault"], (1 - ber) ** total, rtol=1e-12)
    two = df[df["error_model"] == "two"]  # both of 2 faults unread: hypergeometric
    unread = total - read
    assert np.allclose(two["p_none_read"], unread * (unread - 1) / (total * (total - 1)))
    # the count matches the fault map the trial's seed draws
    sites = [SiteInfo("emb.weight", torch.float32, (2000, 8)),
             SiteInfo("out.bias", torch.float32, (4,)),
             SiteInfo("out.weight", torch.float32, (4, 16))]
    read_rows = _rows_read()
    for r in flip[flip["mitigation"] == "none"].head(40).itertuples():
        fmap = sample_fault_map(sites, BitFlip(r.ber), r.seed)
        n = sum(tf.n_words if tf.name != "emb.weight" else
                sum(int(i) // 8 in read_rows for i in tf.index) for tf in fmap.tensors)
        assert n == r.n_words_read


def test_a_trial_with_no_read_fault_is_the_golden_run_for_every_mitigation(runs):
    _, df, _ = runs["on"]
    quiet = df[df["n_words_read"] == 0]
    faulted = quiet[quiet["n_faults_sampled"] > 0]
    assert len(faulted) > 10  # faulted, yet read by no sample
    assert not faulted["evaluated"].any()
    assert all(struct.pack("<d", a) == struct.pack("<d", g)
               for a, g in zip(quiet["accuracy"], quiet["golden_accuracy"]))


def test_no_read_fault_has_the_stated_chance():
    """Over many seeds the share of maps with no read word matches ``p_none_read``."""
    read_rows = np.array(sorted(_rows_read()))
    sites = [SiteInfo("emb.weight", torch.float32, (2000, 8))]
    read, total = len(read_rows) * 8 * 32, 2000 * 8 * 32
    for error in (BitFlip(2e-5), BitFlip(n=3)):
        hits = 0
        n = 3000
        for seed in range(n):
            fmap = sample_fault_map(sites, error, seed)
            rows = np.concatenate([tf.index // 8 for tf in fmap.tensors])
            hits += not np.isin(rows, read_rows).any()
        p = error.p_no_fault_among(read, total)
        assert abs(hits / n - p) < 4 * math.sqrt(p * (1 - p) / n), (error, hits / n, p)


def test_the_stratum_settles_cells_with_fewer_trials_and_judges_them_as_the_rule_did(runs):
    s_on, on, out_on = runs["on"]
    s_off, off, _ = runs["off"]
    assert s_on.total < s_off.total  # the same faults per seed: fewer trials needed
    merged = on.merge(off, on="trial_id", suffixes=("", "_off"))
    assert len(merged) == len(on)  # every trial of the stratified run is one of the other's
    assert (merged["accuracy"].map(struct.Struct("<d").pack)
            == merged["accuracy_off"].map(struct.Struct("<d").pack)).all()
    # cells judge on the read stratum; its chance is larger than the fault-free one
    g = on[(on["ber"] == 3e-5) & (on["error_model"] == "flip") & (on["mitigation"] == "none")]
    _, _, _, faulted, p0 = cell_inputs(g, "accuracy")
    assert p0 == pytest.approx(g["p_none_read"].iloc[0]) and p0 > g["p_no_fault"].iloc[0]
    assert (faulted == (g.sort_values("repetition")["n_words_read"] > 0).to_numpy()).all()
    # the report of each run agrees with its run on the cells left open
    from pytei_ray.report import summarize

    rep = summarize(str(out_on), metric="accuracy")
    assert (~rep["conclusive"]).sum() == len(s_on.at_cap)


def test_a_cell_with_rows_that_do_not_know_falls_back_to_fault_free_trials(runs):
    _, df, _ = runs["on"]
    g = df[(df["ber"] == 3e-5) & (df["error_model"] == "flip") & (df["mitigation"] == "none")]
    g = g.copy()
    g.loc[g.index[0], "n_words_read"] = None  # e.g. a worker with re-scoring off
    _, _, _, faulted, p0 = cell_inputs(g, "accuracy")
    assert p0 == pytest.approx(g["p_no_fault"].iloc[0])
    assert faulted.sum() == (g["n_faults_sampled"] > 0).sum()
    from pytei_ray.stats import Precision

    verdicts = list(judge_cells(g, Precision("accuracy", 0.2, max_reps=32), 4))
    assert len(verdicts) == 1 and verdicts[0][2].estimate.p0 == pytest.approx(p0)


def test_turning_it_off_is_recorded_and_is_a_change(runs):
    _, _, out_on = runs["on"]
    _, _, out_off = runs["off"]
    spec_on = json.loads((out_on / "_manifest.json").read_text())["spec"]
    spec_off = json.loads((out_off / "_manifest.json").read_text())["spec"]
    assert "stratify_unread" not in spec_on and spec_off["stratify_unread"] is False
    diff = compare_specs(spec_on, spec_off)
    assert not diff.extendable and any("stratify_unread" in c for c in diff.changes)


def test_sigkill_during_stratified_rounds_then_rerun_gives_the_uninterrupted_dataset(
        tmp_path, runs):
    _, _, ref = runs["on"]
    job = _job(tmp_path)
    n_ref = len(pd.read_parquet(ref))
    out = tmp_path / "out"
    sigkill_launch_midway(job, out, 0.6 * n_ref)
    assert 0 < stored_rows(out) < n_ref
    run(job, str(out), **_quiet())
    pd.testing.assert_frame_equal(table(out), table(ref))


def test_paired_comparisons_use_the_stratum_only_when_both_arms_know_it(runs):
    from pytei_ray.stats import Metric
    from pytei_ray.stats.compare import compare_mitigations

    _, df, _ = runs["on"]
    cell = ["model", "target", "error_model", "ber", "repetition"]
    info = Metric(bounds=(0, 1), higher_is_better=True)
    out = compare_mitigations(df, "accuracy", cell, "none", info=info).set_index(
        ["error_model", "ber"])
    for (e, ber), r in out.iterrows():
        rows = df[(df["error_model"] == e) & (df["ber"] == ber)]
        assert r["p0"] == pytest.approx(rows["p_none_read"].iloc[0])
        assert r["faulted"] == (rows[rows["mitigation"] == "none"]["n_words_read"] > 0).sum()
    # the mitigated arm does not know (re-scoring off for it): fault-free trials only
    hidden = df.copy()
    hidden.loc[hidden["mitigation"] == "sbp", "n_words_read"] = None
    out = compare_mitigations(hidden, "accuracy", cell, "none", info=info).set_index(
        ["error_model", "ber"])
    for (e, ber), r in out.iterrows():
        rows = df[(df["error_model"] == e) & (df["ber"] == ber)]
        assert r["p0"] == pytest.approx(rows["p_no_fault"].iloc[0])


def test_report_means_are_the_stratified_formula_on_the_rows(runs):
    """docs/report.md: mean = p_none_read * golden + (1 - p_none_read) * mean of the trials
    with a read fault, computed here with pandas from the rows alone."""
    from pytei_ray.report import summarize

    _, df, out = runs["on"]
    table = summarize(str(out), metric="accuracy").set_index(["error_model", "ber", "mitigation"])
    assert set(table["p0_stratum"]) == {"unread"}
    for (e, ber, mit), g in df.groupby(["error_model", "ber", "mitigation"]):
        p0, golden = g["p_none_read"].iloc[0], g["golden_accuracy"].iloc[0]
        read = g[g["n_words_read"] > 0]["accuracy"]
        mean = golden if read.empty else p0 * golden + (1 - p0) * read.mean()
        row = table.loc[(e, ber, mit)]
        assert row["mean"] == pytest.approx(mean, abs=1e-12)
        assert row["p0"] == pytest.approx(p0) and row["n_faulted"] == len(read)


def test_stratum_label_says_fault_free_when_every_targeted_word_is_read():
    """Dense weights are read by every sample: their unread stratum is the fault-free one (the
    same chance), and tables say so; a table's rows with unread words say "unread"."""
    import pandas as pd

    from pytei_ray.stats.judge import cell_inputs, stratum_label

    base = dict(status=["ok"] * 3, n_faults_sampled=[0, 2, 1], p_no_fault=[0.6] * 3)
    dense = pd.DataFrame({**base, "n_words_read": [0, 2, 1], "p_none_read": [0.6] * 3})
    table = pd.DataFrame({**base, "n_words_read": [0, 0, 1], "p_none_read": [0.8] * 3})
    for g, label in ((dense, "fault-free"), (table, "unread"), (pd.DataFrame(base), "fault-free"),
                     (table.assign(n_words_read=[0, None, 1]), "fault-free")):
        assert stratum_label(g, cell_inputs(g.assign(m=1.0, golden_m=1.0), "m")[4]) == label
    assert stratum_label(pd.DataFrame({"status": ["ok"]}), None) == ""
