"""Report figures, drawn from summary tables into PNG files (matplotlib, Agg, no display).

Every function takes an already aggregated table (see :mod:`pytei_ray.report.summary`), writes
PNGs into ``out_dir`` and returns their paths. Figures are built with :class:`Figure` directly
(no pyplot global state), so drawing works in threads and on machines without a display.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from pytei_ray.columns import POINT_FACTORS

from .summary import BASELINE_NAMES

__all__ = ["heavy_tailed", "plot_bits", "plot_metric_vs_ber", "plot_recovery", "slug"]

DPI = 100
PANEL = (4.6, 3.4)
RECOVERY_YLIM = (-1.0, 2.0)  # recovery beyond this is drawn as a triangle on the edge
HEAVY_SPAN = 1e3  # a metric whose values reach this many times its golden level is heavy-tailed


def slug(*parts: object) -> str:
    """File-name-safe join of ``parts``: ``slug("auc", "DCN v2") == "auc_DCN_v2"``."""
    text = "_".join(str(p) for p in parts if p is not None and str(p) != "")
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "plot"


def _grid(n: int, ncols: int = 3) -> tuple[Figure, list[Axes]]:
    cols = max(1, min(ncols, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(PANEL[0] * cols, PANEL[1] * rows + 0.4), dpi=DPI,
                 layout="constrained")  # leaves room for the suptitle above the panels
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    return path


def heavy_tailed(values: np.ndarray, golden: np.ndarray, span: float = HEAVY_SPAN) -> bool:
    """Whether a metric's values (means, CI bounds) span too many orders of magnitude for a
    linear axis: the largest |value| exceeds ``span`` times the typical |golden| (e.g. a log loss
    of 1e36 against a golden 0.5: every line would look flat)."""
    values = np.abs(np.asarray(values, float))
    values = values[np.isfinite(values)]
    golden = np.abs(np.asarray(golden, float))
    golden = golden[np.isfinite(golden) & (golden > 0)]
    if not values.size:
        return False
    ref = float(np.median(golden)) if golden.size else float(np.median(values[values > 0])) \
        if (values > 0).any() else 0.0
    return ref > 0 and float(values.max()) > span * ref


def _colors(values: object) -> dict[str, object]:
    """A stable color per mitigation across panels; the unmitigated baseline in dark gray."""
    palette = [c for i, c in enumerate(f"C{j}" for j in range(10)) if i != 7]
    names = sorted({str(v) for v in values})
    others = [n for n in names if n.strip().lower() not in BASELINE_NAMES]
    colors: dict[str, object] = {n: "0.15" for n in names if n not in others}
    colors.update({n: palette[i % len(palette)] for i, n in enumerate(others)})
    return colors


def _band(ax: Axes, x: np.ndarray, mean: np.ndarray, lo: np.ndarray, hi: np.ndarray,
          label: str, color: object = None) -> None:
    line = ax.plot(x, mean, marker="o", ms=4, label=label, color=color)[0]
    lo = np.where(np.isfinite(lo), lo, mean)
    hi = np.where(np.isfinite(hi), hi, mean)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.18, linewidth=0)


def _log_x(ax: Axes, bers: np.ndarray) -> None:
    """Log BER axis with explicit limits (works even when no point is finite)."""
    bers = bers[np.isfinite(bers) & (bers > 0)]
    lo, hi = (bers.min(), bers.max()) if bers.size else (1e-9, 1e-2)
    ax.set_xscale("log")
    ax.set_xlim(lo / 2.0, hi * 2.0)
    # the BERs are decades: labelled decade ticks only (a log axis's 8 minor ticks per decade
    # made tick layout ~40% of a report with ~100 panels)
    ax.xaxis.set_minor_locator(NullLocator())
    if not any(np.isfinite(line.get_ydata()).any() for line in ax.get_lines()
               if line.get_label() and not line.get_label().startswith(("golden", "_"))):
        ax.text(0.5, 0.5, "no finite value\n(failed or non-finite trials)", ha="center",
                va="center", transform=ax.transAxes, color="0.4")


def _log_y(ax: Axes, values: np.ndarray) -> None:
    """Log y axis; symlog (linear near 0) when some value is not positive."""
    values = values[np.isfinite(values)]
    positive = values[values > 0]
    if values.size and (values > 0).all():
        ax.set_yscale("log")
    elif positive.size:
        ax.set_yscale("symlog", linthresh=float(np.min(positive)))


def _direction_note(table: pd.DataFrame) -> str:
    if "higher_is_better" not in table or table.empty:
        return ""
    return " (higher is better)" if bool(table["higher_is_better"].iloc[0]) else \
        " (lower is better)"


def _level(table: pd.DataFrame, confidence: float) -> str:
    """The level of the table's intervals as shown (its ``ci_level``), e.g. ``"95%"``."""
    found = sorted(set(table["ci_level"].dropna())) if "ci_level" in table else [confidence]
    return "/".join(f"{100 * v:.3g}%" for v in found) if found else f"{100 * confidence:.3g}%"


def plot_metric_vs_ber(
    summary: pd.DataFrame, metric: str, out_dir: str | Path, confidence: float = 0.95
) -> list[Path]:
    """Metric vs BER (log axis): one figure per model (and error model), a panel per target,
    one line per mitigation with its CI band, the golden level dashed.

    Args:
        summary: :func:`~pytei_ray.report.summarize` rows of ``metric`` by
            (model, target, [error_model], mitigation, ber).
        metric: Metric name (for titles and file names).
        out_dir: Folder for the PNGs.
        confidence: Level of the bands for the legend when the rows have no ``ci_level``
            (the level the intervals were computed at, which the legend states).

    Returns:
        Paths of the PNGs written (BER 0 cells cannot sit on a log axis and are not drawn, and
        a model / error model with a single BER has no curve: no figure).
    """
    table = summary[(summary["metric"] == metric) & (summary["ber"] > 0)]
    figs = ["model", "error_model"] if "error_model" in table else ["model"]
    colors = _colors(table["mitigation"])
    # heavy tails (a few exploded trials): median and interquartile band on a log axis
    heavy = {"median", "q25", "q75"} <= set(table) and heavy_tailed(
        table[["mean", "ci_low", "ci_high"]].to_numpy(), table["golden"].to_numpy())
    center, low, high = ("median", "q25", "q75") if heavy else ("mean", "ci_low", "ci_high")
    band_title = "median, IQR band" if heavy else f"mean, {_level(table, confidence)} CI band"
    paths = []
    for key, sub in table.groupby(figs, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        if sub["ber"].nunique() < 2:  # one BER (e.g. a one-fault bit sweep): no curve to draw
            continue
        targets = list(dict.fromkeys(sub["target"])) if "target" in sub else [None]
        fig, axes = _grid(len(targets))
        for ax, target in zip(axes, targets):
            panel = sub if target is None else sub[sub["target"] == target]
            goldens = panel.groupby("mitigation")["golden"].mean().dropna()
            for mit, line in panel.groupby("mitigation", sort=True):
                line = line.sort_values("ber")
                _band(ax, line["ber"].to_numpy(float), line[center].to_numpy(float),
                      line[low].to_numpy(float), line[high].to_numpy(float), str(mit),
                      colors[str(mit)])
            if goldens.empty:
                pass
            elif np.ptp(goldens.to_numpy(float)) <= 1e-6 * max(1.0, abs(goldens.iloc[0])):
                ax.axhline(goldens.iloc[0], color="0.3", ls="--", lw=1, label="golden")
            else:
                for mit, gold in goldens.items():
                    ax.axhline(gold, color="0.5", ls=":", lw=1, label=f"golden ({mit})")
            _log_x(ax, panel["ber"].to_numpy(float))
            log = heavy and heavy_tailed(panel[[center, low, high]].to_numpy(),
                                         panel["golden"].to_numpy())
            if log:  # only the panels that span orders of magnitude
                _log_y(ax, panel[[center, low, high, "golden"]].to_numpy(float))
            ax.set_xlabel("bit error rate")
            ax.set_ylabel(f"{metric} ({center}{', log scale' if log else ''})")
            ax.set_title(f"target: {target}" if target is not None else "")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7, title=band_title, title_fontsize=7)
        note = ("\nheavy-tailed: median and interquartile range, log axis where values span "
                "orders of magnitude (the mean is dominated by a few exploded trials; the tables "
                "have it)") if heavy else ""
        fig.suptitle(f"{metric}{_direction_note(sub)} vs BER — "
                     + ", ".join(str(k) for k in key) + note)
        paths.append(_save(fig, Path(out_dir) / f"{slug(metric, 'vs_ber', *key)}.png"))
    return paths


def plot_recovery(rec: pd.DataFrame, metric: str, out_dir: str | Path) -> list[Path]:
    """Mean paired recovery vs BER, a panel per (model, target[, error_model]), a line per
    mitigation with its CI band; 0 = no help, 1 = fully recovered.

    Args:
        rec: :func:`~pytei_ray.report.recovery` rows.
        metric: Metric to draw.
        out_dir: Folder for the PNG.

    Returns:
        ``[path]``, or ``[]`` when there is nothing to draw.
    """
    table = rec[(rec["metric"] == metric) & (rec["ber"] > 0)] if not rec.empty else rec
    if table.empty:
        return []
    panels = [c for c in POINT_FACTORS[:3] if c in table]  # one panel per point but its BER
    groups = list(table.groupby(panels, sort=True, dropna=False))
    colors = _colors(table["mitigation"])
    fig, axes = _grid(len(groups))
    y_lo, y_hi = RECOVERY_YLIM
    clipped = False
    for ax, (key, sub) in zip(axes, groups):
        key = key if isinstance(key, tuple) else (key,)
        for mit, line in sub.groupby("mitigation", sort=True):
            line = line.sort_values("ber")
            x, mean = line["ber"].to_numpy(float), line["mean"].to_numpy(float)
            shown = np.clip(mean, y_lo, y_hi)  # the line stays on the panel...
            _band(ax, x, shown, np.clip(line["ci_low"].to_numpy(float), y_lo, y_hi),
                  np.clip(line["ci_high"].to_numpy(float), y_lo, y_hi), str(mit),
                  colors[str(mit)])
            for side, marker in ((mean > y_hi, "^"), (mean < y_lo, "v")):  # ...and says so
                if side.any():
                    clipped = True
                    ax.plot(x[side], shown[side], ls="none", marker=marker, ms=9,
                            color=colors[str(mit)], markeredgecolor="k", label="_clipped")
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.axhline(1.0, color="0.3", ls="--", lw=0.8)
        ax.set_ylim(y_lo - 0.05, y_hi + 0.05)
        _log_x(ax, sub["ber"].to_numpy(float))
        ax.set_xlabel("bit error rate")
        ax.set_ylabel(f"fraction of lost {metric} recovered")
        ax.set_title(" / ".join(str(k) for k in key), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"Mitigation recovery of {metric}: mean paired difference / mean loss "
                 f"without mitigation, {_level(table, 0.95)} CI band (paired by trial)"
                 + (f"\n▲/▼: mean beyond the [{y_lo:g}, {y_hi:g}] axis (exact values in the "
                    "table)" if clipped else ""))
    return [_save(fig, Path(out_dir) / f"{slug(metric, 'recovery')}.png")]


def plot_bits(bits: pd.DataFrame, metric: str, out_dir: str | Path,
              bit: str = "bit", panels: Sequence[str] = ("model",)) -> list[Path]:
    """Vulnerability by flipped bit: SDC rate per bit with its interval band (the method and level
    named in the title), a panel per model, a line per mitigation.

    Args:
        bits: :func:`~pytei_ray.report.summarize` rows of ``metric`` grouped by
            (model, mitigation, ``bit``).
        metric: Metric to draw.
        out_dir: Folder for the PNG.
        bit: The bit column.
        panels: Columns that split panels.

    Returns:
        ``[path]``, or ``[]`` when there is nothing to draw.
    """
    table = bits[bits["metric"] == metric]
    if table.empty:
        return []
    numeric = pd.api.types.is_numeric_dtype(table[bit])
    order = sorted(table[bit].unique()) if numeric else list(dict.fromkeys(table[bit]))
    cols = [c for c in panels if c in table]
    groups = list(table.groupby(cols, sort=True)) if cols else [("all", table)]
    fig, axes = _grid(len(groups), ncols=2)
    colors = _colors(table["mitigation"] if "mitigation" in table else [""])
    for ax, (key, sub) in zip(axes, groups):
        for mit, line in (sub.groupby("mitigation", sort=True) if "mitigation" in sub
                          else [("", sub)]):
            line = line.set_index(bit).reindex(order)
            x = np.asarray(order, float) if numeric else np.arange(len(order), dtype=float)
            _band(ax, x, line["sdc_rate"].to_numpy(float), line["sdc_low"].to_numpy(float),
                  line["sdc_high"].to_numpy(float), str(mit), colors[str(mit)])
        if not numeric:
            ax.set_xticks(np.arange(len(order)), [str(b) for b in order], rotation=60,
                          fontsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"{bit} (0 = least significant)" if numeric else bit)
        ax.set_ylabel("SDC rate")
        ax.set_title(" / ".join(map(str, key)) if isinstance(key, tuple) else str(key))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.set_size_inches(max(fig.get_size_inches()[0], 7.5), fig.get_size_inches()[1])
    method = {"clopper-pearson": "Clopper-Pearson", "betting-cs": "confidence-sequence"}.get(
        str(table["sdc_method"].iloc[0]), "") if "sdc_method" in table else "Clopper-Pearson"
    fig.suptitle(f"Vulnerability by {bit}: SDC rate of {metric} ({_level(table, 0.95)} "
                 f"{method} band)")
    return [_save(fig, Path(out_dir) / f"{slug(metric, 'by', bit)}.png")]
