"""RayExecutor on a two-node cluster simulated with ``ray.cluster_utils.Cluster`` (logical GPUs)."""

from __future__ import annotations

import logging
import shutil
import tempfile

import pytest

ray = pytest.importorskip("ray")

from ray_fixtures import chunks_of, job_ref, stable_rows  # noqa: E402

from pytei_ray.execution import ExecutorConfig  # noqa: E402
from pytei_ray.execution.local import LocalExecutor  # noqa: E402
from pytei_ray.execution.ray_executor import RayExecutor  # noqa: E402
from pytei_ray.execution.ray_runtime import quiet_env  # noqa: E402

pytestmark = pytest.mark.timeout(240)

_NODE = dict(num_cpus=2, num_gpus=2, object_store_memory=100 * 2**20)


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node, 2 CPUs and 2 logical GPUs each; torn down after the module."""
    from ray.cluster_utils import Cluster

    quiet_env()
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths have a limit
    c = Cluster(initialize_head=True,
                head_node_args=dict(**_NODE, include_dashboard=False, temp_dir=temp))
    node = c.add_node(**_NODE)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield c, node
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    job = job_ref(tmp_path_factory.mktemp("clusterjob"))
    rows: list = []
    LocalExecutor(ExecutorConfig(device="cpu")).run(job, chunks_of(job),
                                                    lambda r: rows.extend(r.rows))
    return rows


def test_trials_spread_over_nodes_each_worker_on_its_gpu(cluster, tmp_path, reference):
    job = job_ref(tmp_path, sleep_ms=80, num_gpus=1)
    rows: list = []
    with RayExecutor(ExecutorConfig(max_in_flight=1)) as ex:  # default: one worker per GPU
        ex.run(job, chunks_of(job, 2), lambda r: rows.extend(r.rows))
        infos = ex.worker_info()
    assert len(infos) == 4
    by_node: dict[str, list[str]] = {}
    for info in infos:
        by_node.setdefault(info["node_id"], []).append(info["cuda_visible_devices"])
    assert sorted(map(sorted, by_node.values())) == [["0", "1"], ["0", "1"]]
    node_of = {i["worker"]: i["node_id"] for i in infos}
    assert len({node_of[r["worker"]] for r in rows}) == 2  # both nodes ran trials
    assert stable_rows(rows) == stable_rows(reference)


def test_lost_node_trials_rerun_on_the_rest(cluster, tmp_path, reference):
    c, node = cluster
    job = job_ref(tmp_path, sleep_ms=60, num_gpus=1)
    rows: list = []
    removed: list[str] = []
    ex = RayExecutor(ExecutorConfig(max_in_flight=2))

    def on_result(result):
        rows.extend(result.rows)
        if not removed and len(rows) >= 8:
            infos = ex.worker_info()
            if len({i["node_id"] for i in infos}) == 2:
                c.remove_node(node)  # the node dies with its workers mid-chunk
                removed.append(node.node_id)

    with ex:
        ex.run(job, chunks_of(job, 2), on_result)
        assert ex.stats.worker_failures >= 1
    assert removed
    assert len(rows) == 48 and len({r["trial_id"] for r in rows}) == 48
    assert stable_rows(rows) == stable_rows(reference)
