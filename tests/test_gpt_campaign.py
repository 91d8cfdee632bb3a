"""A training-fault campaign end to end (issue 17): rows, the step table, outcome classes, paired
faults across mitigations, kill and resume, and bad input refused before anything is stored.

A tiny GPT (pretrained in a few seconds, cached per results directory) and a five-step window.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from launch_fixtures import VOLATILE

from pytei_ray.columns import golden_trial_id
from pytei_ray.launch import main, run

ROOT = Path(__file__).resolve().parents[1]

JOB = '''
import os, time
from pytei_ray.campaign import BitFlipIn, Campaign
from pytei_ray.studies.gpt import GPTStudy
from pytei_ray.training import AtStep, ParamGrads, Rollback, SkipOnSpike, Training, Weights
from pytei_ray.training import OptimizerState

study = GPTStudy.preset("tiny")
SLEEP = float(os.environ.get("PYTEI_TEST_SLEEP", "0"))


def evaluate(model, data):
    time.sleep(SLEEP)  # slowed only in the killed run
    return study.evaluate(model, data)


targets = {{"weights": Training({site}, {when}, steps=5),
           "grads": Training(ParamGrads(), AtStep(2), steps=5)}}
study.check_targets(targets)
campaign = Campaign(
    name="gpt-test", models={{"gpt": study.trainer("fp32")}}, data=study.eval_data,
    evaluate=evaluate, targets=targets,
    error_models={{"exp-msb": BitFlipIn([30], n=1), "exp-rate": BitFlipIn("exponent")}},
    bers=[0.0], repetitions=2,
    mitigations={{"none": None, "skip": SkipOnSpike(warmup=2), "rollback": Rollback(warmup=2)}},
    seed=5, chunk_size=2)
'''
OUTCOMES = ["masked", "spike_and_recover", "silent_degradation", "divergence",
            "immediate_nonfinite"]
N_TRIALS = 2 * 2 * 2 * 3


def write(tmp_path: Path, site: str = 'Weights("blocks.*")', when: str = "AtStep(2)") -> Path:
    job = tmp_path / "gptjob.py"
    job.write_text(JOB.format(site=site, when=when))
    return job


def table(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out).drop(columns=VOLATILE)
    return df.sort_values("trial_id").reset_index(drop=True)


def steps(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "_steps").sort_values(["trial_id", "step"]).reset_index(
        drop=True)


def golden_steps(out: Path) -> pd.DataFrame:
    """The golden step table as a pandas user reads it (copies dropped by (trial_id, step))."""
    return pd.read_parquet(out / "_golden_steps").drop_duplicates(["trial_id", "step"]) \
        .sort_values(["trial_id", "step"]).reset_index(drop=True)


TELEMETRY = ["loss", "grad_norm", "update_norm", "max_attention_logit"]


def bits(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype=np.float64).view(np.int64)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("gpt")
    out = tmp / "ref"
    summary = run(write(tmp), str(out), executor="local", progress=False, echo=lambda s: None)
    assert summary.complete and summary.failed == 0
    return out


def test_rows_steps_and_outcome_classes(reference):
    rows, st = table(reference), steps(reference)
    assert len(rows) == N_TRIALS and rows["trial_id"].is_unique
    assert (rows["status"] == "ok").all()
    # exactly one class per row
    assert (rows[OUTCOMES].sum(axis=1) == 1).all()
    # the step table: every trial, every step of the window, once
    assert set(st["trial_id"]) == set(rows["trial_id"])
    assert not st.duplicated(["trial_id", "step"]).any()
    assert all(v == [0, 1, 2, 3, 4] for v in st.groupby("trial_id")["step"].apply(list))
    # a fault-free trial (an exponent rate at BER 0) is masked, bit for bit golden's
    clean = rows[rows["error_model"] == "exp-rate"]
    assert (clean["n_faults"] == 0).all() and (clean["masked"] == 1).all()
    assert (clean["val_loss"] == clean["golden_val_loss"]).all()
    # one flip of the top exponent bit of a weight, unmitigated: a weight becomes ~1e38
    # or 0; at least one of the two repetitions diverges or degrades
    msb = rows[(rows["error_model"] == "exp-msb") & (rows["target"] == "weights")
               & (rows["mitigation"] == "none")]
    assert (msb["n_faults"] == 1).all()
    assert (msb[["divergence", "immediate_nonfinite", "silent_degradation"]].sum(axis=1)
            > 0).any()
    # the faults strike at step 2: the steps before are golden's in every trial
    first = st[st["step"] < 2].merge(rows[["trial_id", "mitigation"]], on="trial_id")
    assert first.groupby(["mitigation", "step"])["loss"].nunique().max() == 1
    golden = pd.read_parquet(reference / "_golden")
    assert set(golden["mitigation"]) == {"none", "skip", "rollback"}
    assert (golden["masked"] == 1).all()


def test_golden_trajectories_are_stored_next_to_the_trials(reference):
    from pytei_ray.storage import ResultsStore

    rows, st, gs = table(reference), steps(reference), golden_steps(reference)
    golden = pd.read_parquet(reference / "_golden")
    pairs = {golden_trial_id(m, g) for m, g in zip(golden["model"], golden["mitigation"])}
    assert len(pairs) == 3 and set(gs["trial_id"]) == pairs
    assert not pairs & set(rows["trial_id"])  # no real trial id looks like a golden one
    # the window's steps, once each, and no fault in a golden run
    assert all(v == [0, 1, 2, 3, 4] for v in gs.groupby("trial_id")["step"].apply(list))
    assert (gs[["n_faults_sampled", "n_faults", "n_words_changed"]] == 0).all().all()
    # every golden step part belongs to a golden part of the same name
    assert {p.name for p in (reference / "_golden_steps").iterdir()} <= \
        {p.name for p in (reference / "_golden").iterdir()}
    # a fault-free trial (an exponent rate at BER 0) is a fresh golden window: its telemetry
    # equals the stored golden trajectory of its (model, mitigation) bit for bit
    clean = rows.loc[rows["error_model"] == "exp-rate", ["trial_id", "model", "mitigation"]]
    assert (rows.loc[clean.index, "n_faults"] == 0).all() and len(clean) == 12
    clean = clean.assign(golden_id=[golden_trial_id(m, g)
                                    for m, g in zip(clean["model"], clean["mitigation"])])
    trial = st.merge(clean, on="trial_id")
    pair = trial.merge(gs, left_on=["golden_id", "step"], right_on=["trial_id", "step"],
                       suffixes=("", "_golden"))
    assert len(pair) == len(trial) == 12 * 5
    for c in TELEMETRY:
        assert (bits(pair[c]) == bits(pair[f"{c}_golden"])).all(), c
    # the pandas lines of docs/training.md put a trial next to its golden trajectory
    d = str(reference)
    rows_, steps_ = pd.read_parquet(d), pd.read_parquet(f"{d}/_steps")
    golden_ = pd.read_parquet(f"{d}/_golden_steps").drop_duplicates(["trial_id", "step"])
    t = rows_[rows_["trial_id"] == clean["trial_id"].iloc[0]].iloc[0]
    doc = steps_[steps_.trial_id == t.trial_id].merge(
        golden_[golden_.trial_id == f"golden/{t.model}/{t.mitigation}"], on="step",
        suffixes=("", "_golden"))
    assert len(doc) == 5 and (bits(doc["loss"]) == bits(doc["loss_golden"])).all()
    # the store's reader gives the same table
    read = ResultsStore(reference).read_golden_steps().to_pandas() \
        .sort_values(["trial_id", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(read, gs)


def test_mitigations_of_a_point_see_the_same_faults(reference):
    rows, st = table(reference), steps(reference)
    point = ["target", "error_model", "ber", "repetition"]
    assert (rows.groupby(point)["seed"].nunique() == 1).all()
    assert (rows.groupby(point)["n_faults_sampled"].nunique() == 1).all()
    # step by step, the faults sampled at each step are the same for every mitigation
    # (a rollback's recomputation sees the transient fault once: sampled counts attempt 0)
    merged = st.merge(rows[["trial_id", *point, "mitigation"]], on="trial_id")
    none = merged[merged["mitigation"] == "none"].set_index([*point, "step"])
    skip = merged[merged["mitigation"] == "skip"].set_index([*point, "step"])
    assert (none["n_faults_sampled"] == skip["n_faults_sampled"].loc[none.index]).all()


def test_kill_and_resume_gives_the_uninterrupted_dataset(tmp_path, reference):
    job = write(tmp_path)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTEI_TEST_SLEEP="0.2")
    cmd = [sys.executable, "-m", "pytei_ray.launch", str(job), "--out", str(out),
           "--executor", "local", "--no-progress", "--flush-every", "0", "--chunk-size", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 240

    def parts() -> list[str]:
        return [p for p in os.listdir(out) if p.startswith("part-")] if out.is_dir() else []

    while len(parts()) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()
    stored = pd.read_parquet(out)
    assert 0 < len(stored) < N_TRIALS

    summary = run(job, str(out), executor="local", progress=False, echo=lambda s: None)
    assert summary.complete and summary.failed == 0
    assert summary.ran == N_TRIALS - len(stored)
    pd.testing.assert_frame_equal(table(out), table(reference))
    pd.testing.assert_frame_equal(steps(out), steps(reference))
    # every step part has its result part (no orphan telemetry), nothing twice
    names = {p.name for p in (out / "_steps").iterdir()}
    assert names <= set(parts())
    # the golden trajectories too: bit for bit the uninterrupted run's, none orphaned
    pd.testing.assert_frame_equal(golden_steps(out), golden_steps(reference))
    assert {p.name for p in (out / "_golden_steps").iterdir()} <= \
        {p.name for p in (out / "_golden").iterdir()}


@pytest.mark.parametrize("site, when, fragment", [
    ('Weights("nothing.*")', "AtStep(2)", "matches no"),
    ('OptimizerState("momentum_buffer")', "AtStep(2)", "momentum_buffer"),
    ('Weights("blocks.*")', "AtStep(7)", "inside the window of 5 steps"),
])
def test_bad_input_exits_2_before_anything_is_stored(tmp_path, capsys, site, when, fragment):
    job = write(tmp_path, site, when)
    out = tmp_path / "out"
    assert main([str(job), "--out", str(out), "--executor", "local", "--no-progress"]) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


def test_report_shows_outcome_rates_and_loss_curves(reference, tmp_path):
    from pytei_ray.report import write_report
    from pytei_ray.stats import clopper_pearson

    rep = write_report(str(reference), tmp_path / "rep")
    outcomes = pd.read_csv(tmp_path / "rep" / "outcomes.csv")
    rows = table(reference)
    assert outcomes["trials"].sum() == len(rows)
    # the rate and exact interval of one group, recomputed from the rows
    g = outcomes.iloc[0]
    sel = rows[(rows["target"] == g["target"]) & (rows["error_model"] == g["error_model"])
               & (rows["mitigation"] == g["mitigation"])]
    k, n = int(sel["masked"].sum()), len(sel)
    lo, hi = clopper_pearson(k, n)
    assert g["masked"] == f"{k / n:.2f} [{lo:.2f}, {hi:.2f}]"
    assert (tmp_path / "rep" / "loss_curves.png") in rep.figures
    # each panel draws the golden trajectory of its trials' (model, mitigation), dashed black
    from pytei_ray.report import training as report_training
    from pytei_ray.report.data import load_dataset

    gs = report_training.read_golden_steps(str(reference))
    fig = report_training.loss_figure(load_dataset(str(reference)),
                                      report_training.read_steps(str(reference)), gs)
    dashed = [line for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert dashed and all(line.get_color() == "black" for line in dashed)
    assert all(line.get_label().startswith("golden") for line in dashed)
    none = gs[gs["trial_id"] == golden_trial_id("gpt", "none")].sort_values("step")
    assert any(list(line.get_ydata()) == list(none["loss"]) for line in dashed)
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Outcome classes" in html and "Clopper-Pearson" in html
    # the generic summary reports the validation loss, not the 0/1 outcome columns
    assert set(rep.summary["metric"]) == {"val_loss"}
