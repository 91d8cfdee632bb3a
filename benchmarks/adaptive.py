"""Evaluations an adaptive campaign saves: a fixed grid vs skipping vs a precision target.

    python -m benchmarks.adaptive                                     # jobs/tiny.py, seconds
    python -m benchmarks.adaptive --job jobs/drs.py --precision auc=0.01 --executor ray

Side by side, in one run, on the same job (each into a fresh temporary directory):

(0) today's fixed grid: the job's repetitions, every trial evaluated (skipping turned off);
(1) the same grid with skipping: trials without an effective fault get the golden metrics;
(a) the fixed grid at the repetition count that makes every cell conclusive at the target:
    the largest count any cell needs, from (0)'s per-cell spread with the plain Student-t
    interval a fixed-count report uses (capped at ``--max-reps``). It is run only with
    ``--run-fixed`` (it is large); otherwise its evaluations are its trial count (a fixed grid
    without skipping evaluates every trial) and its wall time is (0)'s seconds per evaluation
    times that count, marked "est.";
(b) the adaptive campaign with skipping at the same target (``--precision``, ``--max-reps``).

Printed per run: trials, evaluations, trials not evaluated, wall time, the widest remaining
half-width of the target metric's mean over the cells, and cells still open; then the ratios
the issue asks for: skipping alone = (0) / (1) evaluations, adaptive = (a) / (b) evaluations.

``--honest`` (issue 19, "Speed, measured in a benchmark") runs instead, on the same job at the
same target (``--precision``, ``--max-reps``), each into a fresh temporary directory:

(i) the Student-t rule (the reference cost, not honest): the adaptive campaign with the target
    metric declared unbounded (``Campaign(metrics={m: Metric(bounds=(-inf, inf))})``), so
    every look judges a cell by ``golden + (1 - p0) * (t interval of the faulted trials -
    golden)`` at the Bonferroni look level ``Precision.look_confidence``, unclamped, with an
    infinite interval (never settled) while a cell has fewer than 2 faulted trials. The rule
    before issue 19 differed only there: it clamped the interval to the name's range and used
    that range for fewer than 2 faulted trials, so it could stop a cell with p0 >= 1 - 2 * target
    on golden runs alone; (i) never does. The script replays the rule on (i)'s dataset and
    prints how many points got repetitions the rule did not ask for (0: the run used it);
(ii) the honest intervals alone: betting confidence sequences for a bounded metric, no
    correction for the looks, stratified on fault-free trials only
    (``stratify_unread=False``; (i) too);
(iii) the honest intervals with the lever of issue 19 item 3 that is kept: the unread stratum
    (the job as it is: a trial whose faults all lie in table rows no evaluation sample looks
    up is the golden run, with the exact chance ``p_none_read``; docs/report.md). The strata
    on bit classes and exact counts are measured apart (benchmarks/strata.py) and not kept.

Printed per run: trials, evaluations, wall time, cells settled, cells open at the cap (as
``judge_cells`` / ``stopped_at_cap`` judge them, each dataset with its own rule), widest
half-width; then each method's coverage on a simulated twin with known truth (the
rare-catastrophe family at the cells' ``p0`` and golden values, (iii) at its ``p_none_read``:
benchmarks/adaptive_twin.py), worst over the family; then the honest price, evaluations (ii) /
(i), and what the kept lever saves, evaluations (ii) / (iii), with the cells (ii) settles that
(iii) does not (0 is the target).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytei_ray.campaign.jobfile import load_job, parse_params  # noqa: E402
from pytei_ray.driver import run  # noqa: E402
from pytei_ray.execution import ExecutorConfig  # noqa: E402
from pytei_ray.stats import Precision, reps_for_halfwidth  # noqa: E402
from pytei_ray.stats.judge import POINT_COLS  # noqa: E402

CELL = [*POINT_COLS, "mitigation"]


def _run(job, out: Path, executor: str, **kw) -> tuple[pd.DataFrame, float]:
    t0 = time.perf_counter()
    summary = run(job, str(out), executor=executor, config=ExecutorConfig(device="cpu"),
                  progress=False, echo=lambda s: None, **kw)
    wall = time.perf_counter() - t0
    if not summary.complete:
        raise SystemExit(f"run into {out} did not complete: {summary.line()}")
    return pd.read_parquet(out), wall


def _widest(df: pd.DataFrame, target: Precision, min_reps: int, adaptive: bool) -> tuple[float,
                                                                                        int]:
    """Widest half-width of the target metric over the cells, and cells not conclusive, as the
    run and the report judge them (pytei_ray.stats.judge_cells)."""
    from pytei_ray.stats import judge_cells

    widest, open_cells = 0.0, 0
    for _, _, j in judge_cells(df, target, min_reps, POINT_COLS, adaptive=adaptive):
        widest = max(widest, j.estimate.halfwidth if target.on == "mean"
                     else (j.sdc_high - j.sdc_low) / 2)
        open_cells += not j.conclusive
    return widest, open_cells


def _fixed_need(df: pd.DataFrame, target: Precision) -> int:
    """Repetitions a fixed grid needs so that every cell's plain Student-t half-width reaches the
    target (what a fixed-count report suggests), capped at the target's max_reps."""
    m, need = target.metric, 2
    for _, g in df.groupby(CELL, sort=False):
        x = g[m].to_numpy(float)
        x = x[np.isfinite(x)]
        if x.size < 2:
            continue
        width = target.halfwidth * (abs(float(g[f"golden_{m}"].iloc[0])) if target.relative
                                    else 1.0)
        need = max(need, reps_for_halfwidth(float(np.std(x, ddof=1)), width, target.confidence,
                                            target.max_reps))
    return int(min(need, target.max_reps))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--job", default=str(ROOT / "jobs" / "tiny.py"))
    p.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--precision", default="accuracy=0.02",
                   help="target (as the launcher's --precision), default %(default)s")
    p.add_argument("--max-reps", type=int, default=160)
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--run-fixed", action="store_true", help="run (a) instead of estimating it")
    p.add_argument("--keep", help="keep the four datasets under this directory")
    p.add_argument("--honest", action="store_true",
                   help="(i) Student-t rule vs (ii) honest intervals vs (iii) with the unread "
                   "stratum, with twin coverage")
    p.add_argument("--twin-reps", type=int, default=20,
                   help="--honest: simulated campaigns per twin cell and family member")
    p.add_argument("--twin-cells", type=int, default=12,
                   help="--honest: at most this many distinct (p0, golden) twin cells")
    args = p.parse_args(argv)
    if args.twin_reps < 1 or args.twin_cells < 1:
        p.error("--twin-reps and --twin-cells must be >= 1")

    params = parse_params(args.params)
    job = load_job(args.job, params)
    base = job.base_campaign()
    target = Precision.parse(args.precision, max_reps=args.max_reps)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-adaptive-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"job {args.job} {params or ''}: {base.n_trials} trials in its fixed grid "
          f"({base.repetitions} repetitions); target {target.describe()}; executor "
          f"{args.executor}; datasets in {root}")
    if args.honest:
        from benchmarks.adaptive_honest import honest
        honest(job, target, root, args.executor, args.twin_reps, args.twin_cells)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        return
    rows = []

    def record(name: str, df: pd.DataFrame, wall: float | None, adaptive: bool,
               note: str = "") -> None:
        evaluated = int(df["evaluated"].sum())
        widest, n_open = _widest(df, target, base.repetitions, adaptive)
        rows.append(dict(run=name, trials=len(df), evaluations=evaluated,
                         not_evaluated=len(df) - evaluated, wall_s=wall, widest=widest,
                         open_cells=n_open, note=note))

    # (0), (1), (a) are fixed grids whatever the job asks for (jobs/drs.py is adaptive)
    today = job.replace(overrides={"skip_ineffective": False, "precision": None})
    d0, w0 = _run(today, root / "fixed-noskip", args.executor)
    record(f"(0) fixed {base.repetitions} reps, no skipping (today)", d0, w0, False)
    d1, w1 = _run(job.replace(overrides={"precision": None}), root / "fixed-skip", args.executor)
    record(f"(1) fixed {base.repetitions} reps + skipping", d1, w1, False)

    need = _fixed_need(d0, target)
    if args.run_fixed:
        fixed = today.replace(overrides={"skip_ineffective": False, "precision": None,
                                         "repetitions": need})
        da, wa = _run(fixed, root / "fixed-conclusive", args.executor)
        record(f"(a) fixed {need} reps, no skipping", da, wa, False)
    else:
        n_a = len(d0) // base.repetitions * need
        rows.append(dict(run=f"(a) fixed {need} reps, no skipping", trials=n_a,
                         evaluations=n_a, not_evaluated=0, wall_s=w0 / len(d0) * n_a,
                         widest=math.nan, open_cells=-1, note="est. (not run; --run-fixed)"))
    db, wb = _run(job, root / "adaptive", args.executor, precision=target)
    record(f"(b) adaptive {base.repetitions}..{target.max_reps} + skipping", db, wb, True,
           f"{db.groupby(list(POINT_COLS))['repetition'].nunique().value_counts().sort_index().to_dict()}"
           " points per repetition count")

    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    r = {row["run"][:3]: row for row in rows}
    e0, e1 = r["(0)"]["evaluations"], r["(1)"]["evaluations"]
    print(f"skipping alone: {e0} / {e1} evaluations = {e0 / max(1, e1):.2f}x fewer "
          "(target >= 1.6x)")
    print(f"adaptive vs the conclusive fixed grid: {r['(a)']['evaluations']} / "
          f"{r['(b)']['evaluations']} evaluations = "
          f"{r['(a)']['evaluations'] / max(1, r['(b)']['evaluations']):.2f}x fewer (target >= 5x)")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
