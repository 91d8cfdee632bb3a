"""Helpers for the Ray tests: a small job file, row comparison, process-group cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from pytei_ray.campaign import JobRef, expand, make_chunks

#: A job file: two tiny MLPs, deterministic data, and an evaluate that can sleep per trial
#: (``--set sleep_ms=...``) so a test can kill a worker while it is inside a chunk.
JOB_SOURCE = '''
import os
import time

import torch

from pytei_ray.campaign import Campaign
from pytei_ray.mitigations import SBP


def mlp(seed):
    def build():
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                   torch.nn.Linear(32, 1))
    return build


def data(name):
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 16, generator=g)


def broken_factory():
    raise RuntimeError("no such checkpoint")


def make_campaign(sleep_ms=0, reps=4, num_gpus=0.0, chunk_size=4, poison=None, broken=False):
    def evaluate(model, x):
        if sleep_ms:
            time.sleep(sleep_ms / 1000)
        y = model(x)
        mean = float(torch.nan_to_num(y, 0.0, 0.0, 0.0).mean())
        if poison is not None and mean == poison:  # this one trial kills its process
            os._exit(3)
        return {"mean": mean, "finite": float(torch.isfinite(y).float().mean())}

    models = {"a": broken_factory if broken else mlp(0), "b": mlp(1)}
    return Campaign(name="raytest", models=models, data=data,
                    evaluate=evaluate, bers=[0.0, 1e-3, 1e-2], repetitions=reps,
                    mitigations={"none": None, "sbp": SBP()}, seed=3, chunk_size=chunk_size,
                    num_gpus_per_worker=num_gpus)
'''

#: columns that legitimately differ between runs (who ran it, when, how long)
VOLATILE = ("worker", "device", "started_at", "duration_s")


def write_job(directory: Path, name: str = "raytest_job.py") -> Path:
    """Write :data:`JOB_SOURCE` into ``directory`` and return its path."""
    path = Path(directory) / name
    path.write_text(JOB_SOURCE)
    return path


def job_ref(directory: Path, **params: Any) -> JobRef:
    """A :class:`JobRef` for the test job with ``make_campaign`` params."""
    path = write_job(directory)
    return JobRef(str(path), path.read_text(), params)


def chunks_of(job: JobRef, chunk_size: int | None = None) -> list:
    """Every trial of the job's campaign, in chunks grouped by model."""
    campaign = job.campaign()
    return make_chunks(expand(campaign), chunk_size or campaign.chunk_size)


def stable_rows(rows: list[dict[str, Any]]) -> list[tuple]:
    """Rows without volatile columns, as sorted tuples (for exact comparison)."""
    out = []
    for r in rows:
        out.append(tuple(sorted((k, repr(v)) for k, v in r.items() if k not in VOLATILE)))
    return sorted(out)


def kill_group(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """End a subprocess started with ``start_new_session=True`` and everything it started."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        if proc.poll() is not None:
            return
