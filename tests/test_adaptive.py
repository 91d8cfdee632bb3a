"""Adaptive campaigns: repetitions only where an interval is still open, decided on complete
rounds, so the dataset is a pure function of the campaign and its stopping rule."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from launch_fixtures import sigkill_launch_midway, stored_rows, table

from pytei_ray.errors import SpecChangedError
from pytei_ray.launch import main, run

JOB = '''
import os, time, torch
from torch import nn
from pytei_ray import Campaign, BitFlip
from pytei_ray.mitigations import SBP, Clip
from pytei_ray.stats import Precision

def build():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

def data(name):
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    return x, build()(x).argmax(1)

def evaluate(model, d):
    time.sleep(float(os.environ.get("PYTEI_TEST_SLEEP", "0")))
    x, y = d
    return {{"accuracy": (model(x).argmax(1) == y).float().mean().item()}}

campaign = Campaign(name="adapt", models={{"m": build}}, data=data, evaluate=evaluate,
                    bers=[1e-5, 1e-3, 1e-2], repetitions=4, seed=5,
                    mitigations={{"none": None, "sbp": SBP(), "clip": Clip()}},
                    precision={precision})
'''


def _job(tmp_path: Path, precision="Precision('accuracy', 0.08, max_reps=16)") -> str:
    path = tmp_path / "job.py"
    path.write_text(JOB.format(precision=precision))
    return str(path)


def _quiet(**kw):
    return dict(executor="local", progress=False, echo=lambda s: None, **kw)


def test_adaptive_run_adds_repetitions_only_to_open_points_and_keeps_pairs(tmp_path):
    job = _job(tmp_path)
    summary = run(job, str(tmp_path / "out"), **_quiet())
    assert summary.complete and summary.rounds >= 2
    df = pd.read_parquet(tmp_path / "out")
    reps = df.groupby(["ber", "mitigation"])["repetition"].agg(["count", "max"])
    # every point ran a whole number of looks, and all mitigations of a point the same count
    per_point = df.groupby("ber")["repetition"].nunique()
    assert set(per_point) <= {4, 8, 16} and per_point.nunique() > 1, per_point
    for ber, n in per_point.items():
        assert (reps.loc[ber, "count"] == n).all()
    # the rarely-faulted point (BER 1e-5: most trials have no fault) is settled in round one
    assert per_point[1e-5] == 4
    # faults are paired: one seed per (ber, repetition) across mitigations
    assert (df.groupby(["ber", "repetition"])["seed"].nunique() == 1).all()
    again = run(job, str(tmp_path / "out"), **_quiet())
    assert again.complete and again.ran == 0 and again.total == summary.total
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["n_trials"] == len(df) == summary.total  # the report's progress counts these


def test_adaptive_dataset_is_a_pure_function_of_the_rule_and_extends(tmp_path):
    loose = "Precision('accuracy', 0.08, max_reps=16)"
    tight = "Precision('accuracy', 0.04, max_reps=16)"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = run(_job(tmp_path / "a", loose), str(tmp_path / "a" / "out"), **_quiet())
    b = run(_job(tmp_path / "b", tight), str(tmp_path / "b" / "out"), **_quiet())
    assert b.total >= a.total
    # the tighter rule into the loose rule's directory is an extension that ends in b's dataset
    tight_into_a = _job(tmp_path / "a", tight)
    # run() names its argument; the launcher prints --extend (test_launch)
    with pytest.raises(SpecChangedError, match="`extend=True`"):
        run(tight_into_a, str(tmp_path / "a" / "out"), **_quiet())
    run(tight_into_a, str(tmp_path / "a" / "out"), extend=True, **_quiet())
    pd.testing.assert_frame_equal(table(tmp_path / "a" / "out"), table(tmp_path / "b" / "out"))
    # a looser rule asks for less: refused, nothing changes
    before = table(tmp_path / "a" / "out")
    with pytest.raises(SpecChangedError, match="asks for less"):
        run(_job(tmp_path / "a", loose), str(tmp_path / "a" / "out"), extend=True, **_quiet())
    pd.testing.assert_frame_equal(table(tmp_path / "a" / "out"), before)


def test_precision_flag_makes_any_job_adaptive_and_is_recorded(tmp_path):
    job = _job(tmp_path, precision="None")
    out = str(tmp_path / "out")
    s = run(job, out, precision="accuracy=0.08", max_reps=16, **_quiet())
    assert s.rounds >= 2
    again = run(job, out, **_quiet())  # no flag: the recorded target is used
    assert again.complete and again.ran == 0


def test_growth_sets_the_looks_and_changing_it_is_not_an_extension(tmp_path):
    grown = "Precision('accuracy', 0.2, max_reps=24, growth=1.5)"
    summary = run(_job(tmp_path, grown), str(tmp_path / "out"), **_quiet())
    df = pd.read_parquet(tmp_path / "out")
    per_point = df.groupby("ber")["repetition"].nunique()
    # looks 4, 6, 9, 14, 21, 24 (x1.5 rounded up, then the cap): every point stopped at one of
    # them, and some point at a look the doubling rule (4, 8, 16, 24) does not have
    assert set(per_point) <= {4, 6, 9, 14, 21, 24} and set(per_point) - {4, 8, 16, 24}, per_point
    assert summary.complete and summary.rounds >= 2
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["spec"]["stopping"]["growth"] == 1.5
    # the same target with doubling looks decides at other looks: a change, refused even with
    # extend=True, nothing stored changes
    before = table(tmp_path / "out")
    with pytest.raises(SpecChangedError, match="growth changed"):
        run(_job(tmp_path, "Precision('accuracy', 0.2, max_reps=24)"), str(tmp_path / "out"),
            extend=True, **_quiet())
    pd.testing.assert_frame_equal(table(tmp_path / "out"), before)


def test_growth_flag_is_recorded_and_a_plain_rerun_keeps_it(tmp_path):
    job = _job(tmp_path, precision="None")
    out = str(tmp_path / "out")
    assert main([job, "--out", out, "--executor", "local", "--no-progress",
                 "--precision", "accuracy=0.08", "--max-reps", "16", "--growth", "1.5"]) == 0
    stored = json.loads((tmp_path / "out" / "_manifest.json").read_text())["job"]
    assert stored["precision_override"]["growth"] == 1.5
    again = run(job, out, **_quiet())  # no flag: the recorded target (and its looks) is used
    assert again.complete and again.ran == 0


@pytest.mark.parametrize("argv, message", [
    (["--precision", "accuracy=0.1", "--growth", "1"], "growth"),
    (["--growth", "1.5"], "precision target"),
    (["--precision", "accuracy=-1"], "halfwidth"),
    (["--precision", "accuracy=0.1", "--confidence", "1.5"], "confidence"),
    (["--precision", "accuracy=0.1", "--max-reps", "2"], "max"),
    (["--precision", "nonsense"], "METRIC=H"),
    (["--max-reps", "20"], "precision target"),
])
def test_bad_precision_input_is_refused_before_any_work(tmp_path, capsys, argv, message):
    job = _job(tmp_path, precision="None")
    out = tmp_path / "out"
    assert main([job, "--out", str(out), "--executor", "local", "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_precision_for_a_metric_the_campaign_does_not_produce_is_refused(tmp_path, capsys):
    job = _job(tmp_path, precision="None")
    out = tmp_path / "out"
    code = main([job, "--out", str(out), "--executor", "local", "--no-progress",
                 "--precision", "auc=0.01"])
    err = capsys.readouterr().err
    assert code == 2 and "'auc'" in err and "accuracy" in err
    assert not any(p.startswith("part-") for p in os.listdir(out)) if out.exists() else True


def test_sigkill_during_adaptive_rounds_then_rerun_gives_the_uninterrupted_dataset(tmp_path):
    job = _job(tmp_path)
    ref = tmp_path / "ref"
    run(job, str(ref), **_quiet())
    n_ref = len(pd.read_parquet(ref))
    for i, kill_at in enumerate((0.15, 0.5, 0.8)):  # early in round 1, later rounds
        out = tmp_path / f"out{i}"
        sigkill_launch_midway(job, out, kill_at * n_ref)
        assert 0 < stored_rows(out) < n_ref
        run(job, str(out), **_quiet())
        pd.testing.assert_frame_equal(table(out), table(ref))


def test_report_agrees_with_the_run_on_open_cells(tmp_path):
    """The run and the report judge cells with one function: the report's open cells of the
    target metric are exactly the cells the run summary lists as stopped at the cap."""
    from pytei_ray.report import summarize

    job = _job(tmp_path)
    s = run(job, str(tmp_path / "out"), **_quiet())
    table = summarize(str(tmp_path / "out"), metric="accuracy")
    open_cells = table[~table["conclusive"]]
    assert len(open_cells) == len(s.at_cap) > 0
    assert open_cells["at_cap"].all() and (open_cells["trials"] == 16).all()
    listed = {line.split(":")[0] for line in s.at_cap}
    assert listed == {f"m/all/bitflip/{r.ber}/{r.mitigation}" for r in open_cells.itertuples()}


def test_precision_flag_keeps_the_jobs_confidence_and_looks(tmp_path):
    job = _job(tmp_path, precision="Precision('accuracy', 0.2, max_reps=24, growth=1.5, "
                                   "confidence=0.9)")
    said: list[str] = []
    out = str(tmp_path / "out")
    run(job, out, precision="accuracy=0.1", max_reps=16, executor="local", progress=False,
        echo=said.append)
    stored = json.loads((tmp_path / "out" / "_manifest.json").read_text())["job"]
    assert stored["precision_override"]["halfwidth"] == 0.1
    assert stored["precision_override"]["confidence"] == 0.9
    assert stored["precision_override"]["growth"] == 1.5
    assert any("keeps the job's confidence 0.9 and growth 1.5" in s for s in said), said
    # a flag still chooses: the job's growth is not kept when --growth is given
    out2 = str(tmp_path / "out2")
    said.clear()
    run(job, out2, precision="accuracy=0.1", max_reps=16, growth=2.0, executor="local",
        progress=False, echo=said.append)
    stored = json.loads((tmp_path / "out2" / "_manifest.json").read_text())["job"]
    assert stored["precision_override"].get("growth", 2.0) == 2.0
    assert stored["precision_override"]["confidence"] == 0.9
    assert any("keeps the job's confidence 0.9;" in s for s in said), said
