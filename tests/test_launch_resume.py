"""Resume after the driver is killed with SIGKILL mid-campaign: exactly the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from launch_fixtures import table, write_job

from pytei_ray.launch import run

ROOT = Path(__file__).resolve().parents[1]

N_TRIALS = 54


def _cmd(job, out):
    return [sys.executable, "-m", "pytei_ray.launch", str(job), "--out", str(out),
            "--executor", "local", "--no-progress", "--flush-every", "0", "--chunk-size", "2"]


def _parts(out: Path) -> list[str]:
    return [p for p in os.listdir(out) if p.startswith("part-")] if out.is_dir() else []


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    job = write_job(
        tmp_path / "job.py", name="kill", bers="[1e-3, 1e-2, 3e-2]", reps=3,
        mits='{"none": None, "sbp": SBP(), "clip": Clip()}', seed=9,
        sleep='float(os.environ.get("PYTEI_TEST_SLEEP", "0"))',  # slowed only in the killed run
    )
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
    final = table(out)
    assert final["trial_id"].is_unique and len(final) == N_TRIALS
    pd.testing.assert_frame_equal(final, table(ref))
    assert run(job, str(out), executor="local", progress=False, echo=lambda s: None).ran == 0
