"""The driver's engine: run the pending trials of each round on one executor and store them.

:class:`RoundRunner` starts the executor at the first round that has trials to run (so a
complete campaign starts nothing), prepares each model once, keeps one progress bar whose total
grows per round, checks every returned chunk (golden drift, model checksums, the precision
target's metric) before its rows are stored, and flushes the writer after each round and before
the executor goes away. :func:`pytei_ray.driver.run` decides what each round runs.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pytei_ray.campaign.jobfile import JobRef
from pytei_ray.campaign.rounds import DecisionRows, Round
from pytei_ray.campaign.trials import Trial, make_chunks
from pytei_ray.columns import golden_metrics
from pytei_ray.errors import CampaignSpecError, TrialSetupError, TrialsLostError
from pytei_ray.execution.base import Executor
from pytei_ray.storage import ResultsWriter

from .ledger import RunLedger
from .summary import RunSummary

__all__ = ["RoundRunner", "check_target_metric", "golden_to_recompute"]


class RoundRunner:
    """Runs the pending trials of each round on one executor, started at the first round
    that has any, and writes their rows; one progress bar whose total grows per round."""

    def __init__(self, job: JobRef, make_executor: Callable[[], Executor],
                 writer: ResultsWriter, decide: DecisionRows, summary: RunSummary,
                 ledger: RunLedger, *, chunk_size: int, progress: bool,
                 echo: Callable[[str], None], location: str) -> None:
        self.job, self.writer, self.decide, self.summary = job, writer, decide, summary
        self.chunk_size, self.progress, self.echo, self.location = (chunk_size, progress, echo,
                                                                    location)
        self._make_executor = make_executor  # called once, at the first round with work
        self.ledger = ledger  # checks each chunk before it is stored; writes the manifest
        #: the setup failure of a model found by prepare: its trials are skipped, the others
        #: run, and the run ends with this error (exit status 1)
        self.setup_failed: TrialSetupError | None = None
        self.ex: Executor | None = None
        self._stack = contextlib.ExitStack()
        self._prepared: set[str] = set()
        self.bar: Any = None

    def _start(self, n_pending: int) -> Executor:
        if self.ex is None:
            ex = self._make_executor()
            self._stack.enter_context(ex)
            self.ex = ex
            campaign = self.job.campaign()
            # describe() starts or joins Ray (once: prepare and run reuse it) to name it here;
            # inside the executor's context so that a Ray it started is shut down in any case
            echo_total = f" of {self.summary.total}" if campaign.precision is None else ""
            self.echo(f"{campaign.name}: running {n_pending}{echo_total} trials on "
                      f"{ex.describe()} -> {self.location}")
        return self.ex

    def recompute_golden(self, trials: list[Trial]) -> None:
        """Golden rows whose part was lost (quarantined): run one stored trial of each pair."""
        ex, trials = self._ready(trials)
        _recompute_golden(ex, self.job, trials, self.writer, self.ledger.check, self.echo)

    def _ready(self, trials: list[Trial]) -> tuple[Executor, list[Trial]]:
        """Start the executor, prepare the models of ``trials`` not prepared yet (in campaign
        order), and return it with the trials that can run (a failed model's are left out)."""
        ex = self._start(len(trials))
        needed = {t.model for t in trials}
        self._prepare(ex, [m for m in self.job.campaign().models
                           if m in needed and m not in self._prepared])
        return ex, self._runnable(trials)

    def _prepare(self, ex: Executor, models: list[str]) -> None:
        failed = _prepare(ex, self.job, models, self.echo)
        self._prepared.update(models)
        for worker, checksums in ex.prepared_checksums:  # refused before any trial runs
            self.ledger.check(_Prepared(worker, checksums))
        ex.prepared_checksums.clear()
        if failed is not None and self.setup_failed is None:
            self.setup_failed = failed

    def _runnable(self, trials: list[Trial]) -> list[Trial]:
        """``trials`` without those of a model that could not be built."""
        bad = self.setup_failed.model if self.setup_failed is not None else None
        return trials if bad is None else [t for t in trials if t.model != bad]

    def run_round(self, rnd: Round, pending: list[Trial], n_looks: int) -> None:
        from tqdm.auto import tqdm

        ex, pending = self._ready(pending)
        campaign = self.job.campaign()
        if not pending:
            return
        desc = campaign.name if n_looks == 1 else (
            f"{campaign.name} round {rnd.index + 1}/{n_looks} ({rnd.n_points} points to "
            f"{rnd.reps} reps)")
        if n_looks > 1 and (rnd.index or not self.progress):  # in logs too (no bar there)
            self.echo(f"{desc}: {len(pending)} trials"
                      + (" (the points whose cells are still open)" if rnd.index else ""))
        if self.bar is None:  # after prepare, so that its rate and ETA are the trials'
            self.bar = tqdm(total=len(pending), unit="trial", desc=desc,
                            disable=not self.progress, dynamic_ncols=True, file=sys.stderr)
        else:
            self.bar.total += len(pending)
            self.bar.set_description(desc)
            self.bar.refresh()
        delivered: set[str] = set()  # trial ids with a row from this round
        stats, summary, bar = ex.stats, self.summary, self.bar

        def on_result(result: Any) -> None:
            if result.rows:  # every row carries golden_<m> for each metric evaluate returns
                check_target_metric(campaign, golden_metrics(result.rows[0]))
            self.ledger.check(result)  # raises before anything of the chunk is stored
            self.writer.add(result.rows, result.golden)
            self.ledger.record_nondeterministic(result.nondeterministic)
            self.decide.add(result.rows)
            delivered.update(r["trial_id"] for r in result.rows)
            summary.ran += len(result.rows)
            summary.evaluated += sum(bool(r.get("evaluated", True)) for r in result.rows)
            summary.failed += sum(r["status"] != "ok" for r in result.rows)
            for name in result.rebuilt:
                self.echo(f"warning: replica of {name!r} on {result.worker} was modified; "
                          "rebuilt it.")
            bar.update(len(result.rows))
            postfix = {k: v for k, v in (("failed", summary.failed),
                                          ("workers_lost", stats.worker_failures)) if v}
            if postfix:
                bar.set_postfix(postfix)

        ex.run(self.job, make_chunks(pending, self.chunk_size), on_result)
        summary.worker_failures = stats.worker_failures
        summary.worker_events = stats.failures()
        missing = [t.trial_id for t in pending if t.trial_id not in delivered]
        if missing:  # an executor must report every trial or raise; never lose one quietly
            raise TrialsLostError(
                f"The {ex.name} executor finished without a row for {len(missing)} "
                f"trial(s): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
                "\nEvery row it reported is stored; run the same command again to run only "
                "these.", missing)
        # the next decision reads these rows: store them first, so that a crash after the
        # decision never leaves a dataset that the decision did not see
        self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        try:
            self.writer.close()
        finally:
            if self.ex is not None:
                self.summary.worker_failures = self.ex.stats.worker_failures
                self.summary.worker_events = self.ex.stats.failures()
            self._stack.close()


def check_target_metric(campaign: Any, metrics: Iterable[str]) -> None:
    """Refuse a precision target for a metric that ``evaluate`` does not return (checked with
    the stored metrics before any work, else on the first rows, before they are stored: no
    row of a run that cannot stop is kept)."""
    target, metrics = campaign.precision, list(metrics)
    if target is None or not metrics or target.metric in metrics:
        return
    raise CampaignSpecError(
        f"Expected the precision target's metric to be one that evaluate() returns, but got "
        f"{target.metric!r}.\n  evaluate() returns: {sorted(metrics)}\nPass a target on one of "
        f"them (e.g. `precision='{sorted(metrics)[0]}=0.01'`); nothing was stored.")


def _prepare(ex: Executor, job: JobRef, models: list[str],
             echo: Callable[[str], None]) -> TrialSetupError | None:
    """Build (train, or load from the artifact cache) every model that has trials to run.

    A failure of a model's factory or data hook is reported here and returned: the driver
    skips that model's trials, runs the others, and ends with the error (exit status 1).
    Without a model name in the error, the run stops at the failing model's first trial.
    """
    if not models:
        return None
    t0 = time.perf_counter()
    try:
        seconds = ex.prepare(job, models)
    except TrialSetupError as exc:
        first = str(exc).splitlines()[0]
        if exc.model is not None:
            echo(f"warning: preparing model {exc.model!r} failed ({first}); its trials are "
                 "skipped, the other models' trials run, and the run ends with this error "
                 "(exit status 1).")
            return exc
        echo(f"warning: preparing the models failed ({first}); the run stops at the first "
             "trial of the failing model (exit status 1); models before it in `models` run.")
        return None
    took = ", ".join(f"{m} {s:.1f}s" for m, s in seconds.items()) if seconds else ""
    echo(f"Prepared {len(models)} model(s) in {time.perf_counter() - t0:.1f} s"
         + (f" ({took})" if took else ""))
    return None


@dataclass
class _Prepared:
    """The checksums a worker reported from ``prepare``, shaped like a chunk for the checks."""

    worker: str
    checksums: dict[str, str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    golden: list[dict[str, Any]] = field(default_factory=list)
    nondeterministic: list[str] = field(default_factory=list)


def golden_to_recompute(trials: list[Trial], pending: list[Trial],
                         stored: set[tuple[str, str]]) -> list[Trial]:
    """One stored trial per (model, mitigation) whose golden row is missing (e.g. its part was
    torn and quarantined) and that has no pending trial to bring it back: running it again
    yields the golden row (its result row, already stored, is discarded)."""
    covered = stored | {(t.model, t.mitigation) for t in pending}
    out: dict[tuple[str, str], Trial] = {}
    for t in trials:
        key = (t.model, t.mitigation)
        if key not in covered and key not in out:
            out[key] = t
    return list(out.values())


def _recompute_golden(ex: Executor, job: JobRef, trials: list[Trial], writer: ResultsWriter,
                      check: Callable[[Any], None], echo: Callable[[str], None]) -> None:
    """Run ``trials`` only for the golden rows they produce (see :func:`golden_to_recompute`);
    each is checked against the golden values of the stored rows first."""
    if not trials:
        return
    pairs = ", ".join(f"{t.model}/{t.mitigation}" for t in trials)
    echo(f"Recomputing {len(trials)} missing golden row(s): {pairs}")

    def on_result(result: Any) -> None:
        check(result)
        writer.add([], result.golden)

    ex.run(job, make_chunks(trials, 1), on_result)
    writer.flush()
