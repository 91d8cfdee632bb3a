"""Campaign report: summary tables, plots, a self-contained HTML page, a terminal summary.

Command line::

    python -m pytei_ray.report results/drs            # writes into the dataset's report folder
    python -m pytei_ray.report s3://bucket/drs --to drs_report

In a notebook::

    from pytei_ray.report import load_results, summarize, recovery
    df = load_results("results/drs")
    summarize(df, metric="auc", threshold=0.01)
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pytei_ray.columns import CELL_ORDER
from pytei_ray.storage.layout import default_report_dir

from ..stats import (
    Precision,
    check_confidence,
    higher_is_better,
    mean_ci,
    metric_bounds,
    wilson_interval,
)
from . import plots as _plots
from . import training as _training
from .advice import (
    adaptive_lines,
    advice_lines,
    campaign_order,
    expected_trials,
    launch_command,
)
from .data import (
    Dataset,
    SkippedPartWarning,
    load_dataset,
    load_results,
    metric_columns,
)
from .html import Page, ci_header, display_table, recovery_table, render_html
from .summary import (
    ADVICE_FACTOR,
    baseline_mitigation,
    cell_keys,
    recovery,
    stopping_rule,
    suggest_repetitions,
    summarize,
)

__all__ = [
    "Dataset",
    "Report",
    "SkippedPartWarning",
    "baseline_mitigation",
    "default_output_dir",
    "higher_is_better",
    "load_dataset",
    "load_results",
    "mean_ci",
    "metric_bounds",
    "metric_columns",
    "recovery",
    "summarize",
    "wilson_interval",
    "write_report",
]

PLOT_KEYS = CELL_ORDER


@dataclass
class Report:
    """What :func:`write_report` produced.

    Attributes:
        out_dir: Folder holding the page, the PNGs and the CSV tables.
        html: The page (``index.html``).
        figures: PNG files, in page order.
        summary: :func:`summarize` rows (all metrics).
        recovery: :func:`recovery` rows (may be empty).
        dataset: The loaded dataset (rows, parts read and skipped, manifest).
        repetitions: Suggested repetitions per cell for the primary metric, or None when
            none of its cells can be settled (see :func:`suggest_repetitions`).
        command: Launcher command adding those repetitions, or None.
        text: The terminal summary.
        primary: The metric that drives the advice: the first of ``metric``, else the
            campaign's first metric (manifest order).
        advice: Suggested repetitions per metric (None: nothing to settle).
    """

    out_dir: Path
    html: Path
    figures: list[Path]
    summary: pd.DataFrame
    recovery: pd.DataFrame
    dataset: Dataset
    repetitions: int | None = None
    command: str | None = None
    text: str = field(default="", repr=False)
    primary: str | None = None
    advice: dict[str, int | None] = field(default_factory=dict)


def default_output_dir(path: str | os.PathLike[str]) -> Path:
    """The results directory's report folder for a local dataset, a folder named after the
    dataset in the current directory for a cloud URI (see
    :func:`pytei_ray.storage.layout.default_report_dir`)."""
    return default_report_dir(path)


def _failures(df: pd.DataFrame) -> pd.DataFrame:
    failed = df[df["status"].ne("ok")] if "status" in df else df.iloc[:0]
    if failed.empty:
        return pd.DataFrame()
    first = failed.get("error", pd.Series("", index=failed.index)).fillna("(no error text)")
    counts = Counter(str(t).strip().splitlines()[-1][:300] if str(t).strip() else "(empty)"
                     for t in first)
    return pd.DataFrame(counts.most_common(20), columns=["error (last line)", "trials"])


def _meta(ds: Dataset, df: pd.DataFrame) -> list[tuple[str, str]]:
    now = datetime.now(timezone.utc).isoformat(" ", "seconds")
    meta = [("dataset", ds.path), ("generated", now)]
    if "campaign" in df and not df.empty:
        meta.insert(0, ("campaign", ", ".join(map(str, df["campaign"].dropna().unique()[:5]))))
    status = df["status"].value_counts().to_dict() if "status" in df else {}
    meta.append(("trials", f"{len(df):,} in {len(ds.parts)} part file(s); "
                 + ", ".join(f"{k}: {v:,}" for k, v in sorted(status.items()))))
    expected = expected_trials(ds.manifest)
    if expected:
        state = "complete" if len(df) >= expected else "in progress"
        meta.append(("progress", f"{len(df):,} / {expected:,} trials ({state})"))
    return meta


def write_report(
    path: str | os.PathLike[str],
    to: str | os.PathLike[str] | None = None,
    *,
    metric: str | list[str] | None = None,
    threshold: float = 0.01,
    confidence: float = 0.95,
    higher_is_better: bool | dict[str, bool] | None = None,
    baseline: str | None = None,
    precision: float | None = None,
    nonfinite_as_sdc: bool = True,
    plots: bool = True,
) -> Report:
    """Write the report of a results dataset: ``index.html``, PNG plots, CSV tables.

    Works on a finished dataset and on one a campaign is still writing (unreadable parts are
    skipped with a :class:`SkippedPartWarning`).

    Args:
        path: Results dataset: local folder or cloud URI.
        to: Output folder; default :func:`default_output_dir` (the dataset's report folder).
        metric: Metric(s) to report; all when None.
        threshold: Relative drop below golden counted as silent data corruption.
        confidence: Level of every interval.
        higher_is_better: Metric direction (bool, ``{metric: bool}`` with ``"*"`` for the
            metrics it does not name, or None to guess from the names).
        baseline: ``mitigation`` value meaning "unmitigated"; guessed when None.
        precision: Wanted CI half-width relative to |golden| (None: the campaign's stopping
            rule when it has one, else the SDC-threshold rule; see :func:`summarize`).
        nonfinite_as_sdc: Count non-finite metrics as SDC.
        plots: Draw the figures (False: tables and page only, much faster).

    Returns:
        A :class:`Report` (paths, tables, suggested repetitions, terminal text).

    Raises:
        FileNotFoundError: no dataset at ``path``.
        ValueError: the output folder cannot be written (e.g. a read-only dataset without
            ``to``); the message says to pass ``to``.

    Example:
        >>> rep = write_report("results/drs")       # doctest: +SKIP
        >>> print(rep.text)                         # doctest: +SKIP
    """
    check_confidence(confidence)  # bad input: refused before anything is read or written
    if isinstance(threshold, bool) or not 0.0 <= threshold < 1.0:
        raise ValueError("Expected argument `threshold` to be a float in the [0, 1) range, "
                         f"but got {threshold!r}.")
    ds = load_dataset(path)
    out = Path(to) if to is not None else default_output_dir(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        hint = ("pass an output folder you can write (--to FOLDER, or to=...)" if to is None
                else "pass another output folder (--to FOLDER)")
        raise ValueError(f"Cannot write the report into {out}: {exc.strerror or exc} (a "
                         f"read-only dataset?); {hint}.") from exc
    for old in out.glob("*.png"):
        old.unlink()
    df = ds.frame
    opts = dict(threshold=threshold, confidence=confidence, higher_is_better=higher_is_better,
                nonfinite_as_sdc=nonfinite_as_sdc, precision=precision)
    has_rows = not df.empty and bool(metric_columns(df))
    metrics = (([metric] if isinstance(metric, str) else list(metric)) if metric is not None
               else campaign_order(metric_columns(df), ds.manifest)) if has_rows else []
    training = has_rows and _training.is_training(df)
    if training and metric is None:  # val loss (+ the stopping rule's metric), not 0/1 columns
        rule0 = stopping_rule(ds.manifest)
        metrics = _training.training_metrics(metrics, rule0[0].metric if rule0 else None)
    summary = summarize(ds, metrics, **opts) if has_rows else pd.DataFrame()
    rec = recovery(ds, metrics, baseline=baseline, confidence=confidence,
                   higher_is_better=higher_is_better) if has_rows else pd.DataFrame()
    keys = cell_keys(df, ds.manifest) if has_rows else []
    figures: list[Path] = []
    if plots and metrics:  # the plots' own groupings, summarized once for every metric
        by = [k for k in PLOT_KEYS if k in keys or k == "error_model" and k in df]
        if set(by) - {"error_model"} == set(keys) and "error_model" not in keys:
            # the same cells as the table (one error model): reuse it, judged once
            curves = summary.copy()
            if "error_model" in by and not curves.empty:
                curves.insert(0, "error_model", df["error_model"].iloc[0])
        else:
            curves = summarize(ds, metrics, by=by, **opts)
        bits = None
        if "bit" in df and df["bit"].nunique() > 1:
            bit_by = [k for k in ("model", "mitigation") if k in df] + ["bit"]
            bits = summarize(ds, metrics, by=bit_by, **opts)
        for m in metrics:
            figures += _plots.plot_metric_vs_ber(curves, m, out, confidence)
            figures += _plots.plot_recovery(rec, m, out)
            if bits is not None:
                figures += _plots.plot_bits(bits, m, out)
    outcomes = _training.outcome_table(df, confidence) if training else None
    if training:
        outcomes.to_csv(out / "outcomes.csv", index=False)
        steps = _training.read_steps(ds.path)
        if plots and steps is not None:
            golden = _training.read_golden_steps(ds.path)
            figures = _training.loss_curves(ds, steps, out, golden) + figures
    repetitions = command = None
    primary = metrics[0] if metrics else None
    advice: dict[str, int | None] = {}
    current = None
    rule = stopping_rule(ds.manifest)  # kept when --precision is given too
    extra: list[str] = []
    if not summary.empty:
        current = int(df["repetition"].nunique()) if "repetition" in df else None
        if rule is not None:  # adaptive: ask for the target again, or for a higher cap
            target = rule[0]
            rows = summary[(summary["metric"] == target.metric) & summary["inconclusive"]]
            if not rows.empty:
                cap = target.max_reps * 2 if rows["at_cap"].any() else target.max_reps
                command = launch_command(ds, None, target.cli_flags(cap))
        else:
            advice = {m: suggest_repetitions(summary, current, metric=m) for m in metrics}
            repetitions = advice.get(primary) if primary is not None else None
            command = launch_command(ds, repetitions) if repetitions else None
            if primary is not None and summary["inconclusive"].any() and current:
                alt = Precision(primary, precision or threshold, relative=True,
                                confidence=confidence, threshold=threshold)
                flags = alt.cli_flags(max(ADVICE_FACTOR * current, repetitions or 0))
                extra.append("Or let the campaign size itself (repetitions only where the "
                             f"interval is still wider than {alt.describe()}): "
                             + launch_command(ds, None, flags))
        summary.to_csv(out / "summary.csv", index=False)
        open_cells = summary[summary["inconclusive"]]
        open_cells.to_csv(out / "cells.csv", index=False)
    if not rec.empty:
        rec.to_csv(out / "recovery.csv", index=False)
    page = _page(ds, summary, rec, keys, metrics, figures, command, threshold, confidence,
                 precision)
    if outcomes is not None:
        page.tables.insert(0, (f"Outcome classes: rate [{confidence:.0%} Clopper-Pearson "
                               "interval] among ok trials", outcomes))
        page.notes.insert(0, "Outcome classes of training trials (docs/training.md): each "
                          "trial is compared with the golden (fault-free) window of its model "
                          "and mitigation; masked, spike_and_recover, silent_degradation, "
                          "divergence, immediate_nonfinite. The loss curves come from the "
                          "step table (one row per trial and step); the dashed black line is "
                          "the golden trajectory of the plotted trials' model and mitigation "
                          "(the golden step table, when the dataset has one).")
    page.advice = (adaptive_lines(summary, rule[0]) if rule is not None else
                   advice_lines(summary, advice, primary, current, metric is not None)) + extra
    html_path = out / "index.html"
    html_path.write_text(render_html(page), encoding="utf-8")
    report = Report(out, html_path, figures, summary, rec, ds, repetitions, command,
                    primary=primary, advice=advice)
    report.text = _text(page, summary, keys, html_path)
    return report


def _page(ds: Dataset, summary: pd.DataFrame, rec: pd.DataFrame, keys: list[str],
          metrics: list[str], figures: list[Path], command: str | None, threshold: float,
          confidence: float, precision: float | None) -> Page:
    df = ds.frame
    name = ", ".join(map(str, df["campaign"].dropna().unique()[:3])) if "campaign" in df else ""
    page = Page(title=f"pytei_ray report{' — ' + name if name else ''}", meta=_meta(ds, df),
                figures=figures, command=command, failures=_failures(df))
    page.warnings += [f"skipped unreadable part {p}: {why}" for p, why in ds.skipped]
    if df.empty:
        page.warnings.append("the dataset has no result rows yet")
    if metrics and not summary.empty:
        page.findings = _findings(summary, metrics[0], keys)
    for m in metrics:
        rows = summary[summary["metric"] == m]
        way = "higher" if rows["higher_is_better"].iloc[0] else "lower"
        page.tables.append((f"Summary: {m} ({way} is better)", display_table(rows, keys)))
    if not rec.empty:
        page.tables.append(("Mitigation vs none (paired by trial)", recovery_table(rec)))
    if not summary.empty and summary["inconclusive"].any():
        more = summary[summary["inconclusive"]]
        order = {m: i for i, m in enumerate(metrics)}  # primary metric first
        more = more.iloc[more["metric"].map(order).argsort(kind="stable")]
        page.more_reps = display_table(more, [*keys, "metric"])[
            [*keys, "metric", "trials", "golden", "mean", ci_header(more["ci_level"]), "note"]]
        page.open_cells = [
            ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in zip([*keys, "metric"], r[:-1])) + f": {r[-1]}"
            for r in more[[*keys, "metric", "reason"]].itertuples(index=False)]
    level = (ci_header(summary["ci_level"]) if not summary.empty else
             f"{100 * confidence:.3g}% CI").removesuffix(" CI")
    page.notes = [
        f"SDC (silent data corruption): an ok trial whose metric is worse than its golden "
        f"metric by more than {threshold:.2%} relative (non-finite metrics count as SDC); "
        "rate = (1 − p0) × share of the faulted trials, with an exact Clopper-Pearson interval "
        "(adaptive campaigns: a time-uniform confidence sequence), at the level of its table.",
        "Mean metric: p0·golden + (1 − p0)·mean of the faulted trials, p0 being the known "
        "probability that a trial samples no fault (0 when the rows do not record it). Bounded "
        "metrics ([0, 1] for accuracy/AUC/precision/recall/F1/rates, or as the campaign "
        "declared): the interval of the faulted-trial mean is a betting confidence sequence "
        "(Waudby-Smith & Ramdas 2024), valid for every outcome distribution and at every "
        "number of trials, so adaptive campaigns need no correction for their looks; a "
        "non-finite metric counts as the range's worst value. Unbounded metrics: mean and "
        "Student-t interval over the FINITE trials ('mean over' column), non-finite ones "
        "counted as a rate; 'no finite-sample guarantee' marks heavy tails: read the median "
        f"and the SDC rate. Intervals at {level} (the headers say so; ci_level in "
        "summary.csv). Formulas: docs/report.md. Loss = golden − metric (positive = worse; "
        "reversed for lower-is-better metrics).",
        "A cell needs more repetitions when its CI contains the SDC threshold level (one "
        f"cannot tell whether the mean dropped by more than {threshold:.2%})"
        + (f", when its CI half-width exceeds {precision:.2%} of golden" if precision else "")
        + ", or when it has fewer than 2 trials. One whose estimated need "
        f"exceeds {ADVICE_FACTOR}× its trials is at the threshold (its mean about on the SDC "
        "level) or at the floor (agreeing trials would need that many too) and does not drive "
        "the launcher command.",
        "Mitigation vs none pairs the trials with the same faults (model, target, error model, "
        "BER, repetition): difference = p0-stratified mean of (mitigated − unmitigated) metric "
        "(positive = the mitigation helps), recovery = difference / mean loss of the "
        "unmitigated trials (1 = fully recovered, 0 = no help); an unmitigated trial with a "
        "non-finite metric counts as a catastrophe. The recovery interval combines the two "
        "intervals at half the error rate each (Bonferroni), so it holds at the stated level; "
        "it is unbounded while a zero loss cannot be excluded. The plot clips recovery to "
        "[−1, 2] and marks the points beyond with triangles.",
        "Failed trials (status ≠ ok) carry no metric and are counted apart.",
    ]
    if "subsampled" in summary and (summary["subsampled"] > 0).any():
        page.notes.append(
            "Subsampled scoring: trials with n_scored were scored on that many evaluation "
            "samples drawn at random for the trial (the same for every mitigation of a point), "
            "an unbiased estimate of the metric on all of them for means of per-sample values "
            "and AUC. Means, their intervals and the paired comparisons hold; a per-trial SDC "
            "verdict would be sampling noise, so cells with such trials have no SDC rate (–) "
            "and their quartiles are of the estimates (docs/campaign.md).")
    return page


def _findings(summary: pd.DataFrame, metric: str, keys: list[str]) -> tuple[str, pd.DataFrame]:
    """The headline table: mean ``metric`` by BER (rows) and mitigation (columns), averaged
    over models (and any other cell factor but target / error model when they vary)."""
    rows = summary[summary["metric"] == metric]
    index = [k for k in ("target", "error_model") if k in keys and rows[k].nunique() > 1]
    index.append("ber")
    cols = "mitigation" if "mitigation" in rows else None
    if cols is None or "ber" not in rows:
        return f"{metric}: mean", pd.DataFrame()
    table = rows.pivot_table(index=index, columns=cols, values="mean", aggfunc="mean")
    golden = rows.groupby(index)["golden"].mean()
    table.insert(0, "golden", golden)
    shown = table.map(lambda v: f"{v:.4g}" if pd.notna(v) else "–").reset_index()
    shown["ber"] = shown["ber"].map(lambda b: f"{b:.3g}")
    way = "higher" if rows["higher_is_better"].iloc[0] else "lower"
    models = f" over {rows['model'].nunique()} model(s)" if "model" in rows else ""
    return f"{metric} by BER and mitigation (mean{models}; {way} is better)", shown


def _text(page: Page, summary: pd.DataFrame, keys: list[str], html_path: Path,
          max_rows: int = 40) -> str:
    lines = [page.title, *(f"  {k}: {v}" for k, v in page.meta)]
    lines += [f"  WARNING: {w}" for w in page.warnings]
    for heading, frame in page.tables:
        if not heading.startswith("Summary"):
            continue
        lines += ["", heading, frame.head(max_rows).to_string(index=False)]
        if len(frame) > max_rows:
            lines.append(f"  ... {len(frame) - max_rows} more rows in summary.csv / the page")
    if page.more_reps is not None and not page.more_reps.empty:
        lines += ["", f"{len(page.more_reps)} cell(s) cannot be concluded yet (CI too wide, or "
                  "no finite metric; see the note column)."]
        lines += [f"  {a}" for a in page.advice]
        if page.command:
            lines += ["To add repetitions:", *(f"  {c}" for c in page.command.splitlines())]
    elif not summary.empty:
        lines += ["", "Every cell is conclusive at the chosen precision."]
    lines += ["", f"Report: {html_path}"]
    return "\n".join(lines)
