"""Subsampled scoring: a trial that needs a full evaluation scores a random subset of the
samples (``Campaign(subsample=m)``). Its metric is an unbiased estimate of the full one for
means of per-sample values and two-sample rank statistics (AUC); the subset is a function of
the trial seed, shared by a point's mitigations; re-scored and skipped trials are unaffected."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pytei_ray.campaign import Campaign, expand
from pytei_ray.campaign.compare import compare_specs
from pytei_ray.campaign.spec import spec_hash
from pytei_ray.errors import CampaignSpecError, TrialSetupError
from pytei_ray.execution.worker import TrialWorker
from pytei_ray.faults.faultmap import sample_fault_map
from pytei_ray.injection import SplitEvaluation, apply_faults, sample_batches, subsample_ids
from pytei_ray.mitigations import Clip
from pytei_ray.report import summarize
from pytei_ray.studies.drs.train import binary_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 300


class EmbNet(nn.Module):
    def __init__(self, mix: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(400, 8)
        self.fc = nn.Linear(16, 8)
        self.out = nn.Linear(8, 1)
        self.mix = mix

    def forward(self, x):
        h = self.emb(x).flatten(1)
        if self.mix:  # centred on the batch mean: a sample's output depends on the batch
            h = h - h.mean(0)
        return self.out(torch.relu(self.fc(h))).squeeze(1)


def build(mix: bool = False):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return EmbNet(mix).eval()


def data(name):
    gen = torch.Generator().manual_seed(2)
    return (torch.rand(N, 2, generator=gen) ** 3 * 400).long()


def outputs(model, x, indices=None):
    return torch.cat([model(x[ids])[:n] for ids, n in sample_batches(len(x), indices, 32)])


def _labels(x):
    return (x[:, 0] % 3 == 0).float()  # a label per sample, fixed by the data


def score(out, x):
    return binary_metrics(out, _labels(x))


def score_subset(out, x, indices):
    return binary_metrics(out, _labels(x)[indices])


SPLIT = SplitEvaluation(outputs, score, score_subset=score_subset)


def campaign(**over):
    kw = dict(name="ss", models={"net": build}, data=data, evaluate=SPLIT,
              bers=[1e-5, 1e-3], repetitions=6,
              mitigations={"none": None, "clip": Clip(low=-0.5, high=0.5)},
              targets={"emb": ["emb.weight"], "dense": ["fc.weight", "out.weight"]},
              seed=5, subsample=40)
    kw.update(over)
    return Campaign(**kw)


def run(c, worker=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = worker or TrialWorker(c, device="cpu")
        result = w.run_chunk(expand(c))
    assert all(r["status"] == "ok" for r in result.rows), [r["error"] for r in result.rows]
    return result, [str(m.message) for m in caught], w


@pytest.fixture(scope="module")
def sampled():
    return run(campaign())


# ---- the estimator ---------------------------------------------------------------------------
def test_subsample_ids_are_distinct_sorted_deterministic_and_uniform():
    ids = subsample_ids(11, 50, 20)
    assert len(ids) == 20 and (np.diff(ids) > 0).all() and ids.dtype == np.int64
    assert (subsample_ids(11, 50, 20) == ids).all() and not (subsample_ids(12, 50, 20) == ids).all()
    assert (subsample_ids(3, 7, 100) == np.arange(7)).all()  # m >= n: every sample
    counts = np.bincount(np.concatenate([subsample_ids(s, 20, 5) for s in range(4000)]),
                         minlength=20)
    expected = 4000 * 5 / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8  # chi-square, 19 degrees of freedom, p = 0.001
    with pytest.raises(ValueError, match="m >= 1"):
        subsample_ids(0, 10, 0)


def test_subset_metrics_average_to_the_full_metrics_exactly():
    """Over every subset of a size (all equally likely), log loss averages to the full log loss;
    AUC does over the subsets with a given number of clicks: both are unbiased estimates."""
    logits = torch.tensor([2.0, -1.0, 0.5, float("nan"), 0.5, -3.0, float("inf"), 1.0, -0.2])
    labels = torch.tensor([1.0, 0, 1, 0, 0, 1, 0, 1, 0])
    full = binary_metrics(logits, labels)
    losses, auc_by_clicks = [], {}
    for sub in itertools.combinations(range(len(logits)), 4):
        ids = torch.tensor(sub)
        m = binary_metrics(logits[ids], labels[ids])
        losses.append(m["logloss"])
        clicks = int(labels[ids].sum())
        if 0 < clicks < 4:
            auc_by_clicks.setdefault(clicks, []).append(m["auc"])
    assert math.isclose(float(np.mean(losses)), full["logloss"], rel_tol=1e-12)
    assert len(auc_by_clicks) == 3
    for aucs in auc_by_clicks.values():
        assert math.isclose(float(np.mean(aucs)), full["auc"], rel_tol=1e-6)  # AUC: fp32


def test_bimodal_outcomes_keep_their_mean():
    """Rare catastrophes (10% of faulty models output noise, the rest a golden-like ranking):
    the mean of subsampled AUCs over many trials is the mean of the full AUCs."""
    gen = torch.Generator().manual_seed(0)
    labels = (torch.rand(2000, generator=gen) < 0.3).float()
    signal = labels * 1.2 + torch.randn(2000, generator=gen)
    full, sub = [], []
    for trial in range(600):
        g = torch.Generator().manual_seed(1000 + trial)
        broken = torch.rand(1, generator=g).item() < 0.1
        out = torch.randn(2000, generator=g) if broken else signal + 0.3 * torch.randn(
            2000, generator=g)
        full.append(binary_metrics(out, labels)["auc"])
        ids = torch.from_numpy(subsample_ids(trial, 2000, 200))
        sub.append(binary_metrics(out[ids], labels[ids])["auc"])
    full, sub = np.array(full), np.array(sub)
    se = float(np.std(sub - full)) / math.sqrt(len(full))
    assert abs(sub.mean() - full.mean()) < 4 * se  # paired: only the subset noise differs
    assert np.std(sub - full) > 0  # and they do differ trial by trial


# ---- in a campaign -------------------------------------------------------------------------
def test_full_evaluations_score_the_trials_subsample(sampled):
    result, messages, worker = sampled
    assert result.rescoring_off == [] and not [m for m in messages if "is off" in m]
    rows = result.rows
    sub = [r for r in rows if r["n_scored"] is not None]
    assert sub and all(r["n_scored"] == 40 and r["evaluated"] for r in sub)
    assert all(r["n_rescored"] is None for r in sub)
    # no evaluation: nothing scored; re-scored (exact) trials are not subsampled
    assert all(r["n_scored"] is None for r in rows if not r["evaluated"])
    assert any(r["n_rescored"] is not None for r in rows)
    # the metric is the faulty model's on subsample_ids(seed): recompute one trial by hand
    trials = {t.trial_id: t for t in expand(worker.campaign)}
    model, x = worker._models["net"], worker._data["net"]
    for row in [r for r in sub if r["target"] == "dense"][:4]:
        t = trials[row["trial_id"]]
        sites = worker._sites[("net", "dense")]
        fmap = sample_fault_map([s.info for s in sites], worker.campaign.error_models[
            "bitflip"](t.ber), t.seed)
        with apply_faults(fmap, model, worker._mitigations("net", t.mitigation),
                          {s.name: s for s in sites}), torch.no_grad():
            ids = torch.from_numpy(subsample_ids(t.seed, N, 40))
            want = binary_metrics(outputs(model, x)[ids], _labels(x)[ids])
        assert row["auc"] == want["auc"] and row["logloss"] == want["logloss"]


def test_mitigations_of_a_point_share_the_subsample_and_workers_agree(sampled):
    result, _, _ = sampled
    again, _, _ = run(campaign())
    assert [r["auc"] for r in again.rows] == [r["auc"] for r in result.rows]
    assert [r["n_scored"] for r in again.rows] == [r["n_scored"] for r in result.rows]
    by_point: dict[tuple, set] = {}
    for r in result.rows:
        if r["n_scored"] is not None:
            by_point.setdefault((r["target"], r["ber"], r["repetition"]), set()).add(r["seed"])
    assert by_point and all(len(s) == 1 for s in by_point.values())


def test_batch_dependent_model_is_scored_on_every_sample_with_a_warning():
    result, messages, _ = run(campaign(models={"mix": lambda: build(True)}, bers=[1e-3],
                                       repetitions=2))
    off = [m for m in messages if "subsampling is off" in m]
    assert len(off) == 1 and "depends on the batch" in off[0]
    assert all(r["n_scored"] is None for r in result.rows)
    assert any(o["reason"].startswith("subsampling off") for o in result.rescoring_off)


def test_subsample_at_least_the_samples_scores_them_all():
    result, _, _ = run(campaign(subsample=N, bers=[1e-3], repetitions=2))
    assert all(r["n_scored"] is None for r in result.rows)


def test_score_subset_that_does_not_line_up_stops_the_model():
    bad = SplitEvaluation(outputs, score, score_subset=lambda o, x, i: score(o, x[i.flip(0)]))
    c = campaign(evaluate=bad)
    with pytest.raises(TrialSetupError, match="score_subset"):
        TrialWorker(c, device="cpu").run_chunk(expand(c)[:1])


@pytest.mark.parametrize("over, match", [
    (dict(subsample=1), "integer >= 2"),
    (dict(subsample=2.5), "integer >= 2"),
    (dict(evaluate=lambda m, x: {"a": 1.0}), "score_subset"),
    (dict(evaluate=SplitEvaluation(outputs, score)), "score_subset"),
    (dict(skip_ineffective=False), "skip_ineffective"),
])
def test_bad_subsample_is_refused_before_anything_runs(over, match):
    with pytest.raises(CampaignSpecError, match=match):
        campaign(**over)


def test_subsample_is_part_of_the_spec():
    on, off = campaign(), campaign(subsample=None)
    assert on.spec()["subsample"] == 40 and "subsample" not in off.spec()
    assert spec_hash(off.spec()) == spec_hash(campaign(subsample=None,
                                                       evaluate=SPLIT).spec())
    diff = compare_specs(off.spec(), on.spec())
    assert not diff.extendable and any("subsample" in c for c in diff.changes)
    assert campaign(rescore=False).subsample == 40  # works without re-scoring


def test_report_gives_no_sdc_rate_where_trials_were_subsampled(sampled):
    result, _, _ = sampled
    df = pd.DataFrame(result.rows)
    table = summarize(df, "auc")
    sub = table[table["subsampled"] > 0]
    assert len(sub) and sub["sdc_rate"].isna().all()
    assert (sub["sdc_method"] == "n/a (subsampled)").all()
    exact = table[(table["subsampled"] == 0) & (table["n_faulted"] > 0)]
    assert len(exact) and exact["sdc_rate"].notna().all()


def test_report_page_says_why_those_cells_have_no_sdc_rate(sampled, tmp_path):
    from pytei_ray.report import write_report

    result, _, _ = sampled
    data = tmp_path / "ds"
    data.mkdir()
    pd.DataFrame(result.rows).to_parquet(data / "part-0.parquet")
    write_report(data, tmp_path / "rep", plots=False)
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Subsampled scoring" in html and "no SDC rate" in html
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert (summary["subsampled"] > 0).any()
