"""What the report advises: the launcher command that settles the open cells, and why.

The command extends the stored campaign (``--extend --repetitions N``, or ``--precision`` for
an adaptive campaign) with the job file and parameters the manifest recorded; the lines say
which metric drives it and which cells more repetitions will not settle cheaply.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pandas as pd

from pytei_ray.columns import PLURAL

from ..stats import Precision
from .data import Dataset
from .summary import ADVICE_FACTOR

__all__ = ["adaptive_lines", "advice_lines", "campaign_order", "expected_trials",
           "launch_command"]


def _spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest.get("spec")
    return spec if isinstance(spec, dict) else manifest


def job_path(ds: Dataset) -> str | None:
    """The job file to relaunch: the manifest's path when it exists here, else the stored copy."""
    job = ds.manifest.get("job")
    path = job.get("path") if isinstance(job, dict) else job
    if isinstance(path, str) and (Path(path).is_file() or ds.job_copy is None):
        return path
    return ds.job_copy


def expected_trials(manifest: dict[str, Any]) -> int | None:
    """Trials of the full grid, from the manifest's counts or its spec's factor levels."""
    for holder in (manifest, _spec(manifest)):
        for key in ("n_trials", "total_trials", "num_trials"):
            value = holder.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    spec = _spec(manifest)
    try:
        n = int(spec["repetitions"])
        for factor in PLURAL.values():
            n *= len(spec[factor])
    except (KeyError, TypeError, ValueError):
        return None
    return n


def launch_command(ds: Dataset, reps: int | None, flags: str | None = None) -> str:
    """The launcher call that extends the stored campaign to ``reps`` repetitions (or, with
    ``flags``, to a precision target: ``--precision auc=1% --max-reps 320``).

    ``--extend --repetitions N`` works for any job: the launcher replaces the campaign's
    repetitions after the job builds it, keeping the job parameters the campaign was made with
    (a changed parameter would be a different campaign), and records the count in the manifest.
    """
    job = job_path(ds)
    spec_params = _spec(ds.manifest).get("params")
    job_entry = ds.manifest.get("job")
    params = job_entry.get("params") if isinstance(job_entry, dict) else None
    params = params if isinstance(params, dict) else spec_params
    params = params if isinstance(params, dict) else {}
    sets = [f"{k}={v}" if isinstance(v, str) else f"{k}={v!r}" for k, v in params.items()]
    words = ["python -m pytei_ray.launch", shlex.quote(job) if job else "<job.py>",
             "--out", shlex.quote(ds.path), "--extend",
             *(flags.split() if flags else ["--repetitions", str(reps)]),
             *(f"--set {shlex.quote(s)}" for s in sets)]
    return " ".join(words)


def campaign_order(found: list[str], manifest: dict[str, Any]) -> list[str]:
    """Metric columns in the campaign's order (the manifest's ``metrics`` list) when known."""
    listed = manifest.get("metrics") or _spec(manifest).get("metrics")
    if isinstance(listed, dict):
        listed = list(listed)
    if not isinstance(listed, list):
        return found
    first = [m for m in listed if isinstance(m, str) and m in found]
    return first + [m for m in found if m not in first]


def advice_lines(summary: pd.DataFrame, advice: dict[str, int | None], primary: str | None,
                  current: int | None, chosen: bool) -> list[str]:
    """Per-metric relaunch advice, the primary metric first, and the rule behind it."""
    if summary.empty or primary is None or not summary["inconclusive"].any():
        return []
    now = f"{current}" if current is not None else "the current count"
    why = "the first --metric" if chosen else "the campaign's first metric"
    lines = [
        f"Rule: the command is driven by the primary metric ({primary}: {why}). A cell whose "
        f"estimated need exceeds {ADVICE_FACTOR}× its current trials is at the threshold (its "
        "mean sits about on the SDC level) or at the floor (trials that all agreed would need "
        "that many too: honest intervals exclude a rare collapse only slowly), so more "
        "repetitions will not settle it cheaply; it is listed but does not drive the command. "
        "N = the largest need of the other inconclusive "
        f"cells, at least one more than now ({now}) and at most {ADVICE_FACTOR}× now."
    ]
    for m, n in advice.items():
        rows = summary[(summary["metric"] == m) & summary["inconclusive"]]
        if rows.empty:
            lines.append(f"{m}{' (primary)' if m == primary else ''}: every cell is conclusive.")
            continue
        at = int(rows["at_threshold"].sum())
        low = int(rows["at_floor"].sum()) if "at_floor" in rows else 0
        dead = int((rows["reps_needed"] <= 0).sum())
        settle = len(rows) - at - low - dead
        text = f"{m}{' (primary)' if m == primary else ''}: {len(rows)} inconclusive cell(s): "
        text += f"{settle} settle with {n} repetitions" if n else "none can be settled cheaply"
        text += f", {at} at the threshold" + (f", {low} at the floor" if low else "") + (
            f", {dead} without a finite metric" if dead else "")
        if m != primary and n:
            text += f" (not in the command; --metric {m} leads with it)"
        lines.append(text + ".")
    return lines


def adaptive_lines(summary: pd.DataFrame, target: Precision) -> list[str]:
    """Advice of an adaptive campaign: its rule, and the cells still open or at the cap."""
    if summary.empty or not summary["inconclusive"].any():
        return []
    rows = summary[(summary["metric"] == target.metric) & summary["inconclusive"]]
    at_cap = int(rows["at_cap"].sum())
    lines = [f"Rule (adaptive campaign): {target.describe()}; a bounded metric's interval is "
             "a confidence sequence, valid at every look, so stopping early keeps the coverage "
             "(an unbounded metric's t interval is computed at the Bonferroni-corrected look "
             "level)."]
    if len(rows):
        lines.append(f"{target.metric}: {len(rows)} cell(s) not yet conclusive, {at_cap} of them "
                     f"at the cap of {target.max_reps} repetitions"
                     + (f" (the command doubles it to {2 * target.max_reps})." if at_cap
                        else " (the command resumes the campaign)."))
    return lines
