"""Report fixes: sane relaunch advice, per-metric direction, clamped CIs, recovery pairing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pytei_ray.report import summarize, write_report
from pytei_ray.report.__main__ import main
from pytei_ray.report.summary import ADVICE_FACTOR, suggest_repetitions
from pytei_ray.stats import higher_is_better, mean_ci, metric_bounds

REPS = 4


def frame(cells: dict[float, list[float]], xent: dict[float, list[float]] | None = None,
          golden: float = 1.0, golden_xent: float = 0.1) -> pd.DataFrame:
    """One model/target/mitigation, a cell per BER with the given acc values per repetition."""
    rows = []
    for ber, values in cells.items():
        for rep, v in enumerate(values):
            row = dict(trial_id=f"{ber}-{rep}", model="m", target="all", error_model="bitflip",
                       ber=ber, repetition=rep, mitigation="none", status="ok",
                       xent=(xent or {}).get(ber, [golden_xent] * len(values))[rep],
                       golden_xent=golden_xent, acc=v, golden_acc=golden)
            rows.append(row)
    return pd.DataFrame(rows)  # xent before acc: column order is not the campaign's order


# cell 1e-3: mean exactly at the SDC level (0.99) -> needs ~inf: at the threshold
# cell 1e-2: CI straddles 0.99 but the mean (0.98) is clear of it -> settles with a few dozen
AT_LEVEL = [0.985, 0.995, 0.985, 0.995]
SETTLES = [0.95, 1.0, 0.97, 1.0]


def unbounded(df: pd.DataFrame) -> pd.DataFrame:
    """``acc`` renamed ``score``: an unbounded metric, so Student-t intervals and the advice
    rules they feed (a bounded metric's confidence sequence settles nothing in 4 trials)."""
    return df.rename(columns={"acc": "score", "golden_acc": "golden_score"})


def dataset(tmp_path: Path, df: pd.DataFrame, metrics: list[str] | None = None) -> Path:
    root = tmp_path / "ds"
    root.mkdir()
    df.to_parquet(root / "part-00000.parquet", index=False)
    manifest = {"job": {"path": "jobs/x.py", "params": {}}, "metrics": metrics or ["acc", "xent"]}
    (root / "_manifest.json").write_text(json.dumps(manifest))
    return root


def test_cell_at_the_threshold_does_not_drive_the_advice(tmp_path: Path) -> None:
    df = unbounded(frame({1e-3: AT_LEVEL, 1e-2: SETTLES, 1e-4: [1.0] * REPS}))
    s = summarize(df, metric="score").set_index("ber")
    assert s.loc[1e-3, "inconclusive"] and s.loc[1e-3, "at_threshold"]
    assert s.loc[1e-3, "reps_needed"] > ADVICE_FACTOR * REPS
    assert s.loc[1e-2, "inconclusive"] and not s.loc[1e-2, "at_threshold"]
    need = int(s.loc[1e-2, "reps_needed"])
    assert REPS < need <= ADVICE_FACTOR * REPS
    assert not s.loc[1e-4, "inconclusive"]
    assert suggest_repetitions(s.reset_index(), REPS) == need  # the settleable cell's need
    rep = write_report(dataset(tmp_path, df, ["score", "xent"]), plots=False)
    assert rep.primary == "score" and rep.repetitions == need
    assert rep.command.endswith(f"--extend --repetitions {need}")
    page = rep.html.read_text()
    assert "at the threshold" in page and f"{ADVICE_FACTOR}× its current trials" in page
    assert "score (primary): 2 inconclusive cell(s): 1 settle with" in rep.text


def test_only_cells_at_the_threshold_give_no_command(tmp_path: Path) -> None:
    df = unbounded(frame({1e-3: AT_LEVEL, 1e-4: [1.0] * REPS}))
    rep = write_report(dataset(tmp_path, df, ["score", "xent"]), metric="score", plots=False)
    assert rep.summary["inconclusive"].any() and rep.repetitions is None and rep.command is None
    assert "none can be settled cheaply, 1 at the threshold" in rep.text


def test_suggestion_is_bounded() -> None:
    table = pd.DataFrame({"metric": ["a", "a", "a", "b"], "trials": [3, 3, 3, 3],
                          "inconclusive": [True, True, False, True],
                          "reps_needed": [29, 10_000, 3, 25]})
    assert suggest_repetitions(table, 3, metric="a") == 29  # 10_000 (at the threshold) ignored
    assert suggest_repetitions(table, 3, metric="b") == 25
    assert suggest_repetitions(table, 3) == 29
    table["reps_needed"] = [30, 31, 3, 2]
    assert suggest_repetitions(table, 3, metric="a") == 30  # 31 > 10 x 3: at the threshold
    assert suggest_repetitions(table, 3, metric="b") == 4  # always above the current count
    assert suggest_repetitions(table, 3, metric="a", factor=2) is None
    table["reps_needed"] = 0  # no finite metric anywhere
    assert suggest_repetitions(table, 3) is None
    assert suggest_repetitions(pd.DataFrame(), 3) is None


def test_primary_metric_leads_and_a_heavy_tailed_metric_does_not_drive(tmp_path: Path) -> None:
    # xent: one cell with a huge spread and a mean near its threshold; acc settles with a few
    heavy = {1e-2: [0.1, 0.1, 0.1, 0.1], 1e-3: [0.05, 1e3, 0.05, 0.1]}
    df = unbounded(frame({1e-3: SETTLES, 1e-2: [1.0] * REPS}, xent=heavy))
    rep = write_report(dataset(tmp_path, df, ["score", "xent"]), plots=False)
    assert rep.primary == "score" and set(rep.advice) == {"score", "xent"}
    assert rep.repetitions == rep.advice["score"] <= ADVICE_FACTOR * REPS
    assert rep.text.index("score (primary)") < rep.text.index("xent:")
    (tmp_path / "b").mkdir()
    other = write_report(dataset(tmp_path / "b", df, ["score", "xent"]), metric=["xent", "score"],
                         plots=False)
    assert other.primary == "xent" and other.repetitions == other.advice["xent"]


def test_direction_words() -> None:
    for name in ("xent", "val_xent", "cross_entropy", "CrossEntropy", "ce", "val_ce", "nll",
                 "rmse", "mape", "wer", "cer", "latency_ms", "logloss", "bce_loss", "ppl"):
        assert not higher_is_better(name), name
    for name in ("accuracy", "acc", "auc", "precision", "recall", "f1", "power", "score",
                 "balance", "variance_explained"):
        assert higher_is_better(name), name


def test_metric_bounds_and_clamped_ci() -> None:
    for name in ("accuracy", "top1_acc", "auc", "auroc", "precision", "recall", "f1", "sdc_rate",
                 "error_rate"):
        assert metric_bounds(name) == (0.0, 1.0), name
    for name in ("logloss", "xent", "mse", "latency"):
        assert metric_bounds(name) == (0.0, math.inf), name
    assert metric_bounds("score") == (-math.inf, math.inf)
    m, lo, hi = mean_ci([0.0, 0.9, 0.95], bounds=(0.0, 1.0))
    raw = mean_ci([0.0, 0.9, 0.95])
    assert raw[1] < 0 < 1 < raw[2] and (m, lo, hi) == (raw[0], 0.0, 1.0)
    m, lo, hi = mean_ci([0.1, 0.5], bounds=(0.0, math.inf))
    assert lo == 0.0 and hi == mean_ci([0.1, 0.5])[2]


def test_summary_clamps_cis_to_the_natural_range() -> None:
    df = frame({1e-3: [0.2, 1.0, 1.0, 1.0], 1e-2: [0.1, 0.8, 0.9, 0.95]},
               xent={1e-3: [0.1, 0.1, 0.1, 0.1], 1e-2: [3.0, 0.1, 0.1, 0.1]})
    s = summarize(df)
    raw = summarize(df, bounds=False)
    assert (raw["ci_high"] > 1).any() and (raw["ci_low"] < 0).any()  # Student t alone
    acc, xent = s[s.metric == "acc"], s[s.metric == "xent"]
    assert acc["ci_low"].between(0, 1).all() and acc["ci_high"].between(0, 1).all()
    assert (xent["ci_low"] >= 0).all() and (xent["ci_high"] > 1).any()  # no upper bound
    pct = df.assign(acc=df["acc"] * 100, golden_acc=100.0)  # accuracy in percent: not clamped
    assert (summarize(pct, metric="acc")["ci_high"] > 100).any()
    custom = summarize(df[df["acc"] >= 0.5], metric="acc", bounds={"acc": (0.5, 1.0)})
    assert (custom["ci_low"] >= 0.5).all()
    with pytest.raises(ValueError, match=r"'acc' is declared in \[0.5, 1\] but trial '0.001-0' "
                                         r"has 0.2 \(2 value\(s\) outside\)"):
        summarize(df, metric="acc", bounds={"acc": (0.5, 1.0)})  # never clamped: refused


def test_cli_per_metric_direction(tmp_path: Path, capsys) -> None:
    df = frame({1e-3: SETTLES}).rename(columns={"xent": "score", "golden_xent": "golden_score"})
    root = dataset(tmp_path, df, metrics=["acc", "score"])

    def directions(*flags: str) -> dict[str, bool]:
        out = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        assert main([str(root), "--to", str(out), "--no-plots", "-q", *flags]) == 0
        table = pd.read_csv(out / "summary.csv")
        return table.groupby("metric")["higher_is_better"].first().to_dict()

    assert directions() == {"acc": True, "score": True}  # guessed from the names
    assert directions("--lower-is-better", "score") == {"acc": True, "score": False}
    assert directions("--lower-is-better", "score", "--higher-is-better", "acc") == {
        "acc": True, "score": False}
    assert directions("--lower-is-better") == {"acc": False, "score": False}  # bare: all
    assert directions("--lower-is-better", "--higher-is-better", "acc") == {
        "acc": True, "score": False}
    out = tmp_path / "swallowed"  # the flag before the dataset: DIR is not a metric name
    assert main(["--to", str(out), "--no-plots", "-q", "--lower-is-better", "score",
                 str(root)]) == 0
    assert not pd.read_csv(out / "summary.csv").query("metric == 'score'")[
        "higher_is_better"].any()
    capsys.readouterr()
    assert main([str(root), "--no-plots", "--lower-is-better", "scroe"]) == 2
    assert "scroe" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(root), "--lower-is-better", "acc", "--higher-is-better", "acc"])


def test_summarize_direction_dict_default() -> None:
    df = frame({1e-3: SETTLES})
    s = summarize(df, higher_is_better={"*": False, "acc": True})
    assert s.set_index("metric")["higher_is_better"].to_dict() == {"acc": True, "xent": False}
    with pytest.raises(ValueError, match="not metric"):
        summarize(df, higher_is_better={"nope": True})
    assert np.isfinite(summarize(df, metric="acc")["median"]).all()


def captured(monkeypatch) -> list:
    """Figures passed to plots._save (saved as usual), to inspect their axes."""
    from pytei_ray.report import plots

    figs, save = [], plots._save

    def keep(fig, path):
        figs.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def no_overlap(fig) -> None:
    """The suptitle sits above every panel title."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        if ax.get_visible():
            title = ax.title.get_window_extent(renderer)
            assert not top.overlaps(title) and top.y0 >= title.y1 - 1, ax.get_title()


def test_recovery_plot_clips_and_marks_outliers(tmp_path: Path, monkeypatch) -> None:
    from pytei_ray.report.plots import RECOVERY_YLIM, plot_recovery

    figs = captured(monkeypatch)
    rec = pd.DataFrame({"model": "m", "target": ["a", "a", "b", "b", "c", "c"],
                        "mitigation": "clip", "ber": [1e-4, 1e-3] * 3, "metric": "auc",
                        "pairs": 5, "mean": [190.0, 0.5, -48.0, 0.9, 1.0, 0.8],
                        "ci_low": [150.0, 0.2, -63.0, -15.0, 1.0, 0.7],
                        "ci_high": [230.0, 0.8, -33.0, 15.0, 1.0, 0.9], "median": 0.5})
    (png,) = plot_recovery(rec, "auc", tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG"
    (fig,) = figs
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for ax in axes:
        lo, hi = ax.get_ylim()
        assert RECOVERY_YLIM[0] - 0.1 < lo and hi < RECOVERY_YLIM[1] + 0.1
    markers = {ax.get_title(): [ln.get_marker() for ln in ax.get_lines()
                                if ln.get_label() == "_clipped"] for ax in axes}
    assert markers == {"m / a": ["^"], "m / b": ["v"], "m / c": []}
    assert "beyond the [-1, 2] axis" in fig._suptitle.get_text()
    no_overlap(fig)


def test_recovery_is_a_ratio_of_mean_losses_not_a_mean_of_ratios() -> None:
    from pytei_ray.report import recovery

    # rep 0: baseline lost 0.1%, the clip gained 0.1% (a per-pair ratio: 2); rep 1: lost 20%,
    # half recovered (0.5). A mean of per-pair ratios would say 1.25; the losses say 0.5.
    df = frame({1e-3: [0.999, 0.8]})
    df = pd.concat([df, df.assign(mitigation="clip", acc=[1.0, 0.9],
                                  trial_id=df["trial_id"] + "c")])
    rec = recovery(df, metric="acc")
    assert rec["pairs"].tolist() == [2]
    assert rec["mean"].iloc[0] == pytest.approx((0.001 + 0.1) / (0.001 + 0.2))


def test_heavy_tailed_metric_is_drawn_as_median_on_a_log_axis(tmp_path: Path,
                                                               monkeypatch) -> None:
    from pytei_ray.report.plots import heavy_tailed, plot_metric_vs_ber

    assert heavy_tailed(np.array([0.5, 3e35, np.nan]), np.array([0.5]))
    assert not heavy_tailed(np.array([0.5, 0.7, 40.0]), np.array([0.5]))
    assert not heavy_tailed(np.array([np.nan]), np.array([0.5]))
    figs = captured(monkeypatch)
    values = {1e-4: [0.1, 0.1, 0.12, 0.1], 1e-3: [0.1, 0.3, 1e30, 0.2], 1e-2: [1e35, 2.0, 1e36, 5]}
    df = frame({b: [1.0] * 4 for b in values}, xent=values)
    df = pd.concat([df, df.assign(target="calm", xent=0.1, trial_id=df["trial_id"] + "c")])
    s = summarize(df, metric="xent", by=["model", "target", "error_model", "mitigation", "ber"])
    (png,) = plot_metric_vs_ber(s, "xent", tmp_path)
    assert png.name == "xent_vs_ber_m_bitflip.png"
    (fig,) = figs
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert axes["target: all"].get_yscale() == "log"  # spans 1e-1..1e36
    assert axes["target: calm"].get_yscale() == "linear"  # nothing exploded there
    line = next(ln for ln in axes["target: all"].get_lines() if ln.get_label() == "none")
    assert line.get_ydata().tolist() == pytest.approx(s[s.target == "all"]["median"].tolist())
    assert axes["target: all"].get_legend().get_title().get_text() == "median, IQR band"
    assert "heavy-tailed: median and interquartile range" in fig._suptitle.get_text()
    no_overlap(fig)
    figs.clear()  # a well-behaved metric keeps the mean, its CI band and a linear axis
    plot_metric_vs_ber(summarize(df, metric="acc"), "acc", tmp_path)
    ax = figs[0].axes[0]
    assert ax.get_yscale() == "linear" and "95% CI" in ax.get_legend().get_title().get_text()


def test_cell_whose_trials_all_agree_is_at_the_floor_not_at_the_threshold(tmp_path: Path
                                                                           ) -> None:
    """A bounded metric whose few trials all keep golden: its mean is clear of the SDC level,
    but the confidence sequence cannot exclude a rare collapse cheaply (the outcome shape's
    price), so it is at the floor, not "at the threshold"; it does not drive the advice."""
    df = frame({1e-4: [0.9] * REPS, 1e-2: SETTLES}, golden=0.9)
    s = summarize(df, metric="acc").set_index("ber")
    assert s.loc[1e-4, "inconclusive"] and s.loc[1e-4, "at_floor"]
    assert not s.loc[1e-4, "at_threshold"] and s.loc[1e-4, "mean"] == pytest.approx(0.9)
    rep = write_report(dataset(tmp_path, df, ["acc", "xent"]), metric="acc", plots=False)
    assert "at the floor" in rep.text
    assert "even if every trial agreed" in rep.html.read_text()
