"""Resume after the driver is killed with SIGKILL mid-campaign: exactly the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from pytei_ray.launch import run

ROOT = Path(__file__).resolve().parents[1]

JOB = '''
import os, time, torch
from torch import nn
from pytei_ray import Campaign
from pytei_ray.mitigations import SBP, Clip

def build():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))

def data(name):
    return torch.randn(64, 8, generator=torch.Generator().manual_seed(0))

def evaluate(model, x):
    time.sleep(float(os.environ.get("PYTEI_TEST_SLEEP", "0")))
    out = model(x)
    return {"mean": float(out.mean()), "finite": float(torch.isfinite(out).float().mean())}

campaign = Campaign(name="kill", models={"a": build, "b": build}, data=data, evaluate=evaluate,
                    bers=[1e-3, 1e-2, 3e-2], repetitions=3,
                    mitigations={"none": None, "sbp": SBP(), "clip": Clip()}, seed=9)
'''
N_TRIALS = 54


def _cmd(job, out):
    return [sys.executable, "-m", "pytei_ray.launch", str(job), "--out", str(out),
            "--executor", "local", "--no-progress", "--flush-every", "0", "--chunk-size", "2"]


def _table(out):
    df = pd.read_parquet(out).drop(columns=["worker", "started_at", "duration_s"])
    return df.sort_values("trial_id").reset_index(drop=True)


def _parts(out: Path) -> list[str]:
    return [p for p in os.listdir(out) if p.startswith("part-")] if out.is_dir() else []


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    job = tmp_path / "job.py"
    job.write_text(JOB)
    ref, out = tmp_path / "ref", tmp_path / "out"
    run(job, str(ref), executor="local", progress=False, echo=lambda s: None)

    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTEI_TEST_SLEEP="0.03")
    proc = subprocess.Popen(_cmd(job, out), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(_parts(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()

    stored = pd.read_parquet(out)  # whatever was on disk at the kill is a readable table
    assert 0 < len(stored) < N_TRIALS and stored["trial_id"].is_unique

    summary = run(job, str(out), executor="local", progress=False, echo=lambda s: None)
    assert summary.complete and summary.failed == 0
    assert (summary.ran, summary.skipped) == (N_TRIALS - len(stored), len(stored))
    final = _table(out)
    assert final["trial_id"].is_unique and len(final) == N_TRIALS
    pd.testing.assert_frame_equal(final, _table(ref))
    assert run(job, str(out), executor="local", progress=False, echo=lambda s: None).ran == 0
