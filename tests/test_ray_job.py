"""End to end: the launcher starting its own local Ray, and ``ray job submit`` to a head on
127.0.0.1, both give the rows of an in-process run. Every Ray process started here is ended
(process group of ``ray start --head --block``; the launcher shuts down its own Ray).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ray_fixtures import kill_group, stable_rows  # noqa: E402

from pytei_ray.execution.ray_runtime import QUIET_ENV  # noqa: E402
from pytei_ray.launch import run  # noqa: E402
from pytei_ray.storage import ResultsStore  # noqa: E402

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]
RAY_CLI = str(Path(sys.executable).with_name("ray"))
if not os.path.exists(RAY_CLI):
    RAY_CLI = shutil.which("ray") or "ray"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(QUIET_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _rows(out: Path) -> list[dict]:
    return ResultsStore(str(out)).read_table().to_pylist()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = run(str(REPO / "jobs" / "tiny.py"), str(out), params={"small": 1},
                  executor="local", progress=False, echo=lambda s: None)
    assert summary.complete
    return _rows(out)


@pytest.fixture(scope="module")
def head():
    """``ray start --head --block`` on 127.0.0.1 with its own ports and temp dir."""
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    gcs, dash, client, agent, grpc, metrics, rt_env = _free_ports(7)
    cmd = [RAY_CLI, "start", "--head", "--block", "--port", str(gcs), "--num-cpus", "2",
           "--num-gpus", "0", "--temp-dir", temp, "--include-dashboard", "true",
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
           "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
           "--dashboard-agent-grpc-port", str(grpc), "--metrics-export-port", str(metrics),
           "--runtime-env-agent-port", str(rt_env), "--disable-usage-stats"]
    log = open(Path(temp) / "head.log", "w")
    proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("ray head did not start:\n"
                                       + (Path(temp) / "head.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield url
    finally:
        kill_group(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_gives_the_rows_of_a_local_run(head, tmp_path, reference):
    out = tmp_path / "out"
    cmd = [RAY_CLI, "job", "submit", "--address", head, "--working-dir", str(REPO), "--",
           "python", "-m", "pytei_ray.launch", "jobs/tiny.py", "--set", "small=1",
           "--out", str(out), "--no-progress", "--workers", "2", "--chunk-size", "3"]
    # The head answers /api/version before its job agent has registered; until then a submit
    # fails with "No available agent" and no job is created, so retrying it is safe.
    deadline = time.monotonic() + 60
    while True:
        proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True,
                              timeout=180)
        if "No available agent" not in proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "complete" in proc.stdout
    assert "Ray cluster" in proc.stdout  # joined the head, did not start its own Ray
    rows = _rows(out)
    assert stable_rows(rows) == stable_rows(reference)


def test_launch_without_address_starts_and_stops_a_local_ray(tmp_path, reference):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pytei_ray.launch", "jobs/tiny.py", "--set", "small=1",
           "--out", str(out), "--no-progress", "--executor", "ray", "--workers", "2",
           "--executor-opt", "local_num_cpus=2"]
    proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "local Ray" in stdout and "complete" in stdout
    assert stable_rows(_rows(out)) == stable_rows(reference)
    # run again: everything is stored, nothing runs, no Ray is needed
    again = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "nothing to run" in again.stdout
