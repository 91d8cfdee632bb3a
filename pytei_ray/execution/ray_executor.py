"""Ray executor: a TrialWorker per Ray actor, chunks of trials sent with backpressure.

Each actor reserves ``num_cpus`` / ``num_gpus`` (fractions allowed, so several replicas can share
a GPU); Ray pins it to its GPU (``CUDA_VISIBLE_DEVICES``) and the actor puts its replicas on
``cuda`` when it has one, else on the CPU: a CPU-only cluster runs the same code. The actor
rebuilds the campaign from the job's source, builds each model and its data once, and runs many
chunks on the replica (``TrialWorker`` checks it against the pristine checksum before each chunk).

The driver keeps at most ``max_in_flight`` chunks per ready worker (``ray.wait``), hands every
finished chunk to ``on_result`` as soon as it arrives, and survives workers that die:

* an actor whose process dies (killed, out of memory, CUDA error, node lost) is restarted by Ray
  (``max_restarts``) or replaced; its unfinished chunks go back to the queue and run elsewhere;
* a chunk that kills its worker ``max_attempts`` times is split into single trials, and a trial
  that still kills its worker is given up: :class:`~pytei_ray.errors.TrialsLostError` is raised
  after every other chunk is done (rows already reported are kept; the next run retries the lost
  trials);
* rows are reported once per trial id, whatever happens to the futures.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import exceptions as rex

from pytei_ray.campaign.jobfile import JobRef
from pytei_ray.campaign.trials import Trial
from pytei_ray.errors import ResourcesUnavailableError, TrialsLostError
from pytei_ray.execution.worker import ChunkResult

from .base import Executor, ExecutorConfig, ResultCallback
from .ray_actor import RayTrialActor
from .ray_options import RunStats, parse_options
from .ray_runtime import RayRuntime, check_feasible

# RunStats and TrialsLostError are re-exported: they lived here before ray_options / errors
__all__ = ["RayExecutor", "RayTrialActor", "RunStats", "TrialsLostError"]

log = logging.getLogger("pytei_ray")

#: exceptions meaning "the worker process is gone", not "the job's code raised"
_WORKER_LOST = (rex.RayActorError, rex.WorkerCrashedError, rex.OutOfMemoryError,
                rex.ObjectLostError, rex.NodeDiedError)

@dataclass
class _Chunk:
    trials: list[Trial]
    attempts: int = 0  # runs, alone on a worker, that ended with the worker dead
    suspect: bool = False  # was in flight when a worker died: now runs alone on a worker


@dataclass
class _Slot:
    handle: Any  # the actor handle
    inflight: dict[Any, _Chunk] = field(default_factory=dict)  # chunk future -> chunk
    ping: Any = None  # pending info() future: the worker is not ready until it returns
    ready: bool = False  # info() returned since the last failure: may receive chunks
    pid: int | None = None  # process id last reported by info()


class RayExecutor(Executor):
    """Runs chunks on Ray actors (local Ray started for the run, or an existing cluster).

    Config used: ``address`` (None: ``RAY_ADDRESS`` or a private local Ray), ``num_workers``
    (None: as many as fit), ``max_in_flight`` (chunks per worker, default 2), ``device``
    (force one; default: ``cuda`` when the actor has a GPU) and ``options``: ``num_cpus`` /
    ``num_gpus`` per worker (default: the campaign's ``num_*_per_worker``), ``max_restarts``
    (3), ``max_attempts`` per chunk (3), ``resource_timeout`` seconds to wait with no worker
    ready (60 locally, 900 on a joined cluster, which may be adding nodes), ``spread`` workers
    over nodes (True), ``local_num_cpus`` / ``local_num_gpus`` for a local Ray started here.

    Example:
        >>> RayExecutor(ExecutorConfig(num_workers=2)).describe(connect=False)
        'ray (2 workers)'
    """

    name = "ray"

    def __init__(self, config: ExecutorConfig | None = None) -> None:
        super().__init__(config)
        self.options = parse_options(self.config.options)
        self.runtime: RayRuntime | None = None
        self._slots: list[_Slot] = []  # one per live worker
        self._actor_opts: dict[str, Any] = {}
        self._job: JobRef | None = None  # the job the live actors were built for

    # ---- setup -----------------------------------------------------------------------------
    def _connect(self) -> RayRuntime:
        if self.runtime is None:
            self.runtime = RayRuntime(self.config.address,
                                      num_cpus=self.options.get("local_num_cpus"),
                                      num_gpus=self.options.get("local_num_gpus"))
            self.runtime.start()
        return self.runtime

    def _start_workers(self, job: JobRef) -> None:
        if self._slots and job == self._job:
            return
        self._kill_workers()
        runtime = self._connect()
        campaign = job.campaign()
        num_cpus = float(self.options.get("num_cpus", campaign.num_cpus_per_worker))
        num_gpus = self.options.get("num_gpus", campaign.num_gpus_per_worker)
        if num_gpus is None:  # default: one worker per GPU where there are GPUs, else CPU workers
            num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        num_gpus = float(num_gpus)
        n = check_feasible(num_cpus, num_gpus, self.config.num_workers,
                           autoscaling=not runtime.started)
        self._actor_opts = dict(num_cpus=num_cpus, num_gpus=num_gpus, max_task_retries=0,
                                max_restarts=int(self.options.get("max_restarts", 3)))
        if self.options.get("spread", True):
            self._actor_opts["scheduling_strategy"] = "SPREAD"
        self._job = job  # by value: a restarted actor must not depend on an object ref
        self._slots = [self._new_slot() for _ in range(n)]
        log.info("Ray executor: %d workers (%g CPU, %g GPU each) on %s", n, num_cpus, num_gpus,
                 runtime.describe())

    def _new_slot(self) -> _Slot:
        handle = RayTrialActor.options(**self._actor_opts).remote(self._job, self.config.device)
        self.stats.workers += 1
        return _Slot(handle, ping=handle.info.remote())

    # ---- the run loop ----------------------------------------------------------------------
    def run(self, job: JobRef, chunks: Iterable[Sequence[Trial]],
            on_result: ResultCallback) -> None:
        """Run every chunk on the actors; see :class:`~pytei_ray.execution.base.Executor`.

        Raises:
            TrialSetupError: a job hook failed on a worker (rows reported so far are kept).
            TrialsLostError: trials that killed their worker every time were given up.
            ResourcesUnavailableError: no worker could be placed for ``resource_timeout`` s.
        """
        try:
            self._start_workers(job)
            self._run(iter(chunks), on_result)
        except BaseException:
            self._kill_workers()  # stop submitting and release the actors (KeyboardInterrupt too)
            raise

    def _run(self, source: Iterator[Sequence[Trial]], on_result: ResultCallback) -> None:
        per_worker = max(1, int(self.config.max_in_flight or 2))
        timeout = self._resource_timeout()
        max_attempts = max(1, int(self.options.get("max_attempts", 3)))
        retry: deque[_Chunk] = deque()  # chunks whose worker died, run before new ones
        reported: set[str] = set()  # trial ids already handed to on_result in this run
        lost: list[Trial] = []  # trials given up
        exhausted = False
        last_progress = time.monotonic()

        def worker_died(chunk: _Chunk, exc: BaseException) -> None:
            """Queue a chunk whose worker died under it again; split or give up when it kept
            killing workers while running alone."""
            if chunk.suspect:  # it ran alone: the death is its own
                chunk.attempts += 1
            chunk.suspect = True  # from now on it runs alone
            self.stats.chunks_retried += 1
            if chunk.attempts < max_attempts:
                retry.appendleft(chunk)
            elif len(chunk.trials) > 1:  # find the trial that kills workers: run them alone
                retry.extendleft(_Chunk([t], max_attempts - 1, True) for t in chunk.trials)
            else:
                lost.extend(chunk.trials)
                self.stats.trials_lost += 1
                log.error("Giving up trial %s: its worker died %d times running it (%s).",
                          chunk.trials[0].trial_id, chunk.attempts, _short(exc))

        def next_chunk() -> _Chunk | None:
            nonlocal exhausted
            if retry:
                return retry.popleft()
            while not exhausted:
                trials = next(source, None)
                if trials is None:
                    exhausted = True
                elif len(trials):
                    return _Chunk(list(trials))
            return None

        while True:
            # fill: the least busy ready worker first, until every one has per_worker chunks
            # A suspect (in flight when a worker died) runs alone on an idle worker, so a death
            # while it runs is unambiguously its own; no other chunk joins that worker meanwhile.
            while True:
                chunk = next_chunk()
                if chunk is None:
                    break
                if chunk.suspect:
                    ready = [s for s in self._slots if s.ready and not s.inflight]
                else:
                    ready = [s for s in self._slots if s.ready and len(s.inflight) < per_worker
                             and not any(c.suspect for c in s.inflight.values())]
                if not ready:
                    retry.appendleft(chunk)  # first in line once a worker is free
                    break
                slot = min(ready, key=lambda s: len(s.inflight))
                slot.inflight[slot.handle.run_chunk.remote(chunk.trials)] = chunk
            busy = [ref for s in self._slots for ref in s.inflight]
            pings = [s.ping for s in self._slots if s.ping is not None]
            if not busy and not retry and exhausted:
                break
            if not self._slots:
                raise ResourcesUnavailableError(
                    "Every worker died and none could be replaced; see the (raylet) messages "
                    "above. Rows written so far are kept: run the same command again to resume.")
            done, _ = ray.wait(busy + pings, num_returns=1, timeout=5.0)
            if not done:
                if not busy and time.monotonic() - last_progress > timeout:
                    raise ResourcesUnavailableError(
                        f"No worker became ready for {timeout:g} s (each needs "
                        f"{self._actor_opts['num_cpus']:g} CPU, {self._actor_opts['num_gpus']:g} "
                        f"GPU; cluster has {ray.cluster_resources()}). Add nodes or lower the "
                        "request; --executor-opt resource_timeout=SECONDS waits longer.")
                continue
            last_progress = time.monotonic()
            ref = done[0]
            slot = next(s for s in self._slots if s.ping == ref or ref in s.inflight)
            if slot.ping == ref:
                for orphan, exc in self._on_ping(slot, ref):  # a worker dead for good
                    worker_died(orphan, exc)
                continue
            chunk = slot.inflight.pop(ref)
            try:
                result: ChunkResult = ray.get(ref)
            except _WORKER_LOST as exc:
                self._on_worker_lost(slot, exc)
                worker_died(chunk, exc)
                continue
            except rex.RayTaskError as exc:  # the job's code raised outside a trial
                raise _task_error_cause(exc) from None
            rows = [r for r in result.rows if r["trial_id"] not in reported]
            self.stats.duplicates_dropped += len(result.rows) - len(rows)
            reported.update(r["trial_id"] for r in rows)
            if rows or result.golden:
                on_result(ChunkResult(rows, result.golden, result.worker, result.rebuilt,
                                      result.nondeterministic, result.checksums))
        if lost:
            ids = [t.trial_id for t in lost]
            raise TrialsLostError(
                f"{len(lost)} trial(s) could not be completed: their worker process died each "
                f"time they ran (out of memory? a crash in native code?). Trial ids: "
                f"{', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}\nEvery other trial is "
                "stored; run the same command again to retry only these.", ids)

    def prepare(self, job: JobRef, model_names: Sequence[str]) -> dict[str, float]:
        """Build each model once on the workers, different models on different workers.

        Waits for the first worker to be ready; models go round-robin to the ready workers,
        which keep the replicas for the trials that follow.
        """
        if not model_names:
            return {}
        try:
            self._start_workers(job)
            timeout = self._resource_timeout()
            deadline = time.monotonic() + timeout
            while not any(s.ready for s in self._slots):
                pings = [s.ping for s in self._slots if s.ping is not None]
                if not pings or time.monotonic() > deadline:
                    raise ResourcesUnavailableError(
                        f"No worker became ready for {timeout:g} s to build the models; "
                        f"cluster has {ray.cluster_resources()}.")
                done, _ = ray.wait(pings, num_returns=1, timeout=5.0)
                for ref in done:
                    self._on_ping(next(s for s in self._slots if s.ping == ref), ref)
            ready = [s for s in self._slots if s.ready]
            refs = {ready[i % len(ready)].handle.prepare.remote([name]): name
                    for i, name in enumerate(model_names)}
            seconds: dict[str, float] = {}
            for ref in refs:
                try:
                    took, worker, checksums = ray.get(ref)
                    seconds.update(took)
                    self.prepared_checksums.append((worker, checksums))
                except rex.RayTaskError as exc:
                    raise _task_error_cause(exc) from None
                except _WORKER_LOST:  # built again by the first chunk of that model
                    seconds[refs[ref]] = 0.0
            return seconds
        except BaseException:
            self._kill_workers()
            raise

    def _resource_timeout(self) -> float:
        """Seconds to wait with no worker ready: 60 on a local Ray started here, 900 on a
        joined cluster (which may be adding nodes), or the ``resource_timeout`` option."""
        started = self.runtime is not None and self.runtime.started
        return float(self.options.get("resource_timeout", 60.0 if started else 900.0))

    def _on_ping(self, slot: _Slot, ref: Any) -> list[tuple[_Chunk, BaseException]]:
        """Handle a worker's ``info()`` reply. A worker dead for good is replaced; the chunks
        still in flight on it are returned (with the error) to be queued again."""
        slot.ping = None
        try:
            info = ray.get(ref)
        except rex.ActorUnavailableError:  # transient (e.g. restarting): ask again
            slot.ping = slot.handle.info.remote()
            return []
        except _WORKER_LOST as exc:  # dead for good (restarts used up): replace it
            self._slots.remove(slot)
            if self.stats.replaced < 2 * max(1, len(self._slots) + 1):
                log.warning("Worker %s is dead (%s); starting a replacement.", slot.pid,
                            _short(exc))
                self.stats.replaced += 1
                self._slots.append(self._new_slot())
            orphans = [(chunk, exc) for chunk in slot.inflight.values()]
            slot.inflight.clear()
            return orphans
        if slot.pid is not None and info["pid"] != slot.pid:
            self.stats.restarts += 1
        slot.pid = info["pid"]
        slot.ready = True
        return []

    def _on_worker_lost(self, slot: _Slot, exc: BaseException) -> None:
        if slot.ready:  # first failure seen for this process: count it, probe the actor
            self.stats.worker_failures += 1
            log.warning("Worker pid %s died (%s); re-running its unfinished chunks.", slot.pid,
                        _short(exc))
        slot.ready = False
        if slot.ping is None:
            slot.ping = slot.handle.info.remote()

    # ---- info and cleanup ------------------------------------------------------------------
    def worker_info(self) -> list[dict[str, Any]]:
        """``info()`` of every live worker (pid, node, GPUs, device, threads)."""
        return ray.get([s.handle.info.remote() for s in self._slots])

    def describe(self, connect: bool = True) -> str:
        """``"ray (N workers) on local Ray (1 node, 2 CPU, 0 GPU)"``.

        Args:
            connect: join or start Ray first (as :meth:`run` would), so the text names it.
        """
        if connect:
            self._connect()
        n = len(self._slots) or self.config.num_workers
        text = f"ray ({n} workers)" if n else "ray"
        if self.runtime is not None and ray.is_initialized():
            text += f" on {self.runtime.describe()}"
        return text

    def _kill_workers(self) -> None:
        for slot in self._slots:
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead or Ray gone: nothing to release
                pass
        self._slots = []
        self._job = None

    def close(self) -> None:
        """Kill the actors and shut down a local Ray started for the run; idempotent."""
        if ray.is_initialized():
            self._kill_workers()
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None


def _task_error_cause(exc: rex.RayTaskError) -> BaseException:
    """The job's own exception inside a Ray task error (the task error itself if none)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"

