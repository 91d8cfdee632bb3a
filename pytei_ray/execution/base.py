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
from pytei_ray.campaign.worker import ChunkResult

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

    Use as a context manager: :meth:`close` releases workers (for Ray: actors, a local runtime).
    """

    #: name used by ``--executor``
    name: ClassVar[str] = "base"

    def __init__(self, config: ExecutorConfig | None = None) -> None:
        self.config = config or ExecutorConfig()

    @abstractmethod
    def run(self, job: JobRef, chunks: Iterable[Sequence[Trial]],
            on_result: ResultCallback) -> None:
        """Run every chunk of ``chunks`` for the campaign of ``job``; see the class contract."""

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
