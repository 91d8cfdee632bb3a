"""Report on a dataset written by a real (tiny, in-process) campaign run through the launcher."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pytei_ray.report import load_results, summarize, write_report

JOB = '''
"""Two seeded MLPs; evaluation fails when the logits explode (a failed trial)."""
import torch
from torch import nn
from pytei_ray import BitFlip, Campaign
from pytei_ray.mitigations import SBP, Clip


def mlp(hidden):
    def build():
        with torch.random.fork_rng():
            torch.manual_seed(hidden)
            return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 3))
    return build


MODELS = {"a": mlp(16), "b": mlp(32)}


def data(name):
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, MODELS[name]()(x).argmax(1)


def evaluate(model, d):
    x, y = d
    logits = model(x)
    if not torch.isfinite(logits).all() or logits.abs().max() > 1e30:
        raise FloatingPointError("logits exploded")
    return {"accuracy": (logits.argmax(1) == y).float().mean().item(),
            "xent_loss": nn.functional.cross_entropy(logits, y).item()}


def make_campaign(repetitions=3):
    return Campaign(name="report-test", models=MODELS, data=data, evaluate=evaluate,
                    bers=[1e-4, 1e-3, 3e-2], repetitions=repetitions,
                    mitigations={"none": None, "sbp": SBP(), "clip": Clip()},
                    error_models={"bitflip": BitFlip}, seed=11)


campaign = make_campaign()
'''


@pytest.fixture(scope="module")
def campaign_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from pytei_ray.launch import run

    tmp = tmp_path_factory.mktemp("campaign")
    job = tmp / "job.py"
    job.write_text(JOB)
    out = tmp / "results"
    summary = run(str(job), str(out), executor="local", progress=False, echo=lambda *_: None)
    assert summary.complete and summary.ran == 2 * 3 * 3 * 3
    return job, out


def test_report_numbers_on_real_campaign(campaign_dir: tuple[Path, Path]) -> None:
    job, out = campaign_dir
    rep = write_report(out)
    raw = pd.read_parquet(out)  # plain pandas still reads the dataset next to _report/
    assert len(raw) == len(load_results(out)) == 54
    failed = raw[raw["status"] != "ok"]
    assert len(failed) >= 1 and failed["error"].str.contains("logits exploded").all()
    s = rep.summary[rep.summary["metric"] == "accuracy"]
    assert s["failed"].sum() == len(failed) and s["trials"].sum() == 54
    for r in s.itertuples():
        g = raw[(raw["model"] == r.model) & (raw["mitigation"] == r.mitigation)
                & (raw["ber"] == r.ber)]
        ok = g[g["status"] == "ok"]
        assert (r.trials, r.failed, r.n) == (len(g), len(g) - len(ok), len(ok))
        if len(ok):
            # the mean uses the known chance of a fault-free trial (p_no_fault): golden with
            # probability p0, else the mean of the trials that drew at least one fault
            p0 = float(ok["p_no_fault"].iloc[0])
            hit = ok[ok["n_faults_sampled"] > 0]["accuracy"]
            golden = float(ok["golden_accuracy"].iloc[0])
            expected = p0 * golden + (1 - p0) * hit.mean() if len(hit) else ok["accuracy"].mean()
            assert r.mean == pytest.approx(expected) and r.p0 == pytest.approx(p0)
            drop = (ok["golden_accuracy"] - ok["accuracy"]) / ok["golden_accuracy"]
            assert r.sdc == int((drop > 0.01).sum())
            # the loss of the (p0-stratified) mean, so the two columns agree
            assert r.mean_loss == pytest.approx(golden - expected)
    loss = rep.summary[rep.summary["metric"] == "xent_loss"]
    assert not loss["higher_is_better"].any()  # loss-like name: lower is better
    for png in rep.figures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'href="{png.name}"' in rep.html.read_text()
    assert {"accuracy_vs_ber_a_bitflip.png", "accuracy_recovery.png"} <= {
        p.name for p in rep.figures}
    assert not rep.recovery.empty and set(rep.recovery["mitigation"]) == {"sbp", "clip"}


def test_suggested_command_extends_the_campaign(campaign_dir: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    """Following the printed advice (run the command) adds the repetitions; a plain rerun
    afterwards finds the extended campaign complete."""
    from pytei_ray.launch import main as launch

    job, out = campaign_dir
    rep = write_report(out, tmp_path / "rep", metric="accuracy", precision=1e-9, plots=False)
    assert rep.repetitions is not None and rep.repetitions > 3  # every cell needs more
    assert rep.command == (f"python -m pytei_ray.launch {job} --out {out} --extend "
                           f"--repetitions {rep.repetitions}")
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    argv = rep.command.replace(str(out), str(copy)).split()[3:]
    argv[argv.index("--repetitions") + 1] = "4"  # 4 instead of the advice, to keep it short
    assert launch([*argv, "--executor", "local", "--no-progress"]) == 0
    assert summarize(copy, metric="accuracy")["trials"].sum() == 2 * 3 * 3 * 4
    plain = [str(job), "--out", str(copy), "--executor", "local", "--no-progress"]
    assert launch(plain) == 0  # the recorded 4 repetitions: complete, nothing refused
    assert summarize(copy, metric="accuracy")["trials"].sum() == 2 * 3 * 3 * 4


def test_cli_on_real_campaign(campaign_dir: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    from pytei_ray.report.__main__ import main

    _, out = campaign_dir
    assert main([str(out), "--to", str(tmp_path / "r"), "--metric", "accuracy",
                 "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "Summary: accuracy (higher is better)" in text and "54 / 54 trials (complete)" in text
    table = pd.read_csv(tmp_path / "r" / "summary.csv")
    assert np.isfinite(table["golden"]).all()  # known even where every trial failed
    assert table["failed"].sum() == (load_results(out)["status"] != "ok").sum()
