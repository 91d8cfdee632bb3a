"""The report's loss curves with and without a golden step table (synthetic datasets, no run)."""

from __future__ import annotations

import pandas as pd

from pytei_ray.columns import OUTCOME_CLASSES, golden_trial_id
from pytei_ray.report import training
from pytei_ray.report.data import Dataset
from pytei_ray.storage import ResultsStore


def _rows() -> pd.DataFrame:
    rows = []
    for i, (mit, outcome) in enumerate([("none", "divergence"), ("skip", "divergence"),
                                        ("none", "masked")]):
        rows.append({"trial_id": f"{i:016x}", "model": "gpt", "target": "weights",
                     "mitigation": mit, "status": "ok",
                     **{c: float(c == outcome) for c in OUTCOME_CLASSES}})
    return pd.DataFrame(rows)


def _steps(ids, loss) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": t, "step": s, "loss": loss(t, s)}
                         for t in ids for s in range(4)])


def _dashed(fig):
    return {ax.get_title(): [(line.get_label(), list(line.get_ydata())) for line in ax.get_lines()
                             if line.get_linestyle() == "--" and line.get_color() == "black"]
            for ax in fig.axes}


def test_golden_trajectory_is_drawn_per_plotted_pair(tmp_path):
    rows = _rows()
    steps = _steps(rows["trial_id"], lambda t, s: 3.0 + s)
    pairs = [("gpt", "none"), ("gpt", "skip"), ("gpt", "rollback")]
    golden = _steps([golden_trial_id(*p) for p in pairs],
                    lambda t, s: {"none": 2.0, "skip": 1.5, "rollback": 1.0}[t.split("/")[2]]
                    - 0.1 * s)
    dashed = _dashed(training.loss_figure(Dataset(str(tmp_path), rows), steps, golden))
    # two pairs in the divergence panel: each its own golden line; one in the masked panel
    assert dashed["divergence (2 trials)"] == [
        ("golden gpt none", [2.0, 1.9, 1.8, 1.7]), ("golden gpt skip", [1.5, 1.4, 1.3, 1.2])]
    assert dashed["masked (1 trials)"] == [("golden", [2.0, 1.9, 1.8, 1.7])]
    assert training.loss_curves(Dataset(str(tmp_path), rows), steps, tmp_path, golden) == \
        [tmp_path / "loss_curves.png"]


def test_older_datasets_without_golden_steps_still_plot(tmp_path):
    rows = _rows()
    steps = _steps(rows["trial_id"], lambda t, s: 3.0 + s)
    ds = Dataset(str(tmp_path), rows)
    assert training.read_golden_steps(str(tmp_path)) is None
    assert all(v == [] for v in _dashed(training.loss_figure(ds, steps, None)).values())
    # a golden table without the plotted pairs draws nothing either
    other = _steps([golden_trial_id("vit", "none")], lambda t, s: 1.0)
    assert all(v == [] for v in _dashed(training.loss_figure(ds, steps, other)).values())
    assert training.loss_curves(ds, steps, tmp_path) == [tmp_path / "loss_curves.png"]


def test_read_golden_steps_drops_copies(tmp_path):
    store = ResultsStore(tmp_path / "res")
    full = {"grad_norm": 1.0, "update_norm": 0.1, "max_attention_logit": 2.0,
            "nonfinite_grads": 0, "nonfinite_params": 0, "action": "apply", "attempts": 1,
            "n_faults_sampled": 0, "n_faults": 0, "n_words_changed": 0, "n_nonfinite_faults": 0}
    for name in ("part-a-00001.parquet", "part-b-00001.parquet"):  # two workers, same window
        store.write_golden_steps([{"trial_id": "golden/gpt/none", "step": s, "loss": 2.0 - s,
                                   **full} for s in range(3)], name)
    got = training.read_golden_steps(store.path)
    assert got["step"].tolist() == [0, 1, 2] and got["loss"].tolist() == [2.0, 1.0, 0.0]
