"""The training part of a report: outcome-class rates with exact intervals, and loss curves.

A dataset of training trials (rows with one 0/1 column per outcome class, and the step table
of :mod:`pytei_ray.storage`) gets a table of outcome-class rates by site x rate x mitigation
(Clopper-Pearson intervals: exact, at least the nominal coverage, also at 0 or n events) and a
figure of the training loss of a few sample trials per class, read from the step table, with
the golden trajectory of their (model, mitigation) from the golden step table when the dataset
has one.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pytei_ray.columns import OUTCOME_CLASSES, golden_trial_id
from pytei_ray.stats import clopper_pearson
from pytei_ray.storage import ResultsStore

from .data import Dataset

__all__ = ["is_training", "loss_curves", "loss_figure", "outcome_table", "read_golden_steps",
           "read_steps", "training_metrics"]

#: Sample trials drawn per class in the loss-curve figure.
CURVES_PER_CLASS = 4
#: Grouping columns of the outcome table, in order, where the rows have them (a job's
#: ``Level`` attributes ``site``, ``timing``, ``bits``, ``format`` first; else the factors).
GROUP_BY = ("format", "site", "timing", "bits", "ber", "mitigation")


def is_training(frame: pd.DataFrame) -> bool:
    """Whether the rows are training trials (they carry every outcome-class column)."""
    return not frame.empty and all(c in frame for c in OUTCOME_CLASSES)


def training_metrics(metrics: list[str], rule_metric: str | None) -> list[str]:
    """The metrics the generic summary reports for a training dataset: the first (the
    validation loss) and the stopping rule's, not every 0/1 outcome column."""
    keep = [m for m in metrics if m not in OUTCOME_CLASSES][:1]
    if rule_metric is not None and rule_metric in metrics and rule_metric not in keep:
        keep.append(rule_metric)
    return keep or metrics


def _keys(frame: pd.DataFrame) -> list[str]:
    keys = [k for k in GROUP_BY if k in frame and frame[k].notna().any()]
    if "site" not in keys and "target" in frame:
        keys.insert(0, "target")
    if "bits" not in keys and "error_model" in frame:
        keys.insert(keys.index("ber") if "ber" in keys else len(keys), "error_model")
    return keys


def outcome_table(frame: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per group (site x timing x bits x rate x mitigation, where the rows have them): ok
    trials, then per class its count and rate with a Clopper-Pearson interval
    (``"0.25 [0.03, 0.65]"``)."""
    ok = frame[frame["status"] == "ok"]
    keys = _keys(ok)
    out = []
    for values, group in ok.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        n = len(group)
        row["trials"] = n
        for c in OUTCOME_CLASSES:
            k = int(group[c].sum())
            lo, hi = clopper_pearson(k, n, confidence)
            row[c] = f"{k / n:.2f} [{float(lo):.2f}, {float(hi):.2f}]" if n else ""
        out.append(row)
    return pd.DataFrame(out)


def _frame(table) -> pd.DataFrame | None:
    return table.to_pandas() if table.num_rows else None


def read_steps(path: str) -> pd.DataFrame | None:
    """The step table of a results dataset (None when it has none): the store's
    :meth:`~pytei_ray.storage.ResultsStore.read_steps` as a DataFrame."""
    return _frame(ResultsStore(path).read_steps())


def read_golden_steps(path: str) -> pd.DataFrame | None:
    """The golden step table of a results dataset: the golden (fault-free) trajectory of each
    (model, mitigation), ``trial_id`` ``golden/<model>/<mitigation>``, one row per step (the
    copies several workers stored are dropped, by the store's
    :meth:`~pytei_ray.storage.ResultsStore.read_golden_steps`). None when the dataset has none
    (older datasets)."""
    return _frame(ResultsStore(path).read_golden_steps())


def _finite_loss(values: pd.Series) -> list[float]:
    return [v if math.isfinite(v) and v > 0 else float("nan") for v in values]


def loss_figure(ds: Dataset, steps: pd.DataFrame, golden: pd.DataFrame | None = None
                ) -> Figure | None:
    """The figure of :func:`loss_curves` (None when no ok trial has a class)."""
    rows = ds.frame[ds.frame["status"] == "ok"]
    classes = [c for c in OUTCOME_CLASSES if (rows[c] == 1).any()]
    if not classes:
        return None
    fig = Figure(figsize=(4.2 * len(classes), 3.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(classes), squeeze=False).ravel()
    for ax, c in zip(axes, classes):
        ids = sorted(rows.loc[rows[c] == 1, "trial_id"])[:CURVES_PER_CLASS]
        pairs: dict[tuple[str, str], None] = {}
        for tid in ids:
            s = steps[steps["trial_id"] == tid].sort_values("step")
            r = rows[rows["trial_id"] == tid].iloc[0]
            label = " ".join(str(r[k]) for k in ("target", "mitigation") if k in r)
            ax.plot(s["step"], _finite_loss(s["loss"]), marker=".", label=label)
            pairs[(str(r["model"]), str(r["mitigation"]))] = None
        for model, mitigation in pairs if golden is not None else ():
            g = golden[golden["trial_id"] == golden_trial_id(model, mitigation)]
            if g.empty:
                continue
            g = g.sort_values("step")
            label = "golden" if len(pairs) == 1 else f"golden {model} {mitigation}"
            ax.plot(g["step"], _finite_loss(g["loss"]), linestyle="--", color="black",
                    linewidth=1.0, label=label)
        ax.set_yscale("log")
        ax.set_title(f"{c} ({int((rows[c] == 1).sum())} trials)")
        ax.set_xlabel("step of the window")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=6)
    fig.suptitle("Training loss of sample trials per outcome class")
    return fig


def loss_curves(ds: Dataset, steps: pd.DataFrame, out_dir: Path,
                golden: pd.DataFrame | None = None) -> list[Path]:
    """One panel per outcome class seen: the training loss per step of up to
    :data:`CURVES_PER_CLASS` sample trials (the first trial ids of the class, so the same
    trials every time), log scale; non-finite losses are gaps. With ``golden`` (the golden
    step table, :func:`read_golden_steps`), the golden trajectory of each plotted trial's
    (model, mitigation) is a dashed black line labelled "golden" (with the pair when a panel
    has several)."""
    fig = loss_figure(ds, steps, golden)
    if fig is None:
        return []
    path = out_dir / "loss_curves.png"
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight", pad_inches=0.1)
    return [path]
