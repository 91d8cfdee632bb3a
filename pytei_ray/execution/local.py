"""In-process executor: every trial runs in the launcher's own process, one chunk at a time.

Use it to debug a job with a plain debugger (breakpoints in the job file work) and in tests;
it runs exactly the code a Ray actor runs (:class:`~pytei_ray.campaign.TrialWorker`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pytei_ray.campaign.jobfile import JobRef
from pytei_ray.campaign.trials import Trial
from pytei_ray.execution.worker import TrialWorker

from .base import Executor, ResultCallback

__all__ = ["LocalExecutor"]


class LocalExecutor(Executor):
    """Runs chunks sequentially on one :class:`TrialWorker` in this process.

    Example:
        >>> from pytei_ray.execution import ExecutorConfig
        >>> LocalExecutor(ExecutorConfig(device="cpu")).describe()
        'local (cpu)'
    """

    name = "local"

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._worker: TrialWorker | None = None

    def _worker_for(self, job: JobRef) -> TrialWorker:
        if self._worker is None or self._worker.campaign is not job.campaign():
            self._worker = TrialWorker.for_job(job, device=self.config.device)
        return self._worker

    def prepare(self, job: JobRef, model_names: Sequence[str]) -> dict[str, float]:
        """Build the models on the worker that then runs the trials (replicas are kept)."""
        worker = self._worker_for(job)
        seconds = worker.prepare(list(model_names))
        self.prepared_checksums.append((worker.worker_id, worker.checksums()))
        return seconds

    def run(self, job: JobRef, chunks: Iterable[Sequence[Trial]],
            on_result: ResultCallback) -> None:
        worker = self._worker_for(job)
        for chunk in chunks:
            on_result(worker.run_chunk(chunk))

    def describe(self) -> str:
        device = self._worker.device if self._worker is not None else self.config.device
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return f"local ({device})"

    def close(self) -> None:
        self._worker = None
