"""The Ray actor that runs trials: one :class:`~pytei_ray.execution.worker.TrialWorker` per actor.

The actor sets torch's threads from the CPUs Ray assigned it, picks ``cuda`` when Ray gave it a
GPU (else the CPU), rebuilds the campaign from the job's source on first use and keeps one
replica per model for every chunk it runs (:mod:`~pytei_ray.execution.ray_executor` sends them).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

import ray

from pytei_ray.campaign.jobfile import JobRef
from pytei_ray.campaign.trials import Trial

from .worker import ChunkResult, TrialWorker

__all__ = ["RayTrialActor"]


@ray.remote
class RayTrialActor:
    """A Ray actor holding one :class:`TrialWorker` (and so one replica per model).

    Args:
        job: the job by value; the campaign is rebuilt here from its source on first use.
        device: force a device; None: ``cuda`` if Ray assigned this actor a GPU, else ``cpu``.
    """

    def __init__(self, job: JobRef, device: str | None = None) -> None:
        import torch

        ctx = ray.get_runtime_context()
        cpus = ctx.get_assigned_resources().get("CPU", 1.0)
        torch.set_num_threads(max(1, int(cpus)))
        self._gpu_ids = [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]
        if device is None:
            device = "cuda" if self._gpu_ids and torch.cuda.is_available() else "cpu"
        self._device = device
        self._job = job
        self._worker: TrialWorker | None = None

    def info(self) -> dict[str, Any]:
        """Where this actor runs: pid, host, node, assigned GPUs, device, threads."""
        import torch

        ctx = ray.get_runtime_context()
        return {
            "pid": os.getpid(), "host": socket.gethostname(), "node_id": ctx.get_node_id(),
            "worker": f"{socket.gethostname()}:{os.getpid()}", "gpu_ids": self._gpu_ids,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": self._device, "threads": torch.get_num_threads(),
            "restarted": ctx.was_current_actor_reconstructed,
        }

    def run_chunk(self, trials: Sequence[Trial]) -> ChunkResult:
        """Run one chunk on this actor's replicas (built on first use)."""
        return self._trial_worker().run_chunk(trials)

    def prepare(self, model_names: Sequence[str]
                ) -> tuple[dict[str, float], str, dict[str, str]]:
        """Build the named models (and load their data) now; see ``TrialWorker.prepare``.

        Returns:
            (seconds per model, this worker's id, its pristine checksums per model).
        """
        worker = self._trial_worker()
        seconds = worker.prepare(list(model_names))
        return seconds, worker.worker_id, worker.checksums()

    def _trial_worker(self) -> TrialWorker:
        if self._worker is None:
            self._worker = TrialWorker.for_job(self._job, device=self._device)
        return self._worker
