"""cluster.yaml: valid for the Ray cluster launcher (its schema, offline), as docs promise."""

from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_passes_ray_cluster_launcher_schema(config):
    util = pytest.importorskip("ray.autoscaler._private.util")
    util.validate_config(util.prepare_config(config))  # raises on an unknown or missing key


def test_cpu_head_and_autoscaling_gpu_workers(config):
    assert config["provider"]["type"] in ("aws", "gcp")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] > 0
    gpu = [t for name, t in types.items()
           if name != config["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert gpu and all(t["min_workers"] == 0 < t["max_workers"] for t in gpu)
    assert config["max_workers"] >= max(t["max_workers"] for t in gpu)


def test_project_installed_on_every_node(config):
    mounted = {Path(v).as_posix() for v in config["file_mounts"].values()}
    assert "." in mounted
    remote = next(k for k, v in config["file_mounts"].items() if v == ".")
    assert any(f"-e {remote}" in cmd for cmd in config["setup_commands"])
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    assert "--head" in head and "--autoscaling-config" in head
    assert "--dashboard-host=127.0.0.1" in head
    assert "$RAY_HEAD_IP" in worker
