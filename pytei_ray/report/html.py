"""Self-contained HTML page and terminal text for a campaign report.

The page embeds every PNG as a base64 data URI (it opens from disk with no server and no
network) and links each image to its PNG file next to the page.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["Page", "ci_header", "display_table", "recovery_table", "render_html"]

OPEN_LINES = 12  # open cells listed on the page; the rest are in cells.csv

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}.meta{color:#555}code,pre{background:#f4f4f4;border-radius:3px;padding:.1em .3em}
pre{padding:.6em;overflow-x:auto}table{border-collapse:collapse;font-size:12px;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#fafafa}
figure{display:inline-block;margin:.5em;vertical-align:top}figure img{max-width:100%;
border:1px solid #eee}figcaption{font-size:12px;color:#555}.warn{color:#a15c00}
.ok{color:#2a7a2a}.scroll{overflow-x:auto}
"""


@dataclass
class Page:
    """Everything the page shows; built by :func:`pytei_ray.report.write_report`.

    Attributes:
        title: Page title.
        meta: ``(label, value)`` lines of the header (dataset, trials, parts, progress...).
        warnings: Lines shown highlighted (skipped parts, failures).
        notes: Definitions used (threshold, intervals, recovery formula).
        tables: ``(heading, display frame)`` in order.
        figures: PNG paths in order.
        more_reps: Display frame of the inconclusive cells, or None.
        command: Launcher command that would add the repetitions, or None.
        advice: Lines explaining the advice (rule, per-metric counts).
        failures: Display frame of the distinct error messages, or None.
        findings: ``(heading, table)`` of the headline table (primary metric by BER and
            mitigation), shown right after the plots.
        open_cells: One line per cell not yet conclusive (cell, metric: reason).
    """

    title: str
    meta: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    more_reps: pd.DataFrame | None = None
    command: str | None = None
    failures: pd.DataFrame | None = None
    advice: list[str] = field(default_factory=list)
    findings: tuple[str, pd.DataFrame] | None = None
    open_cells: list[str] = field(default_factory=list)


def _num(x: object, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:.1f}%"


def ci_header(levels: Sequence[float] | pd.Series) -> str:
    """``"95% CI"``: the column header naming the level of the intervals it holds."""
    found = sorted({float(v) for v in levels if v == v})
    if len(found) == 1:
        return f"{100 * found[0]:.3g}% CI"
    return "CI (" + ", ".join(f"{100 * v:.3g}%" for v in found) + ")"


def display_table(summary: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Human-readable version of :func:`~pytei_ray.report.summarize` rows (strings, CIs as
    ``[low, high]`` under a header that states their level), used by the page and the
    terminal."""
    out = summary[list(keys)].copy()
    if "ber" in out:
        out["ber"] = out["ber"].map(lambda b: f"{b:.3g}")
    out["trials"] = summary["trials"]
    out["failed"] = summary["failed"]
    out["golden"] = summary["golden"].map(_num)
    out["mean"] = summary["mean"].map(_num)
    level = ci_header(summary["ci_level"]) if "ci_level" in summary else "CI"
    out[level] = [f"[{_num(lo)}, {_num(hi)}]" for lo, hi in
                  zip(summary["ci_low"], summary["ci_high"])]
    if "mean_over" in summary and (summary["mean_over"] == "finite").any():
        out["mean over"] = summary["mean_over"].map(
            {"finite": "finite trials", "all": "all trials"})
    out["loss"] = summary["mean_loss"].map(lambda v: _num(v, 3))
    out["SDC"] = summary["sdc_rate"].map(_pct)
    out[f"SDC {level}"] = [f"[{_pct(lo)}, {_pct(hi)}]" for lo, hi in
                           zip(summary["sdc_low"], summary["sdc_high"])]
    out["non-finite"] = summary["nonfinite_rate"].map(_pct)
    at = summary["at_threshold"] if "at_threshold" in summary else [False] * len(summary)
    floor = summary["at_floor"] if "at_floor" in summary else [False] * len(summary)
    cap = summary["at_cap"] if "at_cap" in summary else [False] * len(summary)
    sure = summary["guaranteed"] if "guaranteed" in summary else [True] * len(summary)
    out["note"] = [("" if sure_ else "no finite-sample guarantee (heavy tails): read the median "
                    "and the SDC rate; ") + (
                   "" if not inc else "no finite metric" if not r else
                   "at the cap of the stopping rule" if capped else
                   f"at the threshold (~{r} reps): more will not settle it cheaply" if thr
                   else f"~{r} reps even if every trial agreed: the honest price of excluding "
                   "a rare collapse (docs/report.md)" if low
                   else f"needs ~{r} reps")
                   for inc, r, thr, low, capped, sure_ in zip(
                       summary["inconclusive"], summary["reps_needed"], at, floor, cap, sure)]
    out["note"] = out["note"].str.rstrip("; ")
    return out


def recovery_table(rec: pd.DataFrame) -> pd.DataFrame:
    """Human-readable :func:`~pytei_ray.report.recovery` rows: the paired difference and the
    recovered share with their intervals, under headers that state the level."""
    level = ci_header(rec["ci_level"])
    cols = [c for c in rec.columns if c not in (
        "delta", "delta_low", "delta_high", "lost", "mean", "ci_low", "ci_high", "ci_level",
        "method", "p0")]
    out = rec[cols].copy()
    if "ber" in out:
        out["ber"] = out["ber"].map(lambda b: f"{b:.3g}")
    out["difference"] = rec["delta"].map(lambda v: _num(v, 3))
    out[f"difference {level}"] = [f"[{_num(lo, 3)}, {_num(hi, 3)}]" for lo, hi in
                                  zip(rec["delta_low"], rec["delta_high"])]
    out["recovery"] = rec["mean"].map(lambda v: _num(v, 3))
    out[f"recovery {level}"] = [f"[{_num(lo, 3)}, {_num(hi, 3)}]" for lo, hi in
                                zip(rec["ci_low"], rec["ci_high"])]
    return out


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return (f'<figure><a href="{name}"><img src="data:image/png;base64,{data}" alt="{name}">'
            f'</a><figcaption><a href="{name}">{name}</a></figcaption></figure>')


def _table(frame: pd.DataFrame) -> str:
    return '<div class="scroll">' + frame.to_html(index=False, escape=True, na_rep="–",
                                                  border=0) + "</div>"


def render_html(page: Page) -> str:
    """The complete HTML document for ``page`` (inline CSS, embedded PNGs, no scripts)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(page.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(page.title)}</h1>",
        '<p class="meta">' + "<br>".join(f"<b>{e(k)}:</b> {e(v)}" for k, v in page.meta) + "</p>",
    ]
    parts += [f'<p class="warn">⚠ {e(w)}</p>' for w in page.warnings]
    parts.append("<h2>Plots</h2>")
    parts += [_img(p) for p in page.figures] or [
        "<p>No plots (no data yet, or plots turned off).</p>"]
    if page.findings is not None and not page.findings[1].empty:
        parts += [f"<h2>{e(page.findings[0])}</h2>", _table(page.findings[1])]
    for heading, frame in page.tables:
        if heading.startswith("Summary"):  # one row per cell: kept, but folded
            parts += [f"<details><summary><b>{e(heading)}</b> ({len(frame)} cells)</summary>",
                      _table(frame), "</details>"]
        else:
            parts += [f"<h2>{e(heading)}</h2>", _table(frame)]
    parts.append("<h2>Still open</h2>")
    if page.more_reps is None or page.more_reps.empty:
        parts.append('<p class="ok">Every cell is conclusive at the chosen precision.</p>')
    else:
        shown = page.open_cells[:OPEN_LINES]
        more = len(page.more_reps) - len(shown)
        per_metric = ""
        if "metric" in page.more_reps:
            counts = page.more_reps["metric"].value_counts(sort=False)
            per_metric = " (" + ", ".join(f"{m}: {n}" for m, n in counts.items()) + ")"
        parts.append(f"<p>{len(page.more_reps)} cell(s) open{e(per_metric)}: interval too wide, "
                     "or no finite metric" + (f"; the first {len(shown)}" if more > 0 else "") +
                     " — full list in cells.csv:</p>")
        parts.append("<ul>" + "".join(f"<li>{e(c)}</li>" for c in shown) + "</ul>")
        if page.advice:
            parts.append("<ul>" + "".join(f"<li>{e(a)}</li>" for a in page.advice) + "</ul>")
        if page.command:
            parts.append(f"<p>To continue the campaign:</p><pre>{e(page.command)}</pre>")
    if page.failures is not None and not page.failures.empty:
        parts += ["<h2>Failures</h2>", _table(page.failures)]
    if page.notes:
        parts += ["<h2>Definitions</h2><ul>"] + [f"<li>{e(n)}</li>" for n in page.notes] + [
            "</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts)
