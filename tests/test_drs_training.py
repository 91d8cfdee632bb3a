"""The training variant of jobs/drs.py end to end (issue 17): the trained DRS models keep
training with a warm Adam, one exponent-MSB flip strikes at a step, outcome classes per trial.

A 2,000-row log (``--set rows=2000``), the small grid (FM and DLRM, 36 trials), in process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pytei_ray.columns import golden_trial_id
from pytei_ray.launch import main
from pytei_ray.studies.drs import DRSStudy
from pytei_ray.training import TrainingState, train_step

ROOT = Path(__file__).resolve().parents[1]
JOB = str(ROOT / "jobs" / "drs.py")
OUTCOMES = ["masked", "spike_and_recover", "silent_degradation", "divergence",
            "immediate_nonfinite"]
ARGS = ["--set", "training=1", "--set", "small=1", "--set", "rows=2000"]


def launch(*args) -> int:
    return main([JOB, *map(str, args), "--executor", "local", "--no-progress"])


def bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).view(np.int64)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("drs-train") / "out"
    assert launch(*ARGS, "--out", out) == 0
    return out


def test_rows_carry_outcome_classes_and_the_step_table(run: Path) -> None:
    rows = pd.read_parquet(run)
    assert len(rows) == 2 * 3 * 3 * 2 and (rows["status"] == "ok").all()
    assert set(rows["model"]) == {"fm", "dlrm"}
    assert set(rows["target"]) == {"weights-once", "optim-state-once", "weights-permanent"}
    assert set(rows["mitigation"]) == {"none", "rollback", "sbp"}
    assert (rows[OUTCOMES].sum(axis=1) == 1).all()     # one class per trial
    assert {"logloss", "auc", "golden_logloss", "skipped_steps"} <= set(rows.columns)
    steps = pd.read_parquet(run / "_steps")
    assert set(steps["trial_id"]) == set(rows["trial_id"])
    assert all(v == list(range(8)) for v in steps.groupby("trial_id")["step"].apply(sorted))
    golden = pd.read_parquet(run / "_golden")
    assert (golden["masked"] == 1).all() and len(golden) == 2 * 3


def test_golden_window_is_reproduced_by_a_fresh_trainer(run: Path) -> None:
    # the stored golden window of (fm, none), computed by the campaign's worker, equals a
    # window of a freshly built trainer (model trained again, Adam warmed again) bit for bit
    gs = pd.read_parquet(run / "_golden_steps").drop_duplicates(["trial_id", "step"])
    gs = gs[gs["trial_id"] == golden_trial_id("fm", "none")].sort_values("step")
    study = DRSStudy.preset("small", rows=2000)
    state = study.trainer("fm")()
    assert isinstance(state, TrainingState) and state.step > 0   # after the warm-up

    def window() -> list[float]:
        state.reset()
        with state.session():
            state.model.train()
            return [train_step(i, state.model, state.optimizer, state.closure(i)).loss
                    for i in range(8)]

    first = window()
    assert (bits(first) == bits(gs["loss"])).all()
    assert (bits(window()) == bits(first)).all()       # reset() restores Adam's moments too
    state.model.eval()
    data = study.eval_data("fm")
    metrics = study.evaluate_training(state.model, data)
    assert list(metrics) == ["logloss", "auc"]          # classified on the loss
    golden = pd.read_parquet(run / "_golden").set_index(["model", "mitigation"])
    assert metrics["logloss"] == golden.loc[("fm", "none"), "logloss"]  # after the window
    assert metrics["auc"] == study.evaluate(state.model, data)["auc"]


def test_weight_msb_flips_are_not_all_masked_and_sbp_masks_them(run: Path) -> None:
    rows = pd.read_parquet(run)
    weights = rows[rows["target"].str.startswith("weights")]
    none = weights[weights["mitigation"] == "none"]
    assert (none["n_faults"] >= 1).all()
    assert (none["masked"] == 0).any(), none[["model", "target", *OUTCOMES]]
    # SBP keeps the sign and exponent bits of the weights: every such fault filtered, the
    # window is golden's (same final loss, bit for bit), masked
    sbp = weights[weights["mitigation"] == "sbp"]
    assert (sbp["n_faults"] == 0).all() and (sbp["n_faults_sampled"] >= 1).all()
    assert (sbp["masked"] == 1).all()
    assert (bits(sbp["logloss"]) == bits(sbp["golden_logloss"])).all()
    # SBP protects weights only: an optimizer-state fault is the unmitigated trial's
    point = ["model", "target", "repetition"]
    opt = rows[rows["target"] == "optim-state-once"].set_index(point)
    a = opt[opt["mitigation"] == "none"].sort_index()
    b = opt[opt["mitigation"] == "sbp"].sort_index()
    assert (bits(a["logloss"]) == bits(b["logloss"])).all()
    assert (a[OUTCOMES].to_numpy() == b[OUTCOMES].to_numpy()).all()


def test_an_optimizer_state_adam_lacks_is_refused_before_anything(tmp_path, capsys) -> None:
    job = tmp_path / "job.py"
    job.write_text(
        "from pytei_ray.campaign import BitFlipIn, Campaign\n"
        "from pytei_ray.studies.drs import DRSStudy\n"
        "from pytei_ray.training import AtStep, OptimizerState, Training\n"
        "study = DRSStudy.preset('small', rows=2000)\n"
        "targets = {'m': Training(OptimizerState('momentum_buffer'), AtStep(1), steps=4)}\n"
        "study.check_targets(targets, ['fm'])\n"
        "campaign = Campaign(name='bad', models={'fm': study.trainer('fm')},\n"
        "                    data=study.eval_data, evaluate=study.evaluate_training,\n"
        "                    targets=targets, error_models={'e': BitFlipIn([30], n=1)},\n"
        "                    bers=[1e-6], repetitions=1)\n")
    out = tmp_path / "out"
    assert main([str(job), "--out", str(out), "--executor", "local", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "momentum_buffer" in err and "exp_avg" in err     # what is wrong, what exists
    assert not out.exists()


def test_training_and_activations_together_are_refused(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert launch(*ARGS, "--set", "activations=1", "--out", out) == 2
    assert "activations" in capsys.readouterr().err and not out.exists()
