"""Report on a hand-made results dataset: loading, table numbers vs pandas, page, PNGs, CLI."""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from pytei_ray.report import (
    SkippedPartWarning,
    default_output_dir,
    load_dataset,
    load_results,
    recovery,
    summarize,
    write_report,
)
from pytei_ray.report.__main__ import main
from pytei_ray.stats import betting_cs

GOLDEN = {"fm": (0.78, 0.45), "dcn": (0.80, 0.43)}  # (auc, logloss)
BERS = (1e-6, 1e-4, 1e-2)
MITIGATIONS = ("none", "clip", "sbp")
REPS = 4
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_rows(seed: int = 0, bits: tuple[int, ...] | None = None) -> pd.DataFrame:
    """A realistic result table (schema of CONTRACTS.md) with known values.

    Row 0 is a failed trial (error text, NaN metrics); row 5 is an ok trial whose auc is NaN.
    """
    rng = np.random.default_rng(seed)
    rows = []
    grid = itertools.product(GOLDEN, BERS, range(REPS), MITIGATIONS, bits or [None])
    for model, ber, rep, mit, bit in grid:
        g_auc, g_ll = GOLDEN[model]
        drop = {1e-6: 0.0, 1e-4: 0.02, 1e-2: 0.25}[ber] * (1 + 0.3 * rng.standard_normal())
        drop = max(drop, 0.0) * {"none": 1.0, "clip": 0.6, "sbp": 0.2}[mit]
        if bit is not None:
            drop *= 1.0 if bit >= 23 else 0.0  # only exponent/sign bits hurt
        row = dict(
            campaign="demo", trial_id=f"{model}-{ber}-{rep}-{mit}-{bit}", model=model,
            target="all", error_model="bitflip", ber=ber, repetition=rep, mitigation=mit,
            seed=rep, n_faults=int(ber * 1e5), n_words=int(ber * 1e5),
            n_nonfinite=int(ber > 1e-3 and mit == "none"), auc=g_auc - drop, golden_auc=g_auc,
            logloss=g_ll * (1 + drop), golden_logloss=g_ll, status="ok", error=None,
            worker="w0", device="cpu",
            started_at=pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(seconds=len(rows)),
            duration_s=0.01, version="0.1.0",
        )
        if bit is not None:
            row["bit"] = bit
        rows.append(row)
    df = pd.DataFrame(rows)
    df.loc[0, ["status", "error", "auc", "logloss"]] = [
        "failed", "Traceback (most recent call last):\nRuntimeError: boom", np.nan, np.nan]
    df.loc[5, "auc"] = np.nan
    return df


def write_parts(df: pd.DataFrame, root: Path, n_parts: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, idx in enumerate(np.array_split(np.arange(len(df)), n_parts)):
        df.iloc[idx].to_parquet(root / f"part-{i:05d}.parquet", index=False)
    return root


@pytest.fixture
def rows() -> pd.DataFrame:
    return make_rows()


@pytest.fixture
def dataset(tmp_path: Path, rows: pd.DataFrame) -> Path:
    """A live campaign directory: parts, a torn part, a temp file, golden + manifest extras."""
    root = write_parts(rows, tmp_path / "results")
    (root / "part-99999.parquet").write_bytes(b"PAR1 torn write")
    (root / ".part-00003.parquet.tmp-1234").write_bytes(b"half a file")
    (root / "_golden").mkdir()
    pd.DataFrame({"model": ["fm"], "auc": [0.78]}).to_parquet(root / "_golden/part-0.parquet")
    manifest = {"job": "jobs/demo.py", "spec": {
        "name": "demo", "params": {"small": 1}, "models": {"fm": None, "dcn": None},
        "targets": {"all": None}, "error_models": {"bitflip": "BitFlip"},
        "mitigations": dict.fromkeys(MITIGATIONS), "bers": list(BERS), "repetitions": REPS}}
    (root / "_manifest.json").write_text(json.dumps(manifest))
    return root


def expected_table(rows: pd.DataFrame, metric: str, higher: bool, threshold: float = 0.01):
    """The summary numbers, computed directly with pandas/scipy."""
    out = {}
    for key, g in rows.groupby(["model", "target", "mitigation", "ber"]):
        ok = g[g["status"] == "ok"]
        m = ok[metric]
        fin = m[np.isfinite(m)]
        sign = 1 if higher else -1
        loss = sign * (ok["golden_" + metric] - m)
        rel = loss / ok["golden_" + metric].abs()
        sdc = (rel > threshold) | ~np.isfinite(m)
        if metric == "auc":  # in [0, 1]: betting confidence sequence in repetition order,
            x = ok.sort_values("repetition")[metric].to_numpy(float)  # NaN = the worst value
            x = np.where(np.isfinite(x), x, 0.0 if higher else 1.0)
            mean, n = x.mean(), len(x)
            lo, hi = betting_cs(x, (0.0, 1.0), 0.95)
        else:  # unbounded above: Student-t over the finite trials
            mean, n = fin.mean(), len(fin)
            lo, hi = (st.t.interval(0.95, len(fin) - 1, loc=fin.mean(), scale=st.sem(fin))
                      if fin.std() > 0 else (fin.mean(), fin.mean()))
        gold = ok["golden_" + metric].mean()
        out[key] = dict(trials=len(g), failed=int((g["status"] != "ok").sum()), ok=len(ok),
                        n=n, mean=mean, ci_low=lo, ci_high=hi,
                        mean_loss=sign * (gold - mean), sdc=int(sdc.sum()),
                        sdc_rate=sdc.mean(), nonfinite=int((~np.isfinite(m)).sum()),
                        nonfinite_rate=(~np.isfinite(m)).mean(),
                        nonfinite_weights_rate=(ok["n_nonfinite"] > 0).mean())
    return out


def load(path: Path | str) -> pd.DataFrame:
    with pytest.warns(SkippedPartWarning, match="part-99999"):
        return load_results(path)


def test_load_skips_torn_hidden_and_underscore(dataset: Path, rows: pd.DataFrame) -> None:
    with pytest.warns(SkippedPartWarning, match="part-99999.parquet"):
        ds = load_dataset(dataset)
    assert len(ds.parts) == 3 and [Path(p).name for p, _ in ds.skipped] == ["part-99999.parquet"]
    assert ds.manifest["job"] == "jobs/demo.py"
    got = ds.frame.sort_values("trial_id").reset_index(drop=True)
    want = rows.sort_values("trial_id").reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    for col in want.columns:  # values equal; None / NaN / pd.NA all mean missing
        assert got[col].astype(object).where(got[col].notna(), None).tolist() == \
            want[col].astype(object).where(want[col].notna(), None).tolist(), col


def test_load_via_uri_and_empty_and_missing(tmp_path: Path, dataset: Path) -> None:
    assert len(load(dataset.as_uri())) == len(make_rows())  # pyarrow.fs.from_uri path
    (tmp_path / "empty").mkdir()
    assert load_results(tmp_path / "empty").empty
    assert summarize(tmp_path / "empty").empty
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "nope")


def test_retried_trial_keeps_the_ok_row(tmp_path: Path, rows: pd.DataFrame) -> None:
    root = write_parts(rows, tmp_path / "r")
    retry = rows.iloc[[0]].assign(status="ok", error=None, auc=0.78, logloss=0.45)
    retry.to_parquet(root / "part-00009.parquet", index=False)
    df = load_results(root)
    assert len(df) == len(rows)
    assert df.loc[df["trial_id"] == rows.loc[0, "trial_id"], "status"].tolist() == ["ok"]


@pytest.mark.parametrize(("metric", "higher"), [("auc", True), ("logloss", False)])
def test_summary_numbers_match_pandas(dataset: Path, rows: pd.DataFrame, metric: str,
                                      higher: bool) -> None:
    with pytest.warns(SkippedPartWarning):
        s = summarize(dataset, metric=metric)
    assert list(s.columns[:5]) == ["model", "target", "mitigation", "ber", "metric"]
    assert "error_model" not in s  # a single error model is not a table column
    assert (s["higher_is_better"] == higher).all()
    want = expected_table(rows, metric, higher)
    assert len(s) == len(want) == len(GOLDEN) * len(BERS) * len(MITIGATIONS)
    for r in s.itertuples():
        exp = want[(r.model, r.target, r.mitigation, r.ber)]
        for col, value in exp.items():
            assert getattr(r, col) == pytest.approx(value, rel=1e-9, abs=1e-12), (col, r)


def test_failed_and_nan_trials_are_counted(rows: pd.DataFrame) -> None:
    s = summarize(rows, metric="auc").set_index(["model", "mitigation", "ber"])
    failed_cell = s.loc[(rows.loc[0, "model"], rows.loc[0, "mitigation"], rows.loc[0, "ber"])]
    assert (failed_cell["trials"], failed_cell["failed"], failed_cell["ok"]) == (REPS, 1, REPS - 1)
    nan_cell = s.loc[(rows.loc[5, "model"], rows.loc[5, "mitigation"], rows.loc[5, "ber"])]
    # auc is in [0, 1]: the NaN trial counts (as 0, the worst value), it is not dropped
    assert (nan_cell["n"], nan_cell["nonfinite"], nan_cell["sdc"]) == (REPS, 1, 1)
    assert nan_cell["nonfinite_rate"] == pytest.approx(1 / REPS)
    assert s["failed"].sum() == 1 and s["nonfinite"].sum() == 1
    quiet = summarize(rows, metric="auc", nonfinite_as_sdc=False).set_index(
        ["model", "mitigation", "ber"])
    assert quiet.loc[nan_cell.name, "sdc"] == 0


def test_threshold_direction_and_validation(rows: pd.DataFrame) -> None:
    base = summarize(rows, metric="auc")
    loose = summarize(rows, metric="auc", threshold=0.2)
    assert loose["sdc"].sum() < base["sdc"].sum()
    want = expected_table(rows, "auc", True, threshold=0.2)
    for r in loose.itertuples():
        assert r.sdc == want[(r.model, r.target, r.mitigation, r.ber)]["sdc"]
    flipped = summarize(rows, metric="auc", higher_is_better={"auc": False})
    assert (flipped.loc[flipped["nonfinite"] == 0, "mean_loss"] <= 0).all()  # (NaN: worst = 1)
    assert not flipped["higher_is_better"].any()
    with pytest.raises(ValueError, match=r"`threshold` to be a float in the \[0, 1\) range"):
        summarize(rows, threshold=1.5)
    with pytest.raises(ValueError, match="Metric 'acc' is not in the results"):
        summarize(rows, metric="acc")


def test_error_model_and_extra_factor_become_keys(rows: pd.DataFrame) -> None:
    two = pd.concat([rows, rows.assign(error_model="stuck", trial_id=rows.trial_id + "s")])
    s = summarize(two, metric="auc")
    assert "error_model" in s and len(s) == 2 * len(summarize(rows, metric="auc"))
    bits = make_rows(bits=(0, 30))
    assert "bit" in summarize(bits, metric="auc")


def test_recovery_matches_pandas_pairs(rows: pd.DataFrame) -> None:
    rec = recovery(rows, metric="auc")
    ok = rows[rows["status"] == "ok"]
    keys = ["model", "ber", "repetition"]
    base = ok[ok["mitigation"] == "none"].set_index(keys)
    assert rec["pairs"].sum() > 0 and (rec["ci_level"] == 0.95).all()
    for r in rec.itertuples():
        mit = ok[(ok["mitigation"] == r.mitigation) & (ok["model"] == r.model)
                 & (ok["ber"] == r.ber)].set_index(keys)
        j = mit.join(base.add_suffix("_none"), how="inner")  # every pair, NaN = worst (0)
        delta = (j["auc"].fillna(0.0) - j["auc_none"].fillna(0.0)).mean()
        lost = (j["golden_auc_none"] - j["auc_none"].fillna(0.0)).mean()
        assert r.pairs == len(j) and r.catastrophes == int(j["auc_none"].isna().sum())
        assert (r.delta, r.lost) == pytest.approx((delta, lost))
        assert r.mean == pytest.approx(delta / lost) if lost > 0 else np.isnan(r.mean)
        assert r.delta_low <= r.delta <= r.delta_high and r.ci_low <= r.ci_high
    assert set(rec["mitigation"]) == {"clip", "sbp"}
    assert rec["delta"].mean() > 0  # the fixture's mitigations help on the whole
    assert recovery(rows[rows["mitigation"] == "none"]).empty


def png_ok(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    import matplotlib.image as mpimg

    assert mpimg.imread(path).ndim == 3


def test_write_report_page_embeds_and_references_every_png(dataset: Path) -> None:
    with pytest.warns(SkippedPartWarning):
        rep = write_report(dataset)
    assert rep.out_dir == dataset / "_report" == default_output_dir(dataset)
    pngs = sorted(rep.out_dir.glob("*.png"))
    names = {p.name for p in pngs}
    assert names == {p.name for p in rep.figures}
    assert {"auc_vs_ber_fm_bitflip.png", "auc_vs_ber_dcn_bitflip.png", "auc_recovery.png",
            "logloss_recovery.png"} <= names
    page = rep.html.read_text()
    for png in pngs:
        png_ok(png)
        assert f'href="{png.name}"' in page
        assert base64.b64encode(png.read_bytes()).decode() in page  # embedded: opens offline
    assert not re.search(r"<script|https?://", page)  # self-contained, no network
    assert "part-99999.parquet" in page and "RuntimeError: boom" in page
    assert (rep.out_dir / "summary.csv").exists() and (rep.out_dir / "recovery.csv").exists()
    # the report folder does not break readers of the dataset
    assert len(load(dataset)) == len(make_rows())


def test_report_dir_is_ignored_by_pyarrow_and_pandas(tmp_path: Path, rows: pd.DataFrame) -> None:
    root = write_parts(rows, tmp_path / "clean")
    rep = write_report(root, metric="auc")
    assert rep.out_dir.name == "_report" and any(rep.out_dir.glob("*.png"))
    assert len(pd.read_parquet(root)) == len(rows)
    import pyarrow.dataset as pads

    assert pads.dataset(root, format="parquet").count_rows() == len(rows)


def test_inconclusive_cells_and_launch_command(dataset: Path) -> None:
    with pytest.warns(SkippedPartWarning):
        rep = write_report(dataset, metric="auc", plots=False)
    assert rep.figures == [] and "No plots" in rep.html.read_text()
    s = rep.summary
    assert s["inconclusive"].any() and rep.repetitions is not None and rep.repetitions > REPS
    flagged = s[s["inconclusive"]]
    level = flagged["golden"] * 0.99  # the SDC threshold level lies inside each flagged CI...
    assert ((flagged["ci_low"] <= level) & (level <= flagged["ci_high"])).all() or (
        flagged["n"] < 2).any()
    clear = s[~s["inconclusive"]]  # ...and outside every other one
    assert not ((clear["ci_low"] < clear["golden"] * 0.99)
                & (clear["golden"] * 0.99 < clear["ci_high"])).any()
    # --repetitions N overrides the count; the stored job parameters are kept as they are
    assert rep.command == (f"python -m pytei_ray.launch jobs/demo.py --out {dataset} "
                           f"--extend --repetitions {rep.repetitions} --set small=1")
    assert all(line in rep.text for line in rep.command.splitlines())
    assert html.escape(rep.command) in rep.html.read_text()
    assert "72 / 72 trials (complete)" in rep.text
    strict = summarize(make_rows(), metric="auc", precision=1e-6)
    assert strict["inconclusive"].all()  # (4 trials settle no bounded cell anyway: all open)


def test_bit_vulnerability_plot(tmp_path: Path) -> None:
    root = write_parts(make_rows(bits=(0, 10, 23, 30, 31)), tmp_path / "bits")
    rep = write_report(root, tmp_path / "out", metric="auc")
    assert rep.out_dir == tmp_path / "out"
    png = tmp_path / "out" / "auc_by_bit.png"
    png_ok(png)
    assert 'href="auc_by_bit.png"' in rep.html.read_text()


def test_in_progress_dataset_grows(tmp_path: Path, rows: pd.DataFrame) -> None:
    root = tmp_path / "live"
    root.mkdir()
    first = write_report(root, plots=False)  # nothing written yet
    assert first.summary.empty and "no result rows yet" in first.html.read_text()
    rows.iloc[:20].to_parquet(root / "part-00000.parquet", index=False)
    (root / ".part-00001.parquet.tmp-ab").write_bytes(b"being written")
    second = write_report(root, metric="auc", plots=False)
    assert second.summary["trials"].sum() == 20


def test_cli_prints_summary_and_writes_report(dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CLI lists skipped parts instead of warning
        assert main([str(dataset), "--to", str(out), "--metric", "auc", "--threshold", "0.05"]) == 0
    text = capsys.readouterr().out
    assert "Summary: auc (higher is better)" in text and "logloss" not in text
    assert "skipped unreadable part" in text and f"Report: {out / 'index.html'}" in text
    assert (out / "auc_vs_ber_fm_bitflip.png").exists()
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_remote_default_output_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_output_dir("s3://bucket/campaigns/drs/") == tmp_path / "drs_report"


def test_command_uses_the_repetitions_flag_for_any_job(tmp_path: Path,
                                                       rows: pd.DataFrame) -> None:
    root = write_parts(rows, tmp_path / "r")
    (root / "_job.py").write_text("def make_campaign(small=False):\n    ...\n")
    manifest = {"job": {"path": "missing/job.py", "params": {"small": 1}}}
    (root / "_manifest.json").write_text(json.dumps(manifest))
    rep = write_report(root, metric="auc", plots=False)
    assert rep.command == (f"python -m pytei_ray.launch {root}/_job.py --out {root} --extend "
                           f"--repetitions {rep.repetitions} --set small=1")
    (root / "_job.py").write_text("def make_campaign(small=False, **params):\n    ...\n")
    assert write_report(root, metric="auc", plots=False).command == rep.command


def test_all_failed_dataset_is_summarised(tmp_path: Path, rows: pd.DataFrame) -> None:
    dead = rows.assign(status="failed", error="RuntimeError: x", auc=np.nan, logloss=np.nan)
    rep = write_report(write_parts(dead, tmp_path / "dead"), metric="auc")
    s = rep.summary
    assert (s["failed"] == s["trials"]).all() and s["mean"].isna().all()
    assert (s["golden"] > 0).all()  # golden still known from the failed rows
    assert rep.repetitions is None and rep.command is None  # more reps would not help
    assert "no finite metric" in rep.text
    for png in rep.figures:
        png_ok(png)


def test_command_keeps_a_stored_repetitions_parameter(tmp_path: Path,
                                                      rows: pd.DataFrame) -> None:
    root = write_parts(rows, tmp_path / "r")
    (root / "_job.py").write_text("def make_campaign(repetitions=4):\n    ...\n")
    spec = {"name": "demo", "params": {"repetitions": 4}, "repetitions": 4, "bers": list(BERS)}
    (root / "_manifest.json").write_text(json.dumps({"spec": spec, "job": {
        "path": "missing.py", "params": {"repetitions": 4}}}))
    rep = write_report(root, metric="auc", plots=False)
    n = rep.repetitions  # the parameter stays 4 (a changed parameter is another campaign)
    assert rep.command == (f"python -m pytei_ray.launch {root}/_job.py --out {root} --extend "
                           f"--repetitions {n} --set repetitions=4")
