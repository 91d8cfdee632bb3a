"""The launcher: runs, reruns, dry runs, refusals, extensions, bad input, failures, repair."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from launch_fixtures import table, write_job

from pytei_ray.errors import TrialsLostError
from pytei_ray.execution.local import LocalExecutor
from pytei_ray.execution.ray_options import RunStats
from pytei_ray.launch import main, run

ROOT = Path(__file__).resolve().parents[1]


def launch(*args) -> int:
    return main([*map(str, args), "--executor", "local", "--no-progress"])


def test_run_then_rerun_is_complete(tmp_path, capsys):
    job = write_job(tmp_path / "job.py")
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 0
    df = pd.read_parquet(out)
    assert len(df) == 16 and df["trial_id"].is_unique and (df["status"] == "ok").all()
    for col in ["campaign", "trial_id", "model", "ber", "repetition", "mitigation",
                "error_model", "target", "seed", "n_faults", "n_words", "n_nonfinite", "mean",
                "finite", "golden_mean", "golden_finite", "status", "error", "worker",
                "device", "started_at", "duration_s", "version"]:
        assert col in df.columns, col
    assert "16 trials run (0 failed), 0 skipped" in capsys.readouterr().out
    parts = sorted(os.listdir(out))
    assert launch(job, "--out", out) == 0
    assert "complete, all 16 trials already stored" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == parts
    assert len(pd.read_parquet(out / "_golden")) == 4  # (2 models) x (2 mitigations)


def test_dry_run_runs_nothing(tmp_path, capsys):
    job = write_job(tmp_path / "job.py", extra=', error_models={"flip": BitFlip, '
                    '"stuck": lambda ber: StuckAt(ber, value=1)}')
    assert launch(job, "--out", tmp_path / "out", "--dry-run") == 0
    text = capsys.readouterr().out
    assert "32 trials = 2 model x 1 target x 2 error_model x 2 ber x 2 repetition" in text
    assert "model:       a=16  b=16" in text and "error_model: flip=16  stuck=16" in text
    assert f"Output: {tmp_path / 'out'} (new)" in text
    assert not (tmp_path / "out").exists()


def test_default_out_is_named_after_the_campaign(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    job = write_job(tmp_path / "job.py", name="my-study", reps=1, models='{"a": build}')
    assert launch(job) == 0
    assert len(pd.read_parquet(tmp_path / "results" / "my-study")) == 4


def test_params_via_make_campaign(tmp_path, capsys):
    assert launch(ROOT / "jobs" / "tiny.py", "--set", "small=1", "--out", tmp_path / "o") == 0
    df = pd.read_parquet(tmp_path / "o")
    assert len(df) == 12 and set(df["campaign"]) == {"tiny-small"}
    assert (df["golden_accuracy"] == 1.0).all()
    capsys.readouterr()
    # the params are part of the spec: the full campaign is refused in that directory
    assert launch(ROOT / "jobs" / "tiny.py", "--out", tmp_path / "o") == 2
    assert "params: {'small': 1} -> {}" in capsys.readouterr().err


@pytest.mark.parametrize("change, expected", [
    (dict(seed=4), "seed: 3 -> 4"),
    (dict(mits='{"none": None}'), "mitigations: 'sbp' removed (was SBP(bits=('sign', "),
    (dict(mits='{"none": None, "sbp": SBP(bits=["exponent"])}'),
     "mitigations['sbp']: SBP(bits=('sign', 'exponent')) -> SBP(bits=('exponent',))"),
    (dict(bers="[1e-3]"), "bers: [0.001, 0.01] -> [0.001] (removed [0.01])"),
    (dict(name="other"), "name: 't' -> 'other'"),
])
def test_changed_campaign_is_refused(tmp_path, capsys, change, expected):
    job = tmp_path / "job.py"
    out = tmp_path / "out"
    assert launch(write_job(job), "--out", out) == 0
    before = table(out)
    capsys.readouterr()
    for flags in ([], ["--extend"]):
        assert launch(write_job(job, **change), "--out", out, *flags) == 2
        err = capsys.readouterr().err
        assert expected in err and "--out NEW_DIR" in err and "_job.py" in err
    pd.testing.assert_frame_equal(table(out), before)


def test_extend_grid_runs_only_new_trials(tmp_path, capsys):
    job = tmp_path / "job.py"
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert launch(write_job(job), "--out", out) == 0
    first = table(out)
    capsys.readouterr()
    bigger = dict(bers="[1e-3, 1e-2, 3e-2]", reps=3, mits='{"none": None, "sbp": SBP(), '
                  '"clip": Clip()}')
    write_job(job, **bigger)
    assert launch(job, "--out", out) == 2
    err = capsys.readouterr().err
    assert "bers: [0.001, 0.01] -> [0.001, 0.01, 0.03] (added [0.03])" in err
    assert "repetitions: 2 -> 3" in err and "--extend" in err
    assert launch(job, "--out", out, "--extend") == 0
    assert "38 trials run (0 failed), 16 skipped" in capsys.readouterr().out
    extended = table(out)
    old = extended[extended["trial_id"].isin(first["trial_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, first)
    assert launch(job, "--out", ref) == 0  # the same grid, run from scratch
    pd.testing.assert_frame_equal(extended, table(ref))
    assert launch(job, "--out", out) == 0  # the extended spec is now the stored one
    assert "complete, all 54 trials" in capsys.readouterr().out


NO_CAMPAIGN = "x = 1\n"


@pytest.mark.parametrize("kind, expected", [
    ("no_campaign", "to define `campaign = Campaign(...)`"),
    ("not_callable", "Expected argument `models['a']` to be callable, but got 3"),
    ("ber_range", "Expected every value of argument `bers` to be a float in [0, 1], but got 2.0"),
    ("empty_grid", "Expected argument `bers` to be a non-empty list"),
    ("duplicates", "distinct values, but 0.001 appears twice"),
    ("out_is_file", "is a file"),
    ("missing_job", "does not exist"),
    ("params_unsupported", "takes no parameters (--set small)"),
    ("syntax", "SyntaxError"),
    ("wrong_type", "to be a pytei_ray.Campaign, but got dict"),
])
def test_bad_input_fails_before_any_trial(tmp_path, capsys, kind, expected):
    job = tmp_path / "job.py"
    out = tmp_path / "out"
    args = ["--out", out]
    if kind == "no_campaign":
        write_job(job, body=NO_CAMPAIGN)
    elif kind == "not_callable":
        write_job(job, models='{"a": 3}')
    elif kind == "ber_range":
        write_job(job, bers="[1e-3, 2.0]")
    elif kind == "empty_grid":
        write_job(job, bers="[]")
    elif kind == "duplicates":
        write_job(job, bers="[1e-3, 0.001]")
    elif kind == "out_is_file":
        write_job(job)
        out.write_text("not a dir")
        args = ["--out", out]
    elif kind == "missing_job":
        job = tmp_path / "nope.py"
    elif kind == "params_unsupported":
        write_job(job)
        args += ["--set", "small=1"]
    elif kind == "syntax":
        write_job(job, body="campaign = (\n")
    elif kind == "wrong_type":
        write_job(job, body="campaign = {}\n")
    assert launch(job, *args) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    if kind in ("not_callable", "ber_range"):
        assert f"{job}:" in err  # points at the line of the job file
    assert not out.is_dir()


def test_failed_trials_recorded_then_retried(tmp_path, capsys):
    job = write_job(tmp_path / "job.py", fail_if="model[0].weight.abs().max() > 2")
    (tmp_path / "FAIL").write_text("")
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 0
    df = pd.read_parquet(out)
    failed = df[df["status"] == "failed"]
    assert 0 < len(failed) < len(df) == 16
    assert failed["error"].str.contains("injected evaluation failure").all()
    assert failed["mean"].isna().all() and failed["golden_mean"].notna().all()
    capsys.readouterr()
    (tmp_path / "FAIL").unlink()
    assert launch(job, "--out", out) == 0
    assert "complete" in capsys.readouterr().out  # failures are results: not rerun by default
    assert launch(job, "--out", out, "--retry-failed") == 0
    assert f"{len(failed)} trials run (0 failed)" in capsys.readouterr().out
    assert (pd.read_parquet(out)["status"] == "ok").all()
    assert pd.read_parquet(out)["trial_id"].is_unique


def test_torn_part_is_repaired_on_rerun(tmp_path):
    job = write_job(tmp_path / "job.py")
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert launch(job, "--out", ref) == 0
    assert launch(job, "--out", out, "--flush-every", "0", "--chunk-size", "3") == 0
    parts = sorted(p for p in os.listdir(out) if p.startswith("part-"))
    assert len(parts) >= 5
    victim = out / parts[2]
    lost = pq.read_metadata(victim).num_rows
    victim.write_bytes(victim.read_bytes()[:100])  # a torn write from a dying filesystem
    with pytest.warns(UserWarning, match="Moved torn part"):
        summary = run(job, str(out), executor="local", progress=False, echo=lambda s: None)
    assert summary.ran == lost and summary.complete
    pd.testing.assert_frame_equal(table(out), table(ref))


def test_setup_error_exits_1_and_keeps_rows(tmp_path, capsys):
    job = write_job(tmp_path / "job.py", models='{"a": build, "b": lambda: 1 / 0}')
    out = tmp_path / "out"
    assert launch(job, "--out", out, "--flush-every", "0") == 1
    err = capsys.readouterr().err
    assert "The factory of model 'b' raised ZeroDivisionError" in err
    assert len(pd.read_parquet(out)) == 8  # model a's trials are kept


class _LosingExecutor(LocalExecutor):
    """Runs every trial but the first chunk's first, then gives it up as the Ray executor would."""

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.stats = RunStats(workers=2, worker_failures=2, restarts=1, chunks_retried=2,
                              trials_lost=1)
        self.calls: list[str] = []

    def describe(self) -> str:
        self.calls.append("describe")
        return "fake"

    def __enter__(self):
        self.calls.append("enter")
        return self

    def close(self) -> None:
        self.calls.append("close")

    def run(self, job, chunks, on_result) -> None:
        chunks = [list(c) for c in chunks]
        lost = chunks[0].pop(0)
        super().run(job, chunks, on_result)
        raise TrialsLostError(f"1 trial(s) could not be completed: {lost.trial_id}",
                              [lost.trial_id])


def test_lost_trials_exit_3_keep_the_rest_and_rerun_only_them(tmp_path, capsys, monkeypatch):
    job = write_job(tmp_path / "job.py")
    out = tmp_path / "out"
    fake = _LosingExecutor()
    monkeypatch.setattr("pytei_ray.driver.run_job.get_executor", lambda name, config: fake)
    assert main([job, "--out", str(out), "--executor", "local"]) == 3  # progress bar on
    captured = capsys.readouterr()
    assert "could not be completed" in captured.err
    assert "failed=" not in captured.err and "workers_lost=2" in captured.err  # the bar
    assert ("15 trials run (0 failed), 0 skipped (already stored); 2 worker failures (1 "
            "restarted, 2 chunks retried, 1 trials lost); INCOMPLETE") in captured.out
    assert fake.calls == ["enter", "describe", "close"]  # Ray is named once it is up
    assert len(pd.read_parquet(out)) == 15
    monkeypatch.undo()
    assert launch(job, "--out", out) == 0
    assert "1 trials run (0 failed), 15 skipped (already stored); complete" in (
        capsys.readouterr().out)


class _DroppingExecutor(LocalExecutor):
    """Silently skips the last chunk and returns normally: a buggy executor."""

    def run(self, job, chunks, on_result) -> None:
        super().run(job, [list(c) for c in chunks][:-1], on_result)


def test_trials_an_executor_drops_quietly_exit_3_and_are_rerun(tmp_path, capsys, monkeypatch):
    job = write_job(tmp_path / "job.py")
    out = tmp_path / "out"
    monkeypatch.setattr("pytei_ray.driver.run_job.get_executor",
                        lambda name, config: _DroppingExecutor(config))
    assert launch(job, "--out", out, "--chunk-size", "4") == 3
    assert "finished without a row for 4 trial(s)" in capsys.readouterr().err
    assert len(pd.read_parquet(out)) == 12  # every reported row is stored
    monkeypatch.undo()
    assert launch(job, "--out", out) == 0
    assert "4 trials run (0 failed), 12 skipped" in capsys.readouterr().out


def test_executor_is_closed_when_describe_fails(tmp_path, monkeypatch):
    fake = _LosingExecutor()

    def describe():
        raise RuntimeError("cannot reach the cluster")

    fake.describe = describe
    monkeypatch.setattr("pytei_ray.driver.run_job.get_executor", lambda name, config: fake)
    with pytest.raises(RuntimeError, match="cannot reach"):
        launch(write_job(tmp_path / "job.py"), "--out", tmp_path / "out")
    assert fake.calls == ["enter", "close"]


@pytest.mark.parametrize("flags, expected", [
    (["--num-gpus", "-1"], "Expected --num-gpus to be a number >= 0 (per worker; fractions "
                           "allowed), but got -1."),
    (["--num-cpus", "nan"], "Expected --num-cpus to be a number >= 0"),
    (["--num-gpus", "1.5"], "num_gpus per worker to be a fraction <= 1 or a whole number, but "
                            "got 1.5"),
    (["--num-gpus", "1", "--executor-opt", "num_gpus=0.5"],
     "Expected num_gpus once, but got both --num-gpus 1 and --executor-opt num_gpus=0.5."),
    (["--executor-opt", "gpus=1"], "Expected --executor-opt keys for the ray executor"),
])
def test_bad_ray_resources_fail_before_any_work(tmp_path, capsys, monkeypatch, flags, expected):
    monkeypatch.setattr("pytei_ray.driver.run_job.get_executor", pytest.fail)  # no executor is made
    out = tmp_path / "out"
    args = [write_job(tmp_path / "job.py"), "--out", str(out), "--no-progress"]
    assert main([*args, "--executor", "ray", *flags]) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_num_gpus_and_num_cpus_become_ray_executor_options(tmp_path, capsys, monkeypatch):
    seen = []

    def fake(name, config):
        seen.append((name, config))
        return LocalExecutor(config)

    monkeypatch.setattr("pytei_ray.driver.run_job.get_executor", fake)
    args = [write_job(tmp_path / "job.py", reps=1, models='{"a": build}'), "--out",
            str(tmp_path / "out"), "--no-progress", "--executor", "ray"]
    assert main([*args, "--num-gpus", "0.5", "--num-cpus", "2",
                 "--executor-opt", "max_attempts=5"]) == 0
    name, config = seen[0]
    assert name == "ray"
    assert dict(config.options) == {"num_gpus": 0.5, "num_cpus": 2.0, "max_attempts": 5}


def test_help_documents_the_exit_statuses(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "exit status:" in text and "3    trials lost" in text and "130  interrupted" in text
    assert "local and ray executors" in text and "--num-gpus N" in text
