"""Target sets are checked against every model before any trial runs."""

from __future__ import annotations

import glob
import textwrap

from pytei_ray.launch import main

JOB = """
import torch
from torch import nn
from pytei_ray import Campaign


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def data(name):
    return torch.randn(16, 4, generator=torch.Generator().manual_seed(0))


def evaluate(model, x):
    return {{"m": model(x).mean().item()}}


campaign = Campaign(name="targets", models={{"mlp": build}}, data=data, evaluate=evaluate,
                    bers=[1e-3], repetitions=2,
                    targets={{"all": None, "linear": nn.Linear, "first": {first!r}}})
"""


def write_job(tmp_path, first):
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(JOB.format(first=first)))
    return str(path)


def test_misspelled_target_stops_before_any_trial_and_the_fix_is_accepted(tmp_path, capsys):
    out = str(tmp_path / "out")
    job = write_job(tmp_path, ["0.wieght"])
    assert main([job, "--out", out, "--executor", "local", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Target set 'first' does not fit model 'mlp'" in err
    assert "closest names: ['0.weight'" in err
    assert not glob.glob(f"{out}/part-*.parquet")  # no trial ran, no failed rows stored
    # nothing was computed, so the corrected campaign may use the same directory
    job = write_job(tmp_path, ["0.weight"])
    assert main([job, "--out", out, "--executor", "local", "--no-progress"]) == 0
    assert "no results are stored yet" in capsys.readouterr().out
    # a bare module type is a valid target set (as for Injector)
    import pandas as pd

    df = pd.read_parquet(out)
    assert sorted(df.target.unique()) == ["all", "first", "linear"]
    assert (df.status == "ok").all()


def test_changed_campaign_with_stored_results_is_still_refused(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main([write_job(tmp_path, ["0.weight"]), "--out", out, "--executor", "local",
                 "--no-progress"]) == 0
    assert main([write_job(tmp_path, ["2.weight"]), "--out", out, "--executor", "local",
                 "--no-progress"]) == 2
    assert "targets['first']" in capsys.readouterr().err
