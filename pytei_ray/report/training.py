"""The training part of a report: outcome-class rates with exact intervals, and loss curves.

A dataset of training trials (rows with one 0/1 column per outcome class, and the step table
of :mod:`pytei_ray.storage`) gets a table of outcome-class rates by site x rate x mitigation
(Clopper-Pearson intervals: exact, at least the nominal coverage, also at 0 or n events) and a
figure of the training loss of a few sample trials per class, read from the step table.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pytei_ray.columns import OUTCOME_CLASSES
from pytei_ray.stats import clopper_pearson
from pytei_ray.storage.layout import STEPS_DIR, join, resolve_location

from .data import Dataset

__all__ = ["is_training", "loss_curves", "outcome_table", "read_steps", "training_metrics"]

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


def read_steps(path: str) -> pd.DataFrame | None:
    """The step table of a results dataset (None when it has none)."""
    fs, root = resolve_location(path)
    directory = join(root, STEPS_DIR)
    if fs.get_file_info(directory).type != pafs.FileType.Directory:
        return None
    infos = fs.get_file_info(pafs.FileSelector(directory))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File
                   and not i.base_name.startswith("."))
    if not files:
        return None
    return pd.concat([pq.read_table(f, filesystem=fs).to_pandas() for f in files],
                     ignore_index=True)


def loss_curves(ds: Dataset, steps: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One panel per outcome class seen: the training loss per step of up to
    :data:`CURVES_PER_CLASS` sample trials (the first trial ids of the class, so the same
    trials every time), log scale; non-finite losses are gaps."""
    rows = ds.frame[ds.frame["status"] == "ok"]
    classes = [c for c in OUTCOME_CLASSES if (rows[c] == 1).any()]
    if not classes:
        return []
    fig = Figure(figsize=(4.2 * len(classes), 3.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(classes), squeeze=False).ravel()
    for ax, c in zip(axes, classes):
        ids = sorted(rows.loc[rows[c] == 1, "trial_id"])[:CURVES_PER_CLASS]
        for tid in ids:
            s = steps[steps["trial_id"] == tid].sort_values("step")
            r = rows[rows["trial_id"] == tid].iloc[0]
            loss = [v if math.isfinite(v) and v > 0 else float("nan") for v in s["loss"]]
            label = " ".join(str(r[k]) for k in ("target", "mitigation") if k in r)
            ax.plot(s["step"], loss, marker=".", label=label)
        ax.set_yscale("log")
        ax.set_title(f"{c} ({int((rows[c] == 1).sum())} trials)")
        ax.set_xlabel("step of the window")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=6)
    fig.suptitle("Training loss of sample trials per outcome class")
    path = out_dir / "loss_curves.png"
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight", pad_inches=0.1)
    return [path]
