"""The driver: run a job's campaign into a results directory (what the launcher CLI calls).

:func:`run` loads the job, checks the directory (manifest, spec hash, extensions), expands the
trials, skips those already stored, prepares the models on the executor, and writes each
returned chunk as it arrives. Running it again resumes: only trials without a stored row run.
The command line is :mod:`pytei_ray.launch`; docs/campaign.md describes both.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytei_ray.campaign.jobfile import JobRef, load_job
from pytei_ray.campaign.spec import compare_specs, spec_hash
from pytei_ray.campaign.trials import FACTORS, Trial, count_by_factor, expand, make_chunks
from pytei_ray.errors import (
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
        ran: trials run now.  failed: of those, ``status="failed"``.  skipped: already stored.
        complete: every trial of the grid has a row.  dry_run: nothing was run.
        worker_failures: worker processes found dead (Ray executor), ``worker_events`` says
            what followed (``"2 worker failures (1 restarted, 2 chunks retried)"``).
    """

    campaign: str
    out: str
    total: int
    ran: int = 0
    failed: int = 0
    skipped: int = 0
    complete: bool = False
    dry_run: bool = False
    worker_failures: int = 0
    worker_events: str = ""

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        if self.ran == 0 and self.complete:
            return (f"{self.campaign}: complete, all {self.total} trials already stored in "
                    f"{self.out} (nothing to run).")
        state = "complete" if self.complete else "INCOMPLETE (run the same command to resume)"
        workers = f"; {self.worker_events}" if self.worker_events else ""
        return (f"{self.campaign}: {self.ran} trials run ({self.failed} failed), {self.skipped} "
                f"skipped (already stored){workers}; {state}; results in {self.out}")


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
    job = job.replace(results_uri=store.location)
    campaign = job.campaign()
    trials = expand(campaign)
    spec = campaign.spec(job.params)
    summary = RunSummary(campaign.name, store.location, len(trials), dry_run=dry_run)
    grid_ids = {t.trial_id for t in trials}

    diff = compare_specs(manifest["spec"], spec) if manifest else None
    if dry_run:
        n_levels = {"model": len(campaign.models), "target": len(campaign.targets),
                    "error_model": len(campaign.error_models), "ber": len(campaign.bers),
                    "repetition": campaign.repetitions, "mitigation": len(campaign.mitigations)}
        echo(f"Campaign {campaign.name!r}: {_grid_text(trials, n_levels)}")
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
    grid_ids = {t.trial_id for t in trials}
    store.quarantine_bad_parts()
    status = store.read_trial_status()
    if diff is not None and not diff.same:
        if not status and not store.part_paths(golden=True):
            # Nothing computed yet (e.g. a typo stopped the first run): nothing to protect.
            echo("note: the campaign changed but no results are stored yet; the stored spec is "
                 "replaced:\n  " + "\n  ".join(diff.changes))
        elif not (extend and diff.extendable):
            new = len(grid_ids - set(status))
            raise _refusal(diff.changes, diff.extendable, store.location, len(status), new,
                           store.job_copy_path())
    foreign = set(status) - grid_ids
    if foreign:
        raise SpecChangedError(
            f"{len(foreign)} rows stored in {store.location} belong to trials that are not in this "
            "campaign's grid (a trial definition changed). Use a new --out DIR.", [], False)
    if retry_failed:
        failed = [t for t, s in status.items() if s != "ok"]
        store.drop_trials(failed)
        for t in failed:
            del status[t]
        if failed:
            echo(f"Retrying {len(failed)} failed trials.")

    metrics = list(dict.fromkeys((manifest or {}).get("metrics", []) + store.stored_metrics()))
    changes = diff.changes if diff is not None and not diff.same else None
    if manifest is None:
        manifest = new_manifest(spec, spec_hash=spec_hash(spec), n_trials=len(trials),
                                metrics=metrics, job_path=job.path,
                                source_sha256=job.source_sha256,
                                repetitions_override=_override(job))
    else:
        manifest = updated_manifest(manifest, spec, spec_hash=spec_hash(spec),
                                    n_trials=len(trials), metrics=metrics,
                                    source_sha256=job.source_sha256,
                                    repetitions_override=_override(job), changes=changes)
    store.write_manifest(manifest)
    if manifest["job"]["source_sha256"] == job.source_sha256:
        store.write_job_source(job.source)
    else:
        warnings.warn(f"The job file changed since results were first stored in {store.location}, "
                      "but the campaign's factors did not; resuming.", stacklevel=2)

    pending = [t for t in trials if t.trial_id not in status]
    summary.skipped = len(trials) - len(pending)
    stored_golden = {(g["model"], g["mitigation"]) for g in store.read_golden()}
    regolden = _golden_to_recompute(trials, pending, stored_golden)
    if not pending and not regolden:
        summary.complete = True
        echo(summary.line())
        return summary

    def record_metrics(names: list[str]) -> None:
        manifest["metrics"] = names
        manifest["updated_at"] = _now()
        store.write_manifest(manifest)

    writer = ResultsWriter(
        store, metrics, rows_per_part=rows_per_part, flush_seconds=flush_seconds,
        known_golden=stored_golden,
        on_new_metrics=record_metrics)
    ex = executor if isinstance(executor, Executor) else get_executor(executor, config)
    from tqdm.auto import tqdm

    bar: Any = None  # created once the models are prepared, so its rate and ETA are the trials'
    stats = ex.stats

    delivered: set[str] = set()  # trial ids with a row from this run

    def on_result(result: Any) -> None:
        writer.add(result.rows, result.golden)
        delivered.update(r["trial_id"] for r in result.rows)
        summary.ran += len(result.rows)
        summary.failed += sum(r["status"] != "ok" for r in result.rows)
        for name in result.rebuilt:
            echo(f"warning: replica of {name!r} on {result.worker} was modified; rebuilt it.")
        bar.update(len(result.rows))
        postfix = {k: v for k, v in (("failed", summary.failed),
                                      ("workers_lost", stats.worker_failures)) if v}
        if postfix:
            bar.set_postfix(postfix)

    try:
        with ex:
            # describe() starts or joins Ray (once: prepare and run reuse it) to name it here;
            # inside `with ex` so that a Ray started by it is shut down whatever happens next
            echo(f"{campaign.name}: running {len(pending)} of {len(trials)} trials on "
                 f"{ex.describe()} -> {store.location}")
            try:
                _prepare(ex, job, [m for m in campaign.models
                                   if any(t.model == m for t in pending + regolden)], echo)
                _recompute_golden(ex, job, regolden, writer, echo)
                bar = tqdm(total=len(pending), unit="trial", desc=campaign.name,
                           disable=not progress, dynamic_ncols=True, file=sys.stderr)
                ex.run(job, make_chunks(pending, chunk_size or campaign.chunk_size), on_result)
            finally:
                writer.flush()  # before leaving the executor (Ray's shutdown takes a second or two)
            missing = [t.trial_id for t in pending if t.trial_id not in delivered]
            if missing:  # an executor must report every trial or raise; never lose one quietly
                raise TrialsLostError(
                    f"The {ex.name} executor finished without a row for {len(missing)} "
                    f"trial(s): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
                    "\nEvery row it reported is stored; run the same command again to run only "
                    "these.", missing)
    finally:
        if bar is not None:
            bar.close()
        writer.close()
        summary.complete = summary.ran == len(pending)
        summary.worker_failures = stats.worker_failures
        summary.worker_events = stats.failures()
        echo(summary.line())
    return summary


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
    return job.replace(overrides={"repetitions": effective} if effective != own else {})


def _prepare(ex: Executor, job: JobRef, models: list[str], echo: Callable[[str], None]) -> None:
    """Build (train, or load from the artifact cache) every model that has trials to run.

    A failure is only reported here: the trials run next, in model order, so the models
    before the failing one still get their rows, and the failing one raises the same
    :class:`TrialSetupError` when its first chunk runs (exit status 1, as without a prepare).
    """
    if not models:
        return
    t0 = time.perf_counter()
    try:
        seconds = ex.prepare(job, models)
    except TrialSetupError as exc:
        echo(f"warning: preparing the models failed ({str(exc).splitlines()[0]}); running "
             "the trials of the models that can be built.")
        return
    took = ", ".join(f"{m} {s:.1f}s" for m, s in seconds.items()) if seconds else ""
    echo(f"Prepared {len(models)} model(s) in {time.perf_counter() - t0:.1f} s"
         + (f" ({took})" if took else ""))


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
                      echo: Callable[[str], None]) -> None:
    """Run ``trials`` only for the golden rows they produce (see :func:`_golden_to_recompute`)."""
    if not trials:
        return
    pairs = ", ".join(f"{t.model}/{t.mitigation}" for t in trials)
    echo(f"Recomputing {len(trials)} missing golden row(s): {pairs}")
    ex.run(job, make_chunks(trials, 1), lambda result: writer.add([], result.golden))
    writer.flush()


def _override(job: JobRef) -> int | None:
    value = job.overrides.get("repetitions")
    return int(value) if value is not None else None


#: ``main``'s exit statuses (also in ``--help``)
