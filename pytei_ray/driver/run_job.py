"""The driver: run a job's campaign into a results directory (what the launcher CLI calls).

:func:`run` loads the job, checks the directory (manifest, spec hash, extensions), expands the
trials, skips those already stored, prepares the models on the executor, and writes each
returned chunk as it arrives. Running it again resumes: only trials without a stored row run.
The command line is :mod:`pytei_ray.launch`; docs/campaign.md describes both.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pytei_ray.campaign.compare import compare_specs
from pytei_ray.campaign.jobfile import JobRef, load_job
from pytei_ray.campaign.rounds import (
    DecisionRows,
    cells_at_cap,
    decision_columns,
    foreign_rows,
    next_active,
    round_trials,
)
from pytei_ray.campaign.spec import Campaign, spec_hash
from pytei_ray.campaign.trials import Trial, count_by_factor, points
from pytei_ray.columns import FACTORS, PLURAL
from pytei_ray.errors import (
    SpecChangedError,
)
from pytei_ray.execution import ExecutorConfig, get_executor
from pytei_ray.execution.base import Executor
from pytei_ray.storage import (
    QUARANTINE_DIR,
    ResultsStore,
    ResultsWriter,
    default_out,
)

from .ledger import RunLedger
from .overrides import (
    apply_precision,
    apply_repetitions,
    precision_override,
    repetitions_override,
)
from .runner import RoundRunner, check_target_metric, golden_to_recompute
from .summary import RunSummary

__all__ = ["RunSummary", "run", "default_out"]


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
        tail = (f"\nThese changes only add trials. Run again with `extend=True` to run the "
                f"{n_new} new trials and keep the {n_stored} stored rows, or use a new "
                "`out=DIR`.")
    else:
        tail = ("\nStored results cannot be mixed with a changed campaign. Write to a new "
                f"directory (`out=NEW_DIR`), or restore the job to the stored campaign (its "
                f"source is kept in {job_copy}).")
    return SpecChangedError(head + body + tail, diff_changes, extendable)


def _dry_run(store: ResultsStore, campaign: Campaign, trials: list[Trial],
             manifest: dict[str, Any] | None, diff: Any, summary: RunSummary,
             echo: Callable[[str], None]) -> None:
    """What ``dry_run=True`` prints: the grid, the adaptive plan, the output location's state."""
    where = store.display
    grid_ids = {t.trial_id for t in trials}
    n_levels = {f: len(getattr(campaign, PLURAL[f])) if f in PLURAL else campaign.repetitions
                for f in FACTORS}
    echo(f"Campaign {campaign.name!r}: {_grid_text(trials, n_levels)}")
    if campaign.precision is not None:
        looks = campaign.looks()
        per_point = len(campaign.mitigations)
        echo(f"Adaptive: {campaign.precision.describe()}; the trials above are the first "
             f"round; points still open get more repetitions at the looks {looks} (at most "
             f"{len(points(campaign)) * looks[-1] * per_point} trials).")
    if manifest is None:
        echo(f"Output: {where} (new)")
    elif diff is not None and not diff.same:
        verb = "needs `extend=True`" if diff.extendable else "would be REFUSED"
        echo(f"Output: {where} (exists; changed campaign, {verb}):\n  "
             + "\n  ".join(diff.changes))
    else:
        try:
            stored = set(store.read_trial_status()) & grid_ids
        except Exception as exc:  # a torn part: the real run quarantines it first
            echo(f"note: a stored part is unreadable ({type(exc).__name__}); it will be "
                 f"moved to {QUARANTINE_DIR}/ and its trials rerun.")
            stored = set()
        summary.skipped = len(stored)
        echo(f"Output: {where} (exists: {len(stored)} of {len(trials)} trials stored, "
             f"{len(trials) - len(stored)} to run)")
    echo("Nothing was run (`dry_run=True`).")


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
    growth: float | None = None,
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
            keeps its larger count (see :func:`~pytei_ray.driver.overrides.apply_repetitions`).
        precision, max_reps, confidence, growth: a precision target that replaces the
            campaign's (``--precision auc=0.005`` text or a
            :class:`~pytei_ray.stats.Precision`), or changes of its maximum repetitions /
            confidence / look factor; recorded in the manifest so that a plain rerun keeps them
            (see :func:`~pytei_ray.driver.overrides.apply_precision`).
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
    where = store.display  # for messages: a URI without its query options
    manifest = store.read_manifest()
    job = apply_repetitions(job, manifest, repetitions, where, echo)
    job = apply_precision(job, manifest, precision, max_reps, confidence, where, echo,
                          growth=growth)
    job = job.replace(results_uri=store.location)
    campaign = job.campaign()
    trials = round_trials(campaign, 0, points(campaign)).trials  # the first (or only) round
    spec = campaign.spec(job.params)
    summary = RunSummary(campaign.name, where, len(trials), dry_run=dry_run)

    diff = compare_specs(manifest["spec"], spec) if manifest else None
    if dry_run:
        _dry_run(store, campaign, trials, manifest, diff, summary, echo)
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
    where = store.display
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
            raise _refusal(diff.changes, diff.extendable, where, len(status), new,
                           store.job_copy_path())
    foreign = foreign_rows(campaign, stored_rows)
    if foreign:
        raise SpecChangedError(
            f"{len(foreign)} rows stored in {where} belong to trials that are not in this "
            "campaign's grid (a trial definition changed). Use a new `out=DIR`.", [], False)
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
    check_target_metric(campaign, metrics)  # known from stored rows: refused before any work
    changes = diff.changes if diff is not None and not diff.same else None
    overrides = {"repetitions_override": repetitions_override(job),
                 "precision_override": precision_override(job)}
    ledger = RunLedger.open(store, manifest, spec, spec_hash=spec_hash(spec),
                            n_trials=len(trials), metrics=metrics, job=job, overrides=overrides,
                            changes=changes, scan_golden=scan.golden,
                            golden_of_rows=scan.golden_of_rows, echo=echo)
    manifest = ledger.manifest
    if manifest["job"]["source_sha256"] == job.source_sha256:
        store.write_job_source(job.source)
    else:
        warnings.warn(f"The job file changed since results were first stored in {where}, "
                      "but the campaign's factors did not; resuming.", stacklevel=2)

    stored_golden = {(g["model"], g["mitigation"]) for g in scan.golden}
    pending0 = [t for t in trials if t.trial_id not in status]
    regolden = golden_to_recompute(trials, pending0, stored_golden)
    # every stored row is a trial of this campaign (foreign rows were refused above)
    summary.failed_stored = sum(s != "ok" for s in status.values())
    ledger.record_nonfinite(scan.golden)

    writer = ResultsWriter(
        store, metrics, rows_per_part=rows_per_part, flush_seconds=flush_seconds,
        known_golden=stored_golden,
        on_new_metrics=ledger.record_metrics, stored_schemas=scan.schemas,
        factors=campaign.column_types())
    del scan

    def make_executor() -> Executor:
        return executor if isinstance(executor, Executor) else get_executor(executor, config)

    runner = RoundRunner(job, make_executor, writer, decide, summary, ledger,
                         chunk_size=chunk_size or campaign.chunk_size, progress=progress,
                         echo=echo, location=where)
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
            if index:  # an adaptive round adds trials: the report's progress counts them
                ledger.set_n_trials(summary.total)
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
