"""The benchmark scripts run end to end at toy sizes (their figures are not checked: speed is
claimed by running them on demand, never by a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def test_injection_benchmark_runs_and_checks_its_methods(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, "-m", "benchmarks.injection", "--sizes", "65536", "--width", "256",
        "--bers", "1e-5", "1e-3", "--reps", "3", "--budget-s", "0.01",
        "--methods", "ours", "dense", "--json", str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["failures"] == []
    assert [r["ber"] for r in data["results"]] == [1e-5, 1e-3]
    for row in data["results"]:
        ours, dense = row["ours"], row["dense"]
        assert ours["exact_restore"] and ours["flips_plausible"] and dense["exact_restore"]
        assert ours["ms"] > 0 and dense["ms"] > 0 and ours["page_faults_per_inject"] >= 0
    assert "dense/ours" in proc.stdout


def test_orchestrator_benchmark_runs(tmp_path):
    cmd = [
        sys.executable, "benchmarks/orchestrator.py", "--trial-ms", "1", "--trials", "24",
        "--workers", "2", "--skip-tune",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(a) pytei_ray orchestrator" in proc.stdout
    assert "(b) serial loop" in proc.stdout


def test_activation_benchmark_runs_at_toy_size(tmp_path):
    out = tmp_path / "act.json"
    cmd = [sys.executable, "-m", "benchmarks.activations", "--toy", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    configs = {(r["model"], r["config"]) for r in rows}
    for model in ("resnet18", "mlp64"):
        for config in ("ber=1e-07", "ber=1e-05", "ber=0.001", "1/layer", "pfi-per-layer"):
            assert (model, config) in configs
    assert all(r["clean_ms"] > 0 for r in rows)
    assert "extra %" in proc.stdout


def test_call_stream_benchmark_runs_and_checks_its_counts():
    cmd = [sys.executable, "-m", "benchmarks.call_stream", "--calls", "60", "--rounds", "1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("\n") == 9 and "v1/v2" in proc.stdout


def test_adaptive_benchmark_runs(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.adaptive", "--job", "jobs/tiny.py", "--set",
           "small=1", "--precision", "accuracy=0.05", "--max-reps", "4"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for line in ("(0) fixed 2 reps, no skipping", "(1) fixed 2 reps + skipping",
                 "(b) adaptive 2..4 + skipping", "skipping alone:", "adaptive vs the conclusive"):
        assert line in proc.stdout, proc.stdout


def test_adaptive_honest_benchmark_runs():
    cmd = [sys.executable, "-m", "benchmarks.adaptive", "--honest", "--job", "jobs/tiny.py",
           "--set", "small=1", "--precision", "accuracy=0.05", "--max-reps", "8",
           "--twin-reps", "2", "--twin-cells", "2"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for line in ("(i) Student-t, Bonferroni looks", "(ii) honest intervals alone",
                 "(iii) honest + unread stratum", "(iii) = (ii) here",
                 "honest price: evaluations (ii) / (i) =", "unread stratum: evaluations (ii) / "
                 "(iii) =", "twin coverage, worst over the family"):
        assert line in out, out
    # (i) was judged with t intervals, (ii) with confidence sequences, each run by its own rule
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()
            if ln.lstrip().startswith(("(i) Student", "(ii) honest", "(iii) honest"))}
    assert rows["(i)"][-2] == "p0" and rows["(ii)"][-2] == rows["(iii)"][-2] == "p0-cs", out
    assert rows["(i)"][-1] == rows["(ii)"][-1] == rows["(iii)"][-1] == "0", out  # replays
    # tiny.py knows no unread faults: (iii) is (ii), trial for trial
    assert rows["(ii)"][4:6] == rows["(iii)"][5:7], out
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:3] == ["q", "size", "cov"])
    family = [ln.split() for ln in lines[head + 1:head + 9]]
    assert {(float(r[0]), float(r[1])) for r in family} == {
        (q, s) for q in (0.003, 0.01, 0.03, 0.1) for s in (0.05, 0.5)}, out
    assert all(0.0 <= float(r[2]) <= 1.0 and 0.0 <= float(r[5]) <= 1.0 for r in family), out


def test_intervals_benchmark_runs():
    cmd = [sys.executable, "-m", "benchmarks.intervals", "--reps", "20", "--quick"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "confidence sequence" in proc.stdout and "CS c=3/4" in proc.stdout


def test_rescoring_benchmark_runs_at_toy_size(tmp_path):
    out = tmp_path / "rescoring.json"
    cmd = [sys.executable, "-m", "benchmarks.rescoring", "--toy", "--big", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["failures"] == []  # re-scored metrics equal the full pass, bit for bit
    for part in ("default", "big"):
        rows = data[part]
        assert {(r["model"], r["ber"]) for r in rows} == {
            (m, b) for m in ("fm", "dcn") for b in (1e-6, 1e-4)}
        for r in rows:
            assert r["trials"] > 0 and r["full_ms"] > 0 and r["rescored_ms"] >= 0
            assert 0 <= r["share_pct"] <= 100
    assert "rescored=" in proc.stdout


def test_training_benchmark_runs_at_toy_size(tmp_path):
    out = tmp_path / "train.json"
    cmd = [sys.executable, "-m", "benchmarks.training", "--toy", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    sites = ("weights", "fwd-act", "bwd-act", "param-grads", "optim-state")
    configs = ("ber=1e-07", "ber=1e-05", "ber=0.001", "1/step")
    assert {(r["site"], r["config"]) for r in rows} == {(s, c) for s in sites for c in configs}
    assert all(r["clean_ms"] > 0 for r in rows)
    # one fault per site and step is one fault per step for tensor sites
    assert all(r["faults_per_step"] == 1 for r in rows
               if r["config"] == "1/step" and r["site"] in ("weights", "param-grads"))
    assert all(r["faults_per_step"] > 100 for r in rows if r["config"] == "ber=0.001")


def test_looks_replay_gives_the_trials_a_run_with_that_rule_makes(tmp_path):
    """benchmarks/looks.py replays a rule on stored rows; on rows a tighter rule stored, its
    counts equal those of a real run of the looser rule (a pure function of the rule)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import pandas as pd
    from test_adaptive import _job, _quiet

    from benchmarks.looks import load, replay
    from pytei_ray.launch import run
    from pytei_ray.stats import Precision

    for name, rule in (("tight", "Precision('accuracy', 0.1, max_reps=24, growth=1.5)"),
                       ("loose", "Precision('accuracy', 0.2, max_reps=24, growth=1.5)")):
        (tmp_path / name).mkdir()
        run(_job(tmp_path / name, rule), str(tmp_path / name / "out"), **_quiet())
    frame, min_reps, _ = load(str(tmp_path / "tight" / "out"))
    got = replay(frame, Precision("accuracy", 0.2, max_reps=24, growth=1.5), min_reps)
    real = pd.read_parquet(tmp_path / "loose" / "out")
    assert not got.missing and got.trials == len(real) > 0
    assert got.evaluations == int(real["evaluated"].sum())
    # a schedule whose looks the stored rows do not reach is reported, not guessed
    few = replay(frame[frame["repetition"] < 6], Precision("accuracy", 0.2, max_reps=24),
                 min_reps)
    assert "need 8 repetitions" in few.missing
    out = subprocess.run([sys.executable, "-m", "benchmarks.looks", str(tmp_path / "tight" / "out"),
                          "--precision", "accuracy=0.2", "--max-reps", "24", "--growth", "2",
                          "1.5"], capture_output=True, text=True, check=True).stdout
    assert "| 1.5 | 4, 6, 9, 14, 21, 24 |" in out and "growth 1.5 vs 2" in out
    # the what-if of another bet truncation: one row per truncation, and the library's own
    # is back afterwards
    from benchmarks.looks import truncation
    from pytei_ray.stats import betting

    out = subprocess.run([sys.executable, "-m", "benchmarks.looks", str(tmp_path / "tight" / "out"),
                          "--precision", "accuracy=0.2", "--max-reps", "24", "--growth", "1.5",
                          "--truncation", "0.75", "0.9"], capture_output=True, text=True,
                         check=True).stdout
    assert "| 0.75 | 1.5 | 4, 6, 9, 14, 21, 24 |" in out and "| 0.9 | 1.5 |" in out
    assert "growth 1.5, truncation 0.9 vs 1.5, 0.75" in out
    with truncation(0.9):
        assert betting.betting_cs.__kwdefaults__["truncation"] == 0.9
        lo9, _ = betting.betting_cs(np.full(60, 0.5))
    lo, _ = betting.betting_cs(np.full(60, 0.5))
    assert betting.betting_cs.__kwdefaults__["truncation"] == betting.TRUNCATION
    assert lo < lo9 < 0.5  # a point mass: the larger truncation narrows faster


def test_frozen_benchmark_runs_at_toy_size_and_checks_the_metrics():
    out = subprocess.run([sys.executable, "-m", "benchmarks.frozen", "--toy"],
                         capture_output=True, text=True, check=True).stdout
    assert "| fm | dense |" in out and "| dlrm | predictor |" in out
    out = subprocess.run([sys.executable, "-m", "benchmarks.frozen", "--toy", "--memory"],
                         capture_output=True, text=True, check=True).stdout
    rows = {line.split("|")[1].strip(): [float(x.strip().rstrip("x"))
                                         for x in line.split("|")[2:5]]
            for line in out.splitlines() if line.startswith(("| fm", "| dlrm", "| all"))}
    assert set(rows) == {"fm", "dlrm", "all"}
    for shared, alone, ratio in rows.values():  # three mitigations share most of the golden
        assert 0 < shared < alone and ratio > 1.5  # calls (clip's bounds are rarely reached)


def test_subsample_benchmark_runs_at_toy_size():
    out = subprocess.run([sys.executable, "-m", "benchmarks.subsample", "--toy"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith(("| fm |", "| dlrm |"))]
    assert len(rows) == 6  # two models x three BERs
    ratios = [float(line.split("|")[5].strip().rstrip("x")) for line in rows]
    assert all(r > 0 for r in ratios)
    assert "(model, BER) with |mean sub - full| > 3 SE" in out
