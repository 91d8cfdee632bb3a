"""The driver: run a job's campaign into a results directory (what the launcher CLI calls).

:func:`run` loads the job, checks the directory (manifest, spec hash, extensions), expands the
trials, skips those already stored, prepares the models on the executor, and writes each
returned chunk as it arrives. Running it again resumes: only trials without a stored row run.
The command line is :mod:`pytei_ray.launch`; docs/campaign.md describes both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytei_ray.campaign.consistency import Consistency
from pytei_ray.campaign.jobfile import JobRef, load_job
from pytei_ray.campaign.rounds import (
    DecisionRows,
    Round,
    cells_at_cap,
    decision_columns,
    foreign_rows,
    next_active,
    round_trials,
)
from pytei_ray.campaign.spec import compare_specs, spec_hash
from pytei_ray.campaign.trials import (
    FACTORS,
    Trial,
    count_by_factor,
    make_chunks,
    points,
)
from pytei_ray.errors import (
    CampaignSpecError,
    JobFileError,
    PyteiRayError,
    SpecChangedError,
    TrialSetupError,
    TrialsLostError,
)
from pytei_ray.execution import ExecutorConfig, get_executor
from pytei_ray.execution.base import Executor
from pytei_ray.storage import (
    QUARANTINE_DIR,
    ResultsStore,
    ResultsWriter,
    default_out,
    new_manifest,
    updated_manifest,
)

__all__ = ["RunSummary", "run", "default_out"]


@dataclass
class RunSummary:
    """Outcome of :func:`run`.

    Attributes:
        campaign: campaign name.  out: results location.  total: trials in the grid.
        ran: trials run now.  evaluated: of those, trials whose ``evaluate`` ran (the others had
        no effective fault and got the golden metrics).  failed: of those, ``status="failed"``.
        skipped: already stored.
        complete: every trial of the grid has a row.  dry_run: nothing was run.
        worker_failures: worker processes found dead (Ray executor), ``worker_events`` says
            what followed (``"2 worker failures (1 restarted, 2 chunks retried)"``).
        rounds: rounds reached (an adaptive campaign adds repetitions in rounds; 1 otherwise).
        at_cap: cells of an adaptive campaign still open at ``max_reps``, one line each with
            why (more repetitions would not settle them cheaply).
        failed_stored: stored trials of the grid with ``status="failed"`` from earlier runs
            (``--retry-failed`` runs them again).
    """

    campaign: str
    out: str
    total: int
    ran: int = 0
    evaluated: int = 0
    failed: int = 0
    skipped: int = 0
    complete: bool = False
    dry_run: bool = False
    worker_failures: int = 0
    worker_events: str = ""
    rounds: int = 1
    at_cap: list[str] = field(default_factory=list)
    failed_stored: int = 0

    def line(self) -> str:
        """The summary printed at the end of a run (one line, plus the cells at the cap)."""
        rounds = f" in {self.rounds} rounds" if self.rounds > 1 else ""
        if self.ran == 0 and self.complete:
            text = (f"{self.campaign}: complete, all {self.total} trials{rounds} already stored "
                    f"in {self.out} (nothing to run).")
            if self.failed_stored:
                text = text[:-1] + (f"; {self.failed_stored} of them failed (status='failed'): "
                                    "rerun with --retry-failed to run them again.")
        else:
            state = "complete" if self.complete else "INCOMPLETE (run the same command to resume)"
            workers = f"; {self.worker_events}" if self.worker_events else ""
            golden = self.ran - self.evaluated
            evals = (f"; {golden} of them without an effective fault (golden metrics, not "
                     "evaluated)") if golden else ""
            stored_failed = (f", {self.failed_stored} of them failed"
                             if self.failed_stored else "")
            text = (f"{self.campaign}: {self.ran} trials run{rounds} ({self.failed} failed), "
                    f"{self.skipped} skipped (already stored{stored_failed}){workers}{evals}; "
                    f"{state}; results in {self.out}")
            if self.complete and self.failed + self.failed_stored:
                text += ("\n(failed trials are stored with status='failed' and their error; "
                         "rerun with --retry-failed to run them again)")
        if self.at_cap:
            shown = "\n  ".join(self.at_cap[:10])
            more = f"\n  ... and {len(self.at_cap) - 10} more" if len(self.at_cap) > 10 else ""
            text += (f"\n{len(self.at_cap)} cell(s) stopped at the maximum repetitions without "
                     f"reaching the precision target (more repetitions would not settle them "
                     f"cheaply):\n  {shown}{more}")
        return text


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _grid_text(trials: list[Trial], n_levels: Mapping[str, int]) -> str:
    counts = count_by_factor(trials)
    lines = [f"{len(trials)} trials = " + " x ".join(f"{n_levels[f]} {f}" for f in FACTORS)]
    for f in FACTORS:
        levels = "  ".join(f"{k}={v}" for k, v in counts[f].items())
        lines.append(f"  {f + ':':<13}{levels}")
    return "\n".join(lines)


def _refusal(diff_changes: list[str], extendable: bool, out: str, n_stored: int,
             n_new: int, job_copy: str) -> SpecChangedError:
    head = f"The campaign differs from the one whose results are stored in {out}:\n  "
    body = "\n  ".join(diff_changes)
    if extendable:
        tail = (f"\nThese changes only add trials. Run again with --extend to run the {n_new} "
                f"new trials and keep the {n_stored} stored rows, or use a new --out DIR.")
    else:
        tail = ("\nStored results cannot be mixed with a changed campaign. Write to a new "
                f"directory (--out NEW_DIR), or restore the job to the stored campaign (its "
                f"source is kept in {job_copy}).")
    return SpecChangedError(head + body + tail, diff_changes, extendable)


def run(
    job: str | Path | JobRef,
    out: str | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    executor: str | Executor = "local",
    config: ExecutorConfig | None = None,
    extend: bool = False,
    retry_failed: bool = False,
    dry_run: bool = False,
    repetitions: int | None = None,
    precision: Any = None,
    max_reps: int | None = None,
    confidence: float | None = None,
    chunk_size: int | None = None,
    flush_seconds: float = 10.0,
    rows_per_part: int = 10_000,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> RunSummary:
    """Run (or resume, or extend) a campaign into a results directory.

    Args:
        job: a job file path, or a loaded :class:`JobRef`.
        out: results location (local path, ``s3://...``); default :func:`default_out`.
        params: ``make_campaign`` parameters (ignored if ``job`` is a JobRef).
        executor: ``"local"``, ``"ray"``, or an :class:`Executor` instance.
        config: executor options.
        extend: accept a changed campaign that only adds trials.
        retry_failed: drop stored ``status="failed"`` rows and run those trials again.
        dry_run: print the grid and the output location, run nothing.
        repetitions: override the campaign's repetitions (``--repetitions N``; the job's
            parameters are unchanged). Without it, a directory that was extended this way
            keeps its larger count (see :func:`_repetitions`).
        precision, max_reps, confidence: a precision target that replaces the campaign's
            (``--precision auc=0.005`` text or a :class:`~pytei_ray.stats.Precision`), or
            changes of its maximum repetitions / confidence; recorded in the manifest so that a
            plain rerun keeps them (see :func:`_stopping`).
        chunk_size: trials per chunk (default: the campaign's ``chunk_size``).
        flush_seconds, rows_per_part: when buffered rows are written as a part file.
        progress: show a tqdm bar.
        echo: where messages go.

    Raises:
        JobFileError, CampaignSpecError, ResultsDirError, SpecChangedError: before any trial.
        TrialSetupError: a model/data/calibration/golden hook failed (stored rows are kept).
    """
    if not isinstance(job, JobRef):
        job = load_job(job, params)
    out = out if out is not None else default_out(job.base_campaign().name)
    store = ResultsStore(out)
    store.check_location()
    manifest = store.read_manifest()
    job = _repetitions(job, manifest, repetitions, store.location, echo)
    job = _stopping(job, manifest, precision, max_reps, confidence, store.location, echo)
    job = job.replace(results_uri=store.location)
    campaign = job.campaign()
    trials = round_trials(campaign, 0, points(campaign)).trials  # the first (or only) round
    spec = campaign.spec(job.params)
    summary = RunSummary(campaign.name, store.location, len(trials), dry_run=dry_run)
    grid_ids = {t.trial_id for t in trials}

    diff = compare_specs(manifest["spec"], spec) if manifest else None
    if dry_run:
        n_levels = {"model": len(campaign.models), "target": len(campaign.targets),
                    "error_model": len(campaign.error_models), "ber": len(campaign.bers),
                    "repetition": campaign.repetitions, "mitigation": len(campaign.mitigations)}
        echo(f"Campaign {campaign.name!r}: {_grid_text(trials, n_levels)}")
        if campaign.precision is not None:
            looks = campaign.looks()
            per_point = len(campaign.mitigations)
            echo(f"Adaptive: {campaign.precision.describe()}; the trials above are the first "
                 f"round; points still open get more repetitions at the looks {looks} (at most "
                 f"{len(points(campaign)) * looks[-1] * per_point} trials).")
        if manifest is None:
            echo(f"Output: {store.location} (new)")
        elif diff is not None and not diff.same:
            verb = "needs --extend" if diff.extendable else "would be REFUSED"
            echo(f"Output: {store.location} (exists; changed campaign, {verb}):\n  "
                 + "\n  ".join(diff.changes))
        else:
            try:
                stored = set(store.read_trial_status()) & grid_ids
            except Exception as exc:  # a torn part: the real run quarantines it first
                echo(f"note: a stored part is unreadable ({type(exc).__name__}); it will be "
                     f"moved to {QUARANTINE_DIR}/ and its trials rerun.")
                stored = set()
            summary.skipped = len(stored)
            echo(f"Output: {store.location} (exists: {len(stored)} of {len(trials)} trials stored, "
                 f"{len(trials) - len(stored)} to run)")
        echo("Nothing was run (--dry-run).")
        return summary

    with store.lock():
        return _run_locked(job, store, trials, spec, manifest, diff, summary, executor, config,
                           extend=extend, retry_failed=retry_failed, chunk_size=chunk_size,
                           flush_seconds=flush_seconds, rows_per_part=rows_per_part,
                           progress=progress, echo=echo)


def _run_locked(job: JobRef, store: ResultsStore, trials: list[Trial], spec: dict[str, Any],
                manifest: dict[str, Any] | None, diff: Any, summary: RunSummary,
                executor: str | Executor, config: ExecutorConfig | None, *, extend: bool,
                retry_failed: bool, chunk_size: int | None, flush_seconds: float,
                rows_per_part: int, progress: bool, echo: Callable[[str], None]) -> RunSummary:
    campaign = job.campaign()
    decide = DecisionRows(decision_columns(campaign))
    # one pass over the stored parts: torn ones quarantined, rows, schemas, golden rows
    scan = store.scan(["trial_id", "status", *FACTORS, *decide.columns])
    stored_rows = scan.rows
    status = {r["trial_id"]: r["status"] for r in stored_rows}
    if diff is not None and not diff.same:
        if not status and not scan.golden:
            # Nothing computed yet (e.g. a typo stopped the first run): nothing to protect.
            echo("note: the campaign changed but no results are stored yet; the stored spec is "
                 "replaced:\n  " + "\n  ".join(diff.changes))
        elif not (extend and diff.extendable):
            new = len({t.trial_id for t in trials} - set(status))
            raise _refusal(diff.changes, diff.extendable, store.location, len(status), new,
                           store.job_copy_path())
    foreign = foreign_rows(campaign, stored_rows)
    if foreign:
        raise SpecChangedError(
            f"{len(foreign)} rows stored in {store.location} belong to trials that are not in this "
            "campaign's grid (a trial definition changed). Use a new --out DIR.", [], False)
    if retry_failed:
        failed = {t for t, s in status.items() if s != "ok"}
        store.drop_trials(failed)
        for t in failed:
            del status[t]
        stored_rows = [r for r in stored_rows if r["trial_id"] not in failed]
        if failed:
            echo(f"Retrying {len(failed)} failed trials.")
    decide.add(stored_rows)
    del stored_rows

    metrics = list(dict.fromkeys((manifest or {}).get("metrics", []) + scan.metrics))
    if metrics:  # known from stored rows: refuse a target on another metric before any work
        _check_target_metric(campaign, [{"status": "ok", **{f"golden_{m}": 0.0 for m in metrics}}])
    changes = diff.changes if diff is not None and not diff.same else None
    overrides = {"repetitions_override": _override(job),
                 "precision_override": _precision_override(job)}
    if manifest is None:
        manifest = new_manifest(spec, spec_hash=spec_hash(spec), n_trials=len(trials),
                                metrics=metrics, job_path=job.path,
                                source_sha256=job.source_sha256, overrides=overrides)
    else:
        manifest = updated_manifest(manifest, spec, spec_hash=spec_hash(spec),
                                    n_trials=len(trials), metrics=metrics,
                                    source_sha256=job.source_sha256, overrides=overrides,
                                    changes=changes)
    store.write_manifest(manifest)
    if manifest["job"]["source_sha256"] == job.source_sha256:
        store.write_job_source(job.source)
    else:
        warnings.warn(f"The job file changed since results were first stored in {store.location}, "
                      "but the campaign's factors did not; resuming.", stacklevel=2)

    stored_golden = {(g["model"], g["mitigation"]) for g in scan.golden}
    pending0 = [t for t in trials if t.trial_id not in status]
    regolden = _golden_to_recompute(trials, pending0, stored_golden)
    grid = {t.trial_id for t in trials}
    summary.failed_stored = sum(s != "ok" for t, s in status.items() if t in grid)
    checks = Consistency.from_stored(store.location, store.job_copy_path(), manifest,
                                     scan.golden, scan.golden_of_rows, metrics)
    _report_nonfinite(checks, scan.golden, manifest, store, echo)

    def record_metrics(names: list[str]) -> None:
        manifest["metrics"] = names
        manifest["updated_at"] = _now()
        store.write_manifest(manifest)

    def check(result: Any) -> None:
        """Refuse a chunk that would mix experiments; record what is new (before storing)."""
        new = checks.check_chunk(result)
        if new:
            manifest["model_checksums"] = dict(checks.checksums)
            manifest["updated_at"] = _now()
            store.write_manifest(manifest)
        _report_nonfinite(checks, result.golden, manifest, store, echo)

    def record_nondeterministic(models: list[str]) -> None:
        # models whose evaluate() varied between two golden runs: none of their trials skipped
        known = manifest.get("nondeterministic_evaluate", [])
        new = [m for m in models if m not in known]
        if new:
            echo(f"warning: evaluate() of {new} is not deterministic; every trial of it is "
                 "evaluated (recorded as 'nondeterministic_evaluate' in the manifest).")
            manifest["nondeterministic_evaluate"] = sorted([*known, *new])
            manifest["updated_at"] = _now()
            store.write_manifest(manifest)

    writer = ResultsWriter(
        store, metrics, rows_per_part=rows_per_part, flush_seconds=flush_seconds,
        known_golden=stored_golden,
        on_new_metrics=record_metrics, stored_schemas=scan.schemas)
    del scan
    runner = _RoundRunner(job, executor, config, writer, decide, summary,
                          chunk_size or campaign.chunk_size, progress, echo, store.location,
                          record_nondeterministic, check)
    looks = campaign.looks()
    active = points(campaign)
    summary.total = summary.skipped = 0
    try:
        if regolden:
            runner.recompute_golden(regolden)
        for index in range(len(looks)):
            rnd = round_trials(campaign, index, active)
            pending = [t for t in rnd.trials if t.trial_id not in status]
            summary.total += len(rnd.trials)
            summary.skipped += len(rnd.trials) - len(pending)
            summary.rounds = index + 1
            if pending:
                runner.run_round(rnd, pending, len(looks))
            active = next_active(campaign, decide, index, active)
            if not active:
                break
        if runner.setup_failed is not None:
            raise runner.setup_failed  # exit status 1; the other models' rows are stored
        summary.complete = True
        if campaign.precision is not None:
            summary.at_cap = cells_at_cap(campaign, decide)
    finally:
        runner.close()  # flushes the writer before the executor (and a local Ray) goes away
        echo(summary.line())
    return summary


class _RoundRunner:
    """Runs the pending trials of each round on one executor, started at the first round
    that has any, and writes their rows; one progress bar whose total grows per round."""

    def __init__(self, job: JobRef, executor: str | Executor, config: ExecutorConfig | None,
                 writer: ResultsWriter, decide: DecisionRows, summary: RunSummary,
                 chunk_size: int, progress: bool, echo: Callable[[str], None],
                 location: str, on_nondeterministic: Callable[[list[str]], None],
                 check: Callable[[Any], None]) -> None:
        self.job, self.writer, self.decide, self.summary = job, writer, decide, summary
        self.chunk_size, self.progress, self.echo, self.location = (chunk_size, progress, echo,
                                                                    location)
        self._executor, self._config = executor, config
        self.on_nondeterministic = on_nondeterministic
        self.check = check  # refuses a chunk (or prepared replicas) that would mix experiments
        #: the setup failure of a model found by prepare: its trials are skipped, the others
        #: run, and the run ends with this error (exit status 1)
        self.setup_failed: TrialSetupError | None = None
        self.ex: Executor | None = None
        self._stack = contextlib.ExitStack()
        self._prepared: set[str] = set()
        self.bar: Any = None

    def _start(self, n_pending: int) -> Executor:
        if self.ex is None:
            ex = self._executor
            ex = ex if isinstance(ex, Executor) else get_executor(ex, self._config)
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
        ex = self._start(len(trials))
        models = [m for m in dict.fromkeys(t.model for t in trials) if m not in self._prepared]
        self._prepare(ex, models)
        trials = self._runnable(trials)
        _recompute_golden(ex, self.job, trials, self.writer, self.check, self.echo)

    def _prepare(self, ex: Executor, models: list[str]) -> None:
        failed = _prepare(ex, self.job, models, self.echo)
        self._prepared.update(models)
        for worker, checksums in ex.prepared_checksums:  # refused before any trial runs
            self.check(_Prepared(worker, checksums))
        ex.prepared_checksums.clear()
        if failed is not None and self.setup_failed is None:
            self.setup_failed = failed

    def _runnable(self, trials: list[Trial]) -> list[Trial]:
        """``trials`` without those of a model that could not be built."""
        bad = self.setup_failed.model if self.setup_failed is not None else None
        return trials if bad is None else [t for t in trials if t.model != bad]

    def run_round(self, rnd: Round, pending: list[Trial], n_looks: int) -> None:
        from tqdm.auto import tqdm

        ex = self._start(len(pending))
        campaign = self.job.campaign()
        models = [m for m in campaign.models if m not in self._prepared
                  and any(t.model == m for t in pending)]
        self._prepare(ex, models)
        pending = self._runnable(pending)
        if not pending:
            return
        desc = campaign.name if n_looks == 1 else (
            f"{campaign.name} round {rnd.index + 1}/{n_looks} ({rnd.n_points} points to "
            f"{rnd.reps} reps)")
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
            _check_target_metric(campaign, result.rows)
            self.check(result)  # raises before anything of the chunk is stored
            self.writer.add(result.rows, result.golden)
            self.on_nondeterministic(result.nondeterministic)
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


def _check_target_metric(campaign: Any, rows: list[dict[str, Any]]) -> None:
    """Refuse a precision target for a metric that ``evaluate`` does not return (checked on
    the first rows, before they are stored: no row of a run that cannot stop is kept)."""
    target = campaign.precision
    ok = [r for r in rows if r.get("status") == "ok"]
    if target is None or not ok or f"golden_{target.metric}" in ok[0]:
        return
    found = sorted(k[len("golden_"):] for k in ok[0] if k.startswith("golden_"))
    raise CampaignSpecError(
        f"Expected the precision target's metric to be one that evaluate() returns, but got "
        f"{target.metric!r}.\n  evaluate() returns: {found}\nPass --precision with one of "
        "them (e.g. --precision {}=0.01); nothing was stored.".format(found[0] if found
                                                                      else "METRIC"))


def _repetitions(job: JobRef, manifest: dict[str, Any] | None, repetitions: int | None,
                 location: str, echo: Callable[[str], None]) -> JobRef:
    """Apply ``--repetitions N``, or the count a previous ``--repetitions`` stored.

    ``--repetitions N`` replaces the campaign's repetitions (its params are unchanged), so
    ``--extend --repetitions 20`` adds repetitions to any job. The manifest records the
    override (``job.repetitions_override``). A later run without the flag uses the recorded
    count when it is larger than the job's own, so a plain rerun resumes (or finds complete)
    the extended campaign instead of being refused for "removing" repetitions; a job file
    edited to a larger count wins (an extension, needing ``--extend``). An explicit smaller
    ``--repetitions`` is a change and is refused like any other.
    """
    own = job.base_campaign().repetitions
    stored = ((manifest or {}).get("job") or {}).get("repetitions_override")
    if repetitions is not None:
        if isinstance(repetitions, bool) or not isinstance(repetitions, int) or repetitions < 1:
            raise PyteiRayError(f"Expected --repetitions to be an integer >= 1, but got "
                                f"{repetitions!r}.")
        effective = repetitions
    elif isinstance(stored, int) and stored > own:
        effective = stored
        echo(f"note: using {stored} repetitions as recorded in {location} (it was extended with "
             f"--repetitions {stored}; the job says {own}). Pass --repetitions N to choose.")
    else:
        effective = own
    others = {k: v for k, v in job.overrides.items() if k != "repetitions"}
    return job.replace(overrides={**others, **({"repetitions": effective} if effective != own
                                               else {})})


def _stopping(job: JobRef, manifest: dict[str, Any] | None, precision: Any,
              max_reps: int | None, confidence: float | None, location: str,
              echo: Callable[[str], None]) -> JobRef:
    """Apply ``--precision`` / ``--max-reps`` / ``--confidence``, or a recorded precision.

    ``--precision`` replaces the campaign's target (any job can be made adaptive);
    ``--max-reps`` and ``--confidence`` change the target in use (the job's, or the flag's).
    The manifest records the override (``job.precision_override``) and a later run without the
    flags uses it, so a plain rerun resumes the same adaptive campaign.
    """
    stored = ((manifest or {}).get("job") or {}).get("precision_override")
    if precision is None and max_reps is None and confidence is None and not stored:
        return job
    from pytei_ray.stats import Precision  # lazy: scipy only for adaptive campaigns

    base = job.replace(overrides={k: v for k, v in job.overrides.items() if k != "precision"})
    own = base.campaign().precision
    if isinstance(precision, str):
        target = Precision.parse(precision)
    elif precision is not None:
        target = precision
    elif max_reps is not None or confidence is not None:
        target = own or (Precision.from_spec(stored) if stored else None)
        if target is None:
            raise CampaignSpecError(
                "Expected --max-reps / --confidence together with a precision target, but the "
                "campaign has none.\nAdd one, e.g. --precision auc=0.005 (the half-width of the "
                "mean of metric auc), or set Campaign(precision=Precision(...)) in the job.")
    else:
        target = Precision.from_spec(stored)
        if target != own:
            echo(f"note: using the precision target recorded in {location} "
                 f"({target.describe()}); pass --precision to choose another.")
    changes = {k: v for k, v in (("max_reps", max_reps), ("confidence", confidence))
               if v is not None}
    if changes:
        target = dataclasses.replace(target, **changes)
    if target == own:
        return job
    try:
        base.replace(overrides={**base.overrides, "precision": target}).campaign()
    except JobFileError as exc:
        raise CampaignSpecError(str(exc)) from exc
    return base.replace(overrides={**base.overrides, "precision": target})


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


def _report_nonfinite(checks: Consistency, golden: list[dict[str, Any]],
                      manifest: dict[str, Any], store: ResultsStore,
                      echo: Callable[[str], None]) -> None:
    """Warn about (once each) and record non-finite golden metrics: not refused, since every
    run reproduces them and the other metrics stay valid, but no trial can be compared with
    them."""
    found = checks.nonfinite(golden)
    if not found:
        return
    for d in found:
        echo(f"warning: the golden (fault-free) value of metric {d['metric']!r} of model "
             f"{d['model']!r} with mitigation {d['mitigation']!r} is {d['value']}: every "
             "trial's comparison with it (loss, SDC) is meaningless. Check evaluate() on "
             "fault-free data (recorded as 'nonfinite_golden' in the manifest).")
    manifest["nonfinite_golden"] = [*(manifest.get("nonfinite_golden") or []), *found]
    manifest["updated_at"] = _now()
    store.write_manifest(manifest)


def _golden_to_recompute(trials: list[Trial], pending: list[Trial],
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
    """Run ``trials`` only for the golden rows they produce (see :func:`_golden_to_recompute`);
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


def _override(job: JobRef) -> int | None:
    value = job.overrides.get("repetitions")
    return int(value) if value is not None else None


def _precision_override(job: JobRef) -> dict[str, Any] | None:
    value = job.overrides.get("precision")
    return value.to_spec() if value is not None else None


#: ``main``'s exit statuses (also in ``--help``)
