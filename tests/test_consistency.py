"""One experiment per results directory: golden drift and non-deterministic factories refused
(exit 2, nothing stored), NaN golden metrics reported, setup failures and summaries that say
what happened."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
from launch_fixtures import JOB, write_job

from pytei_ray.launch import main
from pytei_ray.storage import GOLDEN_DIR, MANIFEST, ResultsStore


def launch(*args) -> int:
    return main([*map(str, args), "--executor", "local", "--no-progress"])


def parts(out: Path) -> dict[str, str]:
    """Every data file of the directory (result and golden parts) -> hash of its bytes."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.parquet"))}


def drop_some(out: Path, n: int = 3) -> list[str]:
    """Remove ``n`` stored rows (as a crash before their part was written would)."""
    store = ResultsStore(out)
    ids = sorted(pd.read_parquet(out)["trial_id"])[:n]
    assert store.drop_trials(ids) == n
    return ids


def edit_evaluate(job: str) -> None:
    text = Path(job).read_text()
    Path(job).write_text(text.replace('float(out.mean())', 'float(out.mean()) + 1.0'))


def test_golden_drift_on_resume_is_refused_and_nothing_is_stored(tmp_path, capsys):
    job = write_job(tmp_path / "job.py")
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 0
    drop_some(out)
    edit_evaluate(job)
    before = parts(out)
    capsys.readouterr()
    assert launch(job, "--out", out) == 2
    err = capsys.readouterr().err
    assert "golden (fault-free) metrics of model" in err and "metric 'mean'" in err
    assert "stored golden row" in err and "would mix two experiments" in err
    assert "new --out DIR" in err and "Restore the job" in err
    assert parts(out) == before  # nothing of it stored


def test_golden_drift_against_stored_rows_when_golden_parts_are_lost(tmp_path, capsys):
    # the golden rows are gone (torn and quarantined): the stored rows' golden_<m> columns
    # are the reference, for new trials and for the recomputed golden rows alike
    job = write_job(tmp_path / "job.py")
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 0
    shutil.rmtree(out / GOLDEN_DIR)
    edit_evaluate(job)
    before = parts(out)
    capsys.readouterr()
    assert launch(job, "--out", out) == 2  # every trial stored: the golden recompute is refused
    err = capsys.readouterr().err
    assert "stored result rows" in err and "metric 'mean'" in err
    assert parts(out) == before

    drop_some(out)
    before = parts(out)
    assert launch(job, "--out", out) == 2  # new trials of the same pairs are refused too
    assert parts(out) == before


def test_unchanged_resume_passes_the_checks(tmp_path, capsys):
    job = write_job(tmp_path / "job.py")
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert launch(job, "--out", ref) == 0
    assert launch(job, "--out", out) == 0
    drop_some(out)
    assert launch(job, "--out", out) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["model_checksums"]) == {"a", "b"}
    assert manifest["model_checksums"] == json.loads((ref / MANIFEST).read_text())[
        "model_checksums"]


UNSEEDED = JOB.replace("""def build():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))""", """def build():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))""")


def test_unseeded_factory_is_refused_on_resume(tmp_path, capsys):
    assert UNSEEDED != JOB
    job = write_job(tmp_path / "job.py", body=UNSEEDED.format(
        name="t", models='{"a": build}', bers="[1e-3]", reps=3, mits='{"none": None}', seed=3,
        sleep=0.0, fail_if="False", extra=""))
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 0
    recorded = json.loads((out / MANIFEST).read_text())["model_checksums"]["a"]
    drop_some(out, 1)
    before = parts(out)
    capsys.readouterr()
    assert launch(job, "--out", out) == 2
    err = capsys.readouterr().err
    assert "The factory of model 'a' builds different weights" in err
    assert recorded[:16] in err and "recorded in the manifest" in err
    assert "torch.manual_seed" in err
    assert parts(out) == before
    assert json.loads((out / MANIFEST).read_text())["model_checksums"]["a"] == recorded


def test_workers_with_different_replicas_are_refused(tmp_path, capsys, monkeypatch):
    # two workers in one run (the first builds in prepare, a second one runs the trials)
    from pytei_ray.execution.local import LocalExecutor

    job = write_job(tmp_path / "job.py", body=UNSEEDED.format(
        name="t", models='{"a": build}', bers="[1e-3]", reps=2, mits='{"none": None}', seed=3,
        sleep=0.0, fail_if="False", extra=""))
    out = tmp_path / "out"
    monkeypatch.setattr(LocalExecutor, "prepare", lambda self, job, names:
                        super(LocalExecutor, self).prepare(job, names))  # a temporary worker
    assert launch(job, "--out", out) == 2
    err = capsys.readouterr().err
    assert "builds different weights on different workers" in err
    assert parts(out) == {}


NAN_GOLDEN = '''
import torch
from torch import nn
from pytei_ray import Campaign

def build():
    torch.manual_seed(0)
    return nn.Linear(4, 1)

def evaluate(model, x):
    return {"auc": float("nan"), "mean": float(model(x).mean())}

campaign = Campaign(name="nan", models={"a": build}, data=lambda name: torch.ones(3, 4),
                    evaluate=evaluate, bers=[1e-3], repetitions=2)
'''


def test_nan_golden_metric_is_reported_and_recorded(tmp_path, capsys):
    job = tmp_path / "job.py"
    job.write_text(NAN_GOLDEN)
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "warning: the golden (fault-free) value of metric 'auc' of model 'a'" in text
    assert "meaningless" in text
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["nonfinite_golden"] == [{"model": "a", "mitigation": "none",
                                             "metric": "auc", "value": "nan"}]
    drop_some(out, 1)  # a resume recomputes the NaN golden: no drift (NaN equals NaN), no
    assert launch(job, "--out", out) == 0  # second warning
    captured = capsys.readouterr()
    assert "metric 'auc'" not in captured.out + captured.err
    assert len(json.loads((out / MANIFEST).read_text())["nonfinite_golden"]) == 1


def test_failed_prepare_skips_that_model_and_runs_the_others(tmp_path, capsys):
    # the failing model comes first: the others still run, the run ends with exit status 1
    job = write_job(tmp_path / "job.py", models='{"b": lambda: 1 / 0, "a": build}')
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 1
    captured = capsys.readouterr()
    assert "preparing model 'b' failed" in captured.out
    assert "its trials are skipped" in captured.out
    assert "The factory of model 'b' raised ZeroDivisionError" in captured.err
    df = pd.read_parquet(out)
    assert set(df["model"]) == {"a"} and len(df) == 8


def test_complete_rerun_mentions_failed_trials_and_retry(tmp_path, capsys):
    job = write_job(tmp_path / "job.py", fail_if="model[0].weight.abs().max() > 2")
    (tmp_path / "FAIL").write_text("")
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 0
    assert "--retry-failed" in capsys.readouterr().out
    n_failed = int((pd.read_parquet(out)["status"] == "failed").sum())
    assert n_failed > 0
    assert launch(job, "--out", out) == 0
    line = capsys.readouterr().out
    assert "complete, all 16 trials already stored" in line
    assert f"{n_failed} of them failed" in line and "--retry-failed" in line


def test_library_warnings_print_as_plain_lines(tmp_path, capsys):
    job = write_job(tmp_path / "job.py")
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 0
    Path(job).write_text(Path(job).read_text() + "\n# an edit that changes no factor\n")
    capsys.readouterr()
    assert launch(job, "--out", out) == 0
    err = capsys.readouterr().err
    assert "warning: The job file changed since results were first stored" in err
    assert "run_job.py" not in err and "UserWarning" not in err
