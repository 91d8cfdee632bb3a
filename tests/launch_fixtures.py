"""Helpers for the launcher tests: a small parameterised job file, stored-row comparison, and
a launcher run killed with SIGKILL midway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

VOLATILE = ["worker", "started_at", "duration_s"]

JOB = '''
import os, time, torch
from torch import nn
from pytei_ray import Campaign, BitFlip, StuckAt
from pytei_ray.mitigations import SBP, Clip

def build():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

def data(name):
    return torch.randn(64, 8, generator=torch.Generator().manual_seed(0))

def evaluate(model, x):
    time.sleep({sleep})
    if os.path.exists(os.path.join(os.path.dirname(__file__), "FAIL")) and {fail_if}:
        raise RuntimeError("injected evaluation failure")
    out = model(x)
    return {{"mean": float(out.mean()), "finite": float(torch.isfinite(out).float().mean())}}

campaign = Campaign(name="{name}", models={models}, data=data, evaluate=evaluate,
                    bers={bers}, repetitions={reps}, mitigations={mits}, seed={seed}{extra})
'''


def write_job(path: Path, *, name="t", models='{"a": build, "b": build}', bers="[1e-3, 1e-2]",
              reps=2, mits='{"none": None, "sbp": SBP()}', seed=3, sleep=0.0,
              fail_if="False", extra="", body=None) -> str:
    path.write_text(body if body is not None else JOB.format(
        name=name, models=models, bers=bers, reps=reps, mits=mits, seed=seed, sleep=sleep,
        fail_if=fail_if, extra=extra))
    return str(path)


def table(out) -> pd.DataFrame:
    df = pd.read_parquet(out).drop(columns=VOLATILE)
    return df.sort_values("trial_id").reset_index(drop=True)


def stored_rows(out: Path) -> int:
    """Rows stored in results directory ``out`` so far (0 before the first part)."""
    if not out.is_dir() or not any(p.startswith("part-") for p in os.listdir(out)):
        return 0
    return len(pd.read_parquet(out))


def sigkill_launch_midway(job: str, out: Path, rows: float) -> None:
    """Run the launcher on ``job`` into ``out`` in a subprocess (local executor, chunks of 3,
    every chunk flushed, evaluations slowed by ``PYTEI_TEST_SLEEP=0.01``) and SIGKILL it once
    ``out`` holds at least ``rows`` rows; fails if it finished before that."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTEI_TEST_SLEEP="0.01")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytei_ray.launch", job, "--out", str(out), "--executor",
         "local", "--no-progress", "--flush-every", "0", "--chunk-size", "3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if stored_rows(out) >= rows:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stdout.read().decode()  # killed mid-run, not after
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
