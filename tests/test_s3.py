"""A campaign on a real S3 API (moto's server on 127.0.0.1): run, SIGKILL, resume, lease, report.

pyarrow reaches the server through the URI's options
(``s3://bucket/dir?endpoint_override=127.0.0.1:PORT&scheme=http``) and the AWS_* variables.
``allow_delayed_open=true`` makes pyarrow write small objects with one PutObject: moto's
CompleteMultipartUpload answer is rejected by pyarrow's multipart writer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
from launch_fixtures import VOLATILE, write_job

from pytei_ray.launch import main, run
from pytei_ray.report.__main__ import main as report_main

pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

ROOT = Path(__file__).resolve().parents[1]
AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

JOB = '''
import io, os, time, torch
from torch import nn
from pytei_ray import Campaign
from pytei_ray.mitigations import SBP

def net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

def build(ctx):
    def train():
        with open(os.path.join(os.path.dirname(__file__), "trained.log"), "a") as log:
            log.write("trained\\n")
        buf = io.BytesIO()
        torch.save(net().state_dict(), buf)
        return buf.getvalue()
    model = net()
    model.load_state_dict(torch.load(io.BytesIO(ctx.artifact("net-v1.pt", train))))
    return model

def data(name):
    return torch.randn(64, 8, generator=torch.Generator().manual_seed(0))

def evaluate(model, x):
    time.sleep(float(os.environ.get("PYTEI_TEST_SLEEP", "0")))
    return {"mean": float(model(x).mean())}

campaign = Campaign(name="s3", models={"a": build}, data=data, evaluate=evaluate,
                    bers=[1e-3, 1e-2, 3e-2], repetitions=4,
                    mitigations={"none": None, "sbp": SBP()}, seed=5)
'''
N_TRIALS = 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    """``(uri, filesystem, path)`` of an empty results location in a fresh moto bucket."""
    from moto.server import ThreadedMotoServer

    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="bucket")
        uri = (f"s3://bucket/campaign?endpoint_override=127.0.0.1:{port}&scheme=http"
               "&region=us-east-1&allow_delayed_open=true")
        fs, path = pafs.FileSystem.from_uri(uri)
        yield uri, fs, path
    finally:
        server.stop()


def _names(fs, path) -> list[str]:
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path)))


def _table(source, fs=None) -> pd.DataFrame:
    df = pd.read_parquet(source, filesystem=fs).drop(columns=VOLATILE)
    return df.sort_values("trial_id").reset_index(drop=True)


def test_s3_campaign_killed_resumed_locked_and_reported(tmp_path, s3, capsys, monkeypatch):
    uri, fs, path = s3
    monkeypatch.setenv("PYTEI_RAY_LEASE_SECONDS", "2")
    job = write_job(tmp_path / "job.py", body=JOB)
    ref = tmp_path / "ref"
    run(job, str(ref), executor="local", progress=False, echo=lambda s: None)  # uninterrupted
    (tmp_path / "trained.log").unlink()

    cmd = [sys.executable, "-m", "pytei_ray.launch", job, "--out", uri, "--executor", "local",
           "--no-progress", "--flush-every", "0", "--chunk-size", "2"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTEI_TEST_SLEEP="0.15")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 40
        while (sum(n.startswith("part-") for n in _names(fs, path)) < 2
               and proc.poll() is None and time.monotonic() < deadline):
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()
        # a second launcher while the first holds the lease: refused, nothing run
        assert main([job, "--out", uri, "--executor", "local", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "Another launcher is writing to s3://bucket/campaign (host" in err
        assert f"pid {proc.pid}" in err and "Wait for it to finish" in err
        assert "endpoint_override" not in err
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "_lock" in _names(fs, path)  # the killed launcher could not release its lease

    stored = _table(f"{path}", fs)  # what the kill left is one readable table
    assert 0 < len(stored) < N_TRIALS and stored["trial_id"].is_unique
    assert main([job, "--out", uri, "--executor", "local", "--no-progress"]) == 2
    assert "abandoned 2 s after its last heartbeat" in capsys.readouterr().err  # still fresh
    time.sleep(2.1)  # the lease of the dead launcher goes stale (PYTEI_RAY_LEASE_SECONDS=2)
    summary = run(job, uri, executor="local", progress=False, echo=lambda s: None)
    assert summary.complete and (summary.ran, summary.skipped) == (N_TRIALS - len(stored),
                                                                   len(stored))
    assert "_lock" not in _names(fs, path)  # released on exit
    final = _table(path, fs)
    pd.testing.assert_frame_equal(final, _table(ref))  # row for row: trial ids and metrics
    assert "net-v1.pt" in _names(fs, f"{path}/_artifacts")
    assert (tmp_path / "trained.log").read_text() == "trained\n"  # the resume loaded it

    to = tmp_path / "report"
    assert report_main([uri, "--to", str(to), "--no-plots", "-q"]) == 0
    assert (to / "index.html").is_file()


def test_a_missing_bucket_is_refused_by_the_dry_run_as_by_the_run(tmp_path, s3, capsys):
    uri, fs, _ = s3
    job = write_job(tmp_path / "job.py", body=JOB)
    missing = uri.replace("s3://bucket/", "s3://no-such-bucket/")
    for extra in (["--dry-run"], []):
        assert main([job, "--out", missing, "--executor", "local", "--no-progress", *extra]) == 2
        err = capsys.readouterr().err
        assert "its bucket 'no-such-bucket' does not exist" in err, err
        assert "allow_bucket_creation=true" in err and "endpoint_override" not in err
    assert fs.get_file_info("no-such-bucket").type == pafs.FileType.NotFound  # nothing made
    # the option the message names: the dry run reports a new location, the run creates it
    creating = missing + "&allow_bucket_creation=true"
    assert main([job, "--out", creating, "--executor", "local", "--no-progress",
                 "--dry-run"]) == 0
    assert "Output: s3://no-such-bucket/campaign (new)" in capsys.readouterr().out
    assert fs.get_file_info("no-such-bucket").type == pafs.FileType.NotFound
