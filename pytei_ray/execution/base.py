"""The :class:`Executor` interface: run chunks of trials somewhere, hand results to the driver.

The launcher owns everything else (expanding trials, skipping stored ones, writing parts,
progress), so an executor only decides *where* :class:`~pytei_ray.campaign.TrialWorker` runs:

* :class:`~pytei_ray.execution.local.LocalExecutor`: in this process (debuggable, used by tests).
* ``RayExecutor`` (``pytei_ray/execution/ray_executor.py``): one ``TrialWorker`` per Ray actor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pytei_ray.campaign.jobfile import JobRef
from pytei_ray.campaign.trials import Trial
from pytei_ray.execution.worker import ChunkResult, TrialWorker

from .ray_options import RunStats

__all__ = ["Executor", "ExecutorConfig", "ResultCallback"]

#: Called in the driver's thread with each finished chunk, in completion order.
ResultCallback = Callable[[ChunkResult], None]


@dataclass(frozen=True)
class ExecutorConfig:
    """Options the launcher passes to any executor (each uses the ones that apply to it).

    Attributes:
        device: device for model replicas (``"cpu"``, ``"cuda"``); None picks CUDA if present.
            Ray executors place work by the campaign's ``num_gpus_per_worker`` instead.
        address: Ray cluster address; None starts a local Ray (``--address``).
        num_workers: number of workers (Ray actors); None: as many as the resources allow.
        max_in_flight: chunks outstanding per worker (backpressure); None: executor default.
        options: executor-specific extras (``--executor-opt key=value``).
    """

    device: str | None = None
    address: str | None = None
    num_workers: int | None = None
    max_in_flight: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class Executor(ABC):
    """Runs chunks of trials and reports each chunk's :class:`ChunkResult` to the driver.

    Contract for implementations:

    * Build the campaign where the trials run, from ``job`` (``job.campaign()`` executes the job
      source in that process; never ship models or the campaign object itself).
    * Run each chunk with :meth:`TrialWorker.run_chunk` on a long-lived ``TrialWorker`` (one per
      worker process/actor), so replicas and golden runs are reused across chunks.
    * Call ``on_result`` once per chunk, from the thread that called :meth:`run`, as soon as the
      chunk is done (any order). Rows are written by the driver, which deduplicates nothing: a
      chunk must be reported at most once.
    * Let :class:`~pytei_ray.errors.TrialSetupError` (and any other worker-side exception that
      is not a trial's own failure) propagate out of :meth:`run`; results already reported stay.
    * On ``KeyboardInterrupt`` stop submitting, release resources and re-raise.
    * Consume ``chunks`` lazily (it may be a generator) and keep a bounded number in flight.
    * :meth:`prepare` is called once before :meth:`run` with the models that have trials to
      run. The default builds them in this process (so training and artifact caching happen
      once, before the campaign, and workers then load the cached artifacts); executors with
      remote workers should override it to build on those workers (see :meth:`prepare`).

    Use as a context manager: :meth:`close` releases workers (for Ray: actors, a local runtime).
    """

    #: name used by ``--executor``
    name: ClassVar[str] = "base"

    def __init__(self, config: ExecutorConfig | None = None) -> None:
        self.config = config or ExecutorConfig()
        #: worker failures, restarts and retries of the last run (zeros for in-process runs)
        self.stats = RunStats()
        #: (worker id, model -> pristine checksum) of each worker that built models in
        #: :meth:`prepare` (the driver compares them: see ``campaign.consistency``)
        self.prepared_checksums: list[tuple[str, dict[str, str]]] = []

    @abstractmethod
    def run(self, job: JobRef, chunks: Iterable[Sequence[Trial]],
            on_result: ResultCallback) -> None:
        """Run every chunk of ``chunks`` for the campaign of ``job``; see the class contract."""

    def prepare(self, job: JobRef, model_names: Sequence[str]) -> dict[str, float]:
        """Build every named model once, before any trial runs.

        Model factories may do expensive, cacheable work (train, then store a checkpoint with
        ``ctx.artifact``); doing it here means it happens once per model, and the workers
        that run trials later load the cached result. Contract for overrides:

        * build each name in ``model_names`` at least once where trials run, with
          :meth:`TrialWorker.prepare` on a worker made by :meth:`TrialWorker.for_job` (so
          hooks get ``job``'s :class:`~pytei_ray.execution.context.BuildContext`); different
          models may be built on different workers at the same time;
        * keep the built replicas on the workers that built them (they run trials next);
        * let :class:`~pytei_ray.errors.TrialSetupError` propagate; return model name ->
          seconds its build took (0.0 when it was already built);
        * append ``(worker id, TrialWorker.checksums())`` of every worker that built models
          to :attr:`prepared_checksums`.

        The default runs a temporary in-process :class:`TrialWorker` (CPU unless
        ``config.device`` says otherwise) and drops it afterwards; an executor that does not
        override this is still correct: its workers load what was cached here (or, without a
        shared results location, build the model again, deterministically).

        Args:
            job: the job (its ``results_uri`` locates the artifact cache).
            model_names: models with trials to run, in campaign order.

        Returns:
            model name -> seconds.
        """
        if not model_names:
            return {}
        worker = TrialWorker.for_job(job, device=self.config.device or "cpu")
        seconds = worker.prepare(list(model_names))
        self.prepared_checksums.append((worker.worker_id, worker.checksums()))
        return seconds

    def describe(self) -> str:
        """Short description for the launcher's messages (e.g. ``"local (cpu)"``)."""
        return self.name

    def close(self) -> None:
        """Release workers; idempotent (nothing to release by default)."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
