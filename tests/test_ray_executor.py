"""RayExecutor on one local Ray (2 CPUs, 2 logical GPUs) shared by the tests of this module."""

from __future__ import annotations

import logging
import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from ray_fixtures import chunks_of, job_ref, stable_rows  # noqa: E402

from pytei_ray.campaign import make_chunks  # noqa: E402
from pytei_ray.errors import TrialSetupError  # noqa: E402
from pytei_ray.execution import ExecutorConfig, get_executor  # noqa: E402
from pytei_ray.execution.local import LocalExecutor  # noqa: E402
from pytei_ray.execution.ray_executor import RayExecutor, TrialsLostError  # noqa: E402
from pytei_ray.execution.ray_runtime import (  # noqa: E402
    ResourcesUnavailableError,
    check_feasible,
    quiet_env,
    worker_capacity,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray for the module: 2 CPUs, 2 logical GPUs, quiet, no dashboard."""
    quiet_env()
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING,
             object_store_memory=100 * 2**20)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rayjob")


@pytest.fixture(scope="module")
def local_rows(job_dir):
    """Rows of the test job run by the in-process executor (the reference)."""
    job = job_ref(job_dir)
    rows: list = []
    LocalExecutor(ExecutorConfig(device="cpu")).run(job, chunks_of(job), lambda r:
                                                    rows.extend(r.rows))
    return rows


def _run_ray(job, chunks, **config):
    rows, golden = [], []

    def on_result(result):
        rows.extend(result.rows)
        golden.extend(result.golden)

    with RayExecutor(ExecutorConfig(**config)) as ex:
        ex.run(job, chunks, on_result)
        return rows, golden, ex, ex.worker_info()


@pytest.mark.parametrize("workers,chunk_size,in_flight", [(1, 48, 1), (2, 3, 2)])
def test_same_rows_as_local_executor(local_ray, job_dir, local_rows, workers, chunk_size,
                                     in_flight):
    job = job_ref(job_dir)
    chunks = make_chunks((t for c in chunks_of(job) for t in c), chunk_size)
    rows, golden, ex, infos = _run_ray(job, iter(chunks), num_workers=workers,
                                       max_in_flight=in_flight)
    assert stable_rows(rows) == stable_rows(local_rows)
    assert len({r["trial_id"] for r in rows}) == len(rows) == 48
    assert {(g["model"], g["mitigation"]) for g in golden} >= {("a", "none"), ("b", "sbp")}
    assert 1 <= len({r["worker"] for r in rows}) <= workers  # a slow starter may get none
    assert ex.stats.worker_failures == 0 and ex.stats.workers == workers
    assert [i["gpu_ids"] for i in infos] == [[]] * workers  # num_gpus=0: CPU workers
    assert all(i["device"] == "cpu" and not i["cuda_visible_devices"] for i in infos)


def test_default_is_one_worker_per_gpu(local_ray, job_dir):
    # num_gpus_per_worker=None (the Campaign default): the local Ray has 2 (logical) GPUs
    job = job_ref(job_dir, num_gpus=None)
    rows, _, _, infos = _run_ray(job, chunks_of(job)[:2])
    assert len(rows) == 8
    assert sorted(i["cuda_visible_devices"] for i in infos) == ["0", "1"]


def test_workers_pinned_to_logical_gpus(local_ray, job_dir):
    job = job_ref(job_dir, num_gpus=0.5)
    rows, _, _, infos = _run_ray(job, chunks_of(job)[:4], num_workers=4,
                                 options={"num_cpus": 0.5})
    assert len(rows) == 16
    visible = sorted(i["cuda_visible_devices"] for i in infos)
    assert visible == ["0", "0", "1", "1"]  # 0.5 GPU each: two replicas share each GPU
    # A logical GPU id with no real device behind it leaves torch without CUDA: the replica
    # stays on the CPU. On a real GPU machine the ids that exist put it on CUDA (seen on an H100).
    n_real = torch.cuda.device_count()
    for i in infos:
        expected = "cuda" if int(i["cuda_visible_devices"]) < n_real else "cpu"
        assert i["device"].split(":")[0] == expected, i
    assert all(i["threads"] == 1 for i in infos)


def test_killed_worker_mid_chunk_reruns_its_trials_once(local_ray, job_dir, local_rows):
    job = job_ref(job_dir, sleep_ms=60)
    rows: list = []
    killed: list[tuple[int, datetime]] = []

    def on_result(result):
        rows.extend(result.rows)
        if not killed:  # this worker has its next chunk in flight: kill it inside a chunk
            pid = int(result.worker.rsplit(":", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, datetime.now(timezone.utc)))  # after the kill: nothing ran on
            # the killed worker after this moment

    with RayExecutor(ExecutorConfig(num_workers=2, max_in_flight=2)) as ex:
        ex.run(job, chunks_of(job, 4), on_result)
        assert ex.stats.worker_failures >= 1
        assert ex.stats.chunks_retried >= 1
        assert ex.stats.trials_lost == 0
    # every trial once, each row identical to the in-process run
    assert len(rows) == 48 and len({r["trial_id"] for r in rows}) == 48
    assert stable_rows(rows) == stable_rows(local_rows)
    # A chunk the killed worker finished before it died may arrive after the kill (that is not
    # a rerun); what ran after the kill, the retried chunk included, ran on live workers.
    pid, at = killed[0]

    def pid_of(row):
        return int(row["worker"].rsplit(":", 1)[1])

    def end_of(row):
        return row["started_at"] + timedelta(seconds=row["duration_s"])

    assert all(end_of(r) <= at for r in rows if pid_of(r) == pid)
    after = [r for r in rows if r["started_at"] > at]
    assert after and pid not in {pid_of(r) for r in after}


def test_trial_that_always_kills_its_worker_is_given_up(local_ray, job_dir, local_rows):
    target = next(r for r in local_rows if r["ber"] == 1e-2 and r["mitigation"] == "none")
    assert sum(r["mean"] == target["mean"] for r in local_rows) == 1
    job = job_ref(job_dir, poison=target["mean"])
    rows: list = []
    ex = RayExecutor(ExecutorConfig(num_workers=2, options={"max_attempts": 2}))
    with pytest.raises(TrialsLostError, match="1 trial.*could not be completed") as info:
        with ex:
            ex.run(job, chunks_of(job, 4), lambda r: rows.extend(r.rows))
    assert info.value.trial_ids == [target["trial_id"]]
    assert len(rows) == 47 and target["trial_id"] not in {r["trial_id"] for r in rows}
    assert ex.stats.trials_lost == 1


def test_chunks_in_flight_on_a_worker_dead_for_good_are_queued_again(local_ray):
    # The worker's death can be seen first through its info() ping (restarts used up) while
    # chunks are still in flight on it: those chunks must come back to be run elsewhere.
    from pytei_ray.execution.ray_executor import _Chunk, _Slot

    @ray.remote(num_cpus=0)
    class Dead:
        def info(self):
            return {}

    handle = Dead.remote()
    ray.get(handle.info.remote())
    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + 60
    while True:  # ray.kill is asynchronous: wait until a call fails for good
        try:
            ray.get(handle.info.remote(), timeout=10)
        except ray.exceptions.ActorUnavailableError:
            pass
        except ray.exceptions.RayActorError:
            break
        assert time.monotonic() < deadline, "the killed actor still answers"
    chunks = [_Chunk(["t1"]), _Chunk(["t2", "t3"])]
    slot = _Slot(handle, inflight={"ref1": chunks[0], "ref2": chunks[1]},
                 ping=handle.info.remote())
    ex = RayExecutor(ExecutorConfig())
    ex._slots = [slot]
    ex.stats.replaced = 100  # no replacement actor for this test
    orphans = ex._on_ping(slot, slot.ping)
    assert [c for c, _ in orphans] == chunks and not slot.inflight and ex._slots == []
    assert all(isinstance(exc, ray.exceptions.RayActorError) for _, exc in orphans)


def test_setup_error_in_a_worker_propagates(local_ray, job_dir):
    job = job_ref(job_dir, broken=True)
    with pytest.raises(TrialSetupError, match="factory of model 'a'"):
        with RayExecutor(ExecutorConfig(num_workers=1)) as ex:
            ex.run(job, chunks_of(job), lambda r: None)


def test_unplaceable_workers_fail_with_a_clear_message(local_ray, job_dir):
    job = job_ref(job_dir, num_gpus=4)  # no node has 4 GPUs
    ex = RayExecutor(ExecutorConfig(options={"resource_timeout": 1}))
    with pytest.raises(ResourcesUnavailableError, match="No worker became ready for 1 s"):
        with ex:
            ex.run(job, chunks_of(job), lambda r: None)
    with pytest.raises(ResourcesUnavailableError, match="each needs 1 CPU and 4 GPU"):
        check_feasible(1, 4, None, autoscaling=False)
    assert check_feasible(1, 0.5, None, autoscaling=False) == 2  # 2 CPUs limit it
    assert check_feasible(0.5, 0.5, 8, autoscaling=False) == 4


def test_worker_capacity_counts_whole_workers_per_node():
    nodes = [{"CPU": 4, "GPU": 2}, {"CPU": 8}]
    assert worker_capacity(1, 0.5, nodes) == 4
    assert worker_capacity(1, 0, nodes) == 12
    assert worker_capacity(3, 0, nodes) == 3
    assert worker_capacity(1, 1 / 3, [{"CPU": 8, "GPU": 1}]) == 3


def test_bad_executor_options_are_rejected():
    with pytest.raises(ValueError, match="keys for the ray executor"):
        RayExecutor(ExecutorConfig(options={"gpus": 1}))
    with pytest.raises(ValueError, match="num_gpus to be a float, but got 'x'"):
        RayExecutor(ExecutorConfig(options={"num_gpus": "x"}))
    assert get_executor("ray").describe(connect=False) == "ray"


def test_errors_and_stats_keep_their_old_import_locations():
    from pytei_ray import errors
    from pytei_ray.execution import ray_executor, ray_options, ray_runtime

    assert ray_executor.TrialsLostError is errors.TrialsLostError
    assert ray_runtime.ResourcesUnavailableError is errors.ResourcesUnavailableError
    assert ray_executor.RunStats is ray_options.RunStats
    assert issubclass(errors.ExecutorOptionError, ValueError)


def test_describe_then_run_starts_ray_once(monkeypatch):
    """``launch`` names the cluster before ``prepare``/``run``: they must reuse that runtime."""
    from pytei_ray.execution import ray_executor

    made: list = []

    class FakeRuntime:
        def __init__(self, address, **kwargs):
            self.starts = self.closes = 0
            made.append(self)

        def start(self):
            self.starts += 1

        def describe(self):
            return "fake Ray"

        def close(self):
            self.closes += 1

    monkeypatch.setattr(ray_executor, "RayRuntime", FakeRuntime)
    ex = RayExecutor(ExecutorConfig(num_workers=2))
    ex.describe()
    ex.describe()
    assert ex._connect() is made[0]  # what prepare() and run() call before starting workers
    ex.close()
    assert len(made) == 1 and made[0].starts == 1 and made[0].closes == 1


def test_prepare_reports_each_workers_checksums(local_ray, job_dir):
    job = job_ref(job_dir)
    names = list(job.campaign().models)
    with RayExecutor(ExecutorConfig(num_workers=2)) as ex:
        seconds = ex.prepare(job, names)
        assert set(seconds) == set(names)
        reported = ex.prepared_checksums
        assert reported and all(isinstance(w, str) and w for w, _ in reported)
        built = {m: c for _, checksums in reported for m, c in checksums.items()}
        assert set(built) == set(names)
        results = []
        ex.run(job, chunks_of(job), results.append)
    for r in results:  # chunk results carry the same checksums (a seeded factory)
        assert all(built[m] == c for m, c in r.checksums.items())


def test_rays_own_lines_go_to_the_log_that_the_note_names(tmp_path, capsys):
    """What Ray's driver prints by itself ((raylet) lines: a worker died, a retry) stays out of
    the run's output while the runtime is connected; the closing note names the file."""
    from ray._private.worker import print_to_stdstream  # how Ray prints them

    from pytei_ray.execution.ray_runtime import RayMessages

    log = tmp_path / "ray.log"
    messages = RayMessages(str(log)).start()
    try:
        print("the run's line")
        print_to_stdstream({"lines": ["A worker died or was killed while executing a task."],
                            "pid": "raylet", "is_err": False}, ignore_prefix=False)
        print("the summary")
    finally:
        messages.stop()
    out = capsys.readouterr().out
    assert out == "the run's line\nthe summary\n"
    # A real (raylet) line of an earlier test's killed actor may arrive meanwhile (this module's
    # Ray is shared): it is diverted too, so the log holds ours among raylet lines only.
    lines = log.read_text().splitlines()
    assert "(raylet) A worker died or was killed while executing a task." in lines
    assert all("(raylet)" in line for line in lines)
    assert 1 <= messages.lines <= len(lines) and str(log) in messages.note()
    print("(raylet) after stop")  # stopped: nothing is diverted any more
    assert capsys.readouterr().out == "(raylet) after stop\n"
