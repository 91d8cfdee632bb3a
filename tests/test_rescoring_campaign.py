"""Re-scoring inside campaigns: the worker re-scores table-only trials of a split evaluation and
records ``n_rescored``; metrics equal those of the same campaign scored in full, row for row."""

from __future__ import annotations

import struct
import warnings

import pytest
import torch
from torch import nn

from pytei_ray.campaign import Campaign, expand
from pytei_ray.campaign.compare import compare_specs
from pytei_ray.campaign.spec import spec_hash
from pytei_ray.errors import TrialSetupError
from pytei_ray.execution.worker import TrialWorker
from pytei_ray.injection import SplitEvaluation, sample_batches
from pytei_ray.mitigations import SBP, Clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class EmbNet(nn.Module):
    def __init__(self, mix: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(400, 8)
        self.fc = nn.Linear(16, 8)
        self.out = nn.Linear(8, 1)
        self.mix = mix

    def forward(self, x):
        h = self.emb(x).flatten(1)
        if self.mix:  # centred on the batch mean (eval mode): outputs depend on the batch
            h = h - h.mean(0)
        return self.out(torch.relu(self.fc(h))).squeeze(1)


def build():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return EmbNet().eval()


def build_mix():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return EmbNet(mix=True).eval()


def data(name):
    gen = torch.Generator().manual_seed(2)
    return (torch.rand(300, 2, generator=gen) ** 3 * 400).long()  # skewed: hot and unread rows


def outputs(model, x, indices=None):
    return torch.cat([model(x[ids])[:n] for ids, n in sample_batches(len(x), indices, 32)])


def score(out, x):
    out = torch.nan_to_num(out.double(), nan=0.0, posinf=1e6, neginf=-1e6).clamp(-1e6, 1e6)
    return {"mean": float(out.mean()), "top": float(out.max())}


SPLIT = SplitEvaluation(outputs, score)


def campaign(**over):
    kw = dict(name="rs", models={"net": build}, data=data, evaluate=SPLIT,
              bers=[1e-5, 1e-4, 1e-3], repetitions=6,
              mitigations={"none": None, "clip": Clip(), "sbp": SBP()},
              targets={"emb": ["emb.weight"], "all": None}, seed=3)
    kw.update(over)
    return Campaign(**kw)


def run(c):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = TrialWorker(c, device="cpu").run_chunk(expand(c))
    assert all(r["status"] == "ok" for r in result.rows), [r["error"] for r in result.rows]
    return result, [str(w.message) for w in caught]


def bits(v):
    return struct.pack("<d", v)


@pytest.fixture(scope="module")
def rescored():
    return run(campaign())


def test_same_metrics_as_full_scoring_row_for_row(rescored):
    result, _ = rescored
    assert result.rescoring_off == []
    full, _ = run(campaign(rescore=False))
    blackbox, _ = run(campaign(evaluate=lambda m, x: score(outputs(m, x), x)))
    for other in (full, blackbox):
        by_id = {r["trial_id"]: r for r in other.rows}
        for row in result.rows:
            twin = by_id[row["trial_id"]]
            for m in ("mean", "top", "golden_mean", "golden_top"):
                assert bits(row[m]) == bits(twin[m]), (row["trial_id"], m)
            assert twin["n_rescored"] is None
    emb = [r for r in result.rows if r["target"] == "emb" and r["evaluated"]]
    partial = [r["n_rescored"] for r in emb if r["n_rescored"] is not None]
    assert partial and all(0 < n <= 150 for n in partial)  # at most half: else a full pass
    assert {r["ber"] for r in emb if r["n_rescored"] is None} <= {1e-3}
    # faults in rows no sample reads: not evaluated here, evaluated when scored in full
    unread = [r for r in result.rows if r["target"] == "emb" and not r["evaluated"]
              and r["n_words"]]
    assert unread
    by_id = {r["trial_id"]: r for r in full.rows}
    assert all(by_id[r["trial_id"]]["evaluated"] for r in unread)
    assert all(r["n_rescored"] is None for r in result.rows if not r["evaluated"])
    # `all` trials with faults outside the table are scored in full
    outside = [r for r in result.rows if r["target"] == "all" and r["evaluated"]
               and r["n_rescored"] is None]
    assert outside


def test_batch_dependent_model_is_scored_in_full_with_one_warning():
    result, messages = run(campaign(models={"mix": build_mix}, bers=[1e-4], repetitions=3))
    off = [m for m in messages if "re-scoring is off" in m]
    assert len(off) == 1 and "depends on the batch" in off[0] and "'mix'" in off[0]
    assert {(o["model"], o["mitigation"]) for o in result.rescoring_off} == {
        ("mix", "none"), ("mix", "clip"), ("mix", "sbp")}
    assert all(r["n_rescored"] is None for r in result.rows)


def test_declared_table_that_is_no_lookup_stops_the_model():
    bad = SplitEvaluation(outputs, score, tables=["fc.weight"])
    c = campaign(evaluate=bad)
    with pytest.raises(TrialSetupError, match="'fc.weight' is not"):
        TrialWorker(c, device="cpu").run_chunk(expand(c)[:1])


def test_rescore_flag_in_spec_only_when_off():
    on, off = campaign(), campaign(rescore=False)
    assert "rescore" not in on.spec() and off.spec()["rescore"] is False
    assert spec_hash(on.spec()) == spec_hash(campaign(evaluate=lambda m, x: {}).spec())
    diff = compare_specs(on.spec(), off.spec())
    assert not diff.extendable and any("rescore" in c for c in diff.changes)
    assert campaign(skip_ineffective=False, rescore=True).rescores is False
