"""Campaigns with activation target sets: paired faults, row columns, stable specs, resume."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from pytei_ray.campaign import expand, load_job
from pytei_ray.driver import run

JOB = textwrap.dedent('''
    import torch
    from torch import nn
    from pytei_ray import Activations, Campaign
    from pytei_ray.mitigations import SBP, Clip

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.ReLU(),
                             nn.Linear(4, 1))

    def data(name):
        return torch.randn(32, 8, generator=torch.Generator().manual_seed(1))

    def evaluate(model, x):
        return {"mean": float(model(x).mean()), "first": float(model(x[:4]).sum())}

    def make_campaign(activations: bool = True):
        targets = {"weights": None}
        if activations:
            targets["hidden"] = Activations(["0", "2"])
            targets["stuck"] = Activations(nn.Linear, mode="permanent")
        return Campaign(name="act", models={"mlp": build}, data=data, evaluate=evaluate,
                        bers=[1e-3, 1e-2], repetitions=2, targets=targets,
                        mitigations={"none": None, "sbp": SBP(), "clip": Clip()}, seed=5)

    campaign = make_campaign()
''')


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return path


def test_campaign_rows_for_activation_targets(job, tmp_path):
    out = tmp_path / "out"
    summary = run(job, str(out), executor="local", progress=False, echo=lambda s: None)
    assert summary.complete and summary.failed == 0
    rows = pd.read_parquet(out)
    assert len(rows) == 3 * 2 * 2 * 3 and set(rows["status"]) == {"ok"}
    act = rows[rows["target"] != "weights"]
    assert act["evaluated"].all() and act["p_no_fault"].isna().all()
    assert act["n_sites"].isna().all()
    assert (act["n_faults"] <= act["n_faults_sampled"]).all()
    # each forward of evaluate draws faults: 2 calls x 2 modules per trial, 32 + 4 samples
    hidden = act[act["target"] == "hidden"]
    assert (hidden["n_faults_sampled"] > 0).all()
    # paired: every mitigation of a point sees the same draw
    by_point = act.groupby(["target", "ber", "repetition"])["n_faults_sampled"].nunique()
    assert (by_point == 1).all()
    sbp = act[act["mitigation"] == "sbp"]
    assert (sbp["n_faults"] < sbp["n_faults_sampled"]).any()
    none = act[act["mitigation"] == "none"].set_index(["target", "ber", "repetition"])
    assert (none["mean"] != none["golden_mean"]).any()
    # resume: nothing left to run
    assert run(job, str(out), executor="local", progress=False, echo=lambda s: None).ran == 0


def test_activation_targets_leave_weight_trials_and_specs_unchanged(job):
    with_act = load_job(job).campaign()
    plain = load_job(job, {"activations": False}).campaign()
    weights = {t.trial_id: t.seed for t in expand(with_act) if t.target == "weights"}
    assert weights == {t.trial_id: t.seed for t in expand(plain)}
    spec = with_act.spec()
    assert spec["targets"]["hidden"] == \
        "Activations(targets=['0', '2'], mode='transient', where='output')"
    assert spec["targets"]["stuck"] == ("Activations(targets='torch.nn.modules.linear.Linear', "
                                        "mode='permanent', where='output')")
    assert spec["targets"]["weights"] is None


def test_an_activation_target_that_names_no_module_stops_the_run(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(JOB.replace('Activations(["0", "2"])', 'Activations("enc.*")'))
    from pytei_ray.errors import TrialSetupError

    with pytest.raises(TrialSetupError, match="Target set 'hidden' does not fit model 'mlp'"):
        run(path, str(tmp_path / "o"), executor="local", progress=False, echo=lambda s: None)
