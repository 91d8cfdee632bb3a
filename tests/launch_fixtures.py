"""Helpers for the launcher tests: a small parameterised job file and stored-row comparison."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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
