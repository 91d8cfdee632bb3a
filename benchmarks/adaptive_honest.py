"""``python -m benchmarks.adaptive --honest``: the Student-t rule vs the honest intervals.

What (i), (ii) and (iii) are, and what is printed: benchmarks/adaptive.py's docstring.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.adaptive import _run
from benchmarks.adaptive_twin import FAMILY_Q, FAMILY_SIZE, simulate, table, twin_cells, worst
from pytei_ray.columns import golden_column
from pytei_ray.stats import Metric, Precision, judge_cells, open_points, resolve_metric
from pytei_ray.stats.judge import POINT_COLS, stopped_at_cap

T_RULE, HONEST = "(i)", "(ii)"


def _metric(campaign, target: Precision, df: pd.DataFrame | None = None) -> Metric:
    """The range and direction the honest run judges ``target.metric`` with (as judge_cells)."""
    name = target.metric
    observed = () if df is None else np.concatenate([
        pd.to_numeric(df[name], errors="coerce").to_numpy(float),
        pd.to_numeric(df[golden_column(name)], errors="coerce").to_numpy(float)])
    info = resolve_metric(name, campaign.metric_info(name) or Metric(), observed)
    if target.higher_is_better is not None:
        info = Metric(info.bounds, target.higher_is_better)
    return info


def _judged(df: pd.DataFrame, target: Precision, min_reps: int, metric: Metric) -> dict:
    """Cells settled, open at the cap, open below it, widest half-width, interval methods."""
    settled = at_cap = below = 0
    widest, methods = 0.0, set()
    for _, g, j in judge_cells(df, target, min_reps, metric=metric):
        settled += j.conclusive
        cap = stopped_at_cap(g, j, target.max_reps)
        at_cap += cap
        below += not j.conclusive and not cap
        widest = max(widest, j.estimate.halfwidth)
        methods.add(j.estimate.method)
    return dict(cells_settled=settled, open_at_cap=at_cap, open_below_cap=below,
                widest=widest, intervals=",".join(sorted(methods)))


def replay_mismatches(df: pd.DataFrame, target: Precision, min_reps: int,
                      metric: Metric) -> int:
    """Points whose repetitions differ from what the rule (judged with ``metric``) asks for at
    each look: a point that reached a look gets more repetitions iff the rule calls it open."""
    cols = [c for c in POINT_COLS if c in df]
    reps = df.groupby(cols, sort=False, dropna=False)["repetition"].max() + 1
    reps.index = [k if isinstance(k, tuple) else (k,) for k in reps.index]
    looks, bad = target.looks(min_reps), 0
    for li, n in enumerate(looks[:-1]):
        opened = open_points(df, target, min_reps, li, metric=metric)
        for key, r in reps.items():
            if r >= n:
                bad += (key in opened) != (r > n)
    return bad


def honest(job, target: Precision, root: Path, executor: str, twin_reps: int,
           twin_cells_max: int) -> None:
    """Run (i) and (ii), judge both, simulate the twin, print the table and the ratio line."""
    base = job.base_campaign()
    min_reps, name = base.repetitions, target.metric
    declared = _metric(base, target)
    t_metric = Metric(bounds=(-math.inf, math.inf), higher_is_better=declared.higher_is_better)
    job_t = job.replace(overrides={**dict(job.overrides),
                                   "metrics": {**dict(base.metrics or {}), name: t_metric}})
    rows, frames = [], {}
    for label, j, rule in ((T_RULE, job_t, "Student-t, Bonferroni looks"),
                           (HONEST, job, "honest intervals alone")):
        df, wall = _run(j, root / ("t-rule" if label == T_RULE else "honest"), executor,
                        precision=target)
        metric = t_metric if label == T_RULE else _metric(base, target, df)
        frames[label] = (df, metric)
        rows.append(dict(run=f"{label} {rule}", trials=len(df),
                         evaluations=int(df["evaluated"].sum()), wall_s=wall,
                         **_judged(df, target, min_reps, metric),
                         replay_mismatch=replay_mismatches(df, target, min_reps, metric)))
    print(f"looks {target.looks(min_reps)}; (i) t intervals at level "
          f"{target.look_confidence(min_reps):.4g} per look, (ii) "
          f"{frames[HONEST][1].bounds} {target.confidence:.0%} confidence sequence")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("(iii) honest + strata levers: not run: no strata lever is wired into campaigns "
          "(docs/strata.md); benchmarks/strata.py measures them separately")

    df2, honest_metric = frames[HONEST]
    cells = twin_cells(df2, name, twin_cells_max)
    t0 = time.perf_counter()
    results = simulate(cells, target, min_reps, {T_RULE: t_metric, HONEST: honest_metric},
                       twin_reps)
    print(f"twin: {len(cells)} cells (distinct p0, golden of (ii); p0 "
          f"{min(c[0] for c in cells):.3g}..{max(c[0] for c in cells):.3g}), catastrophe "
          f"chance q in {FAMILY_Q}, size in {FAMILY_SIZE} (clipped to "
          f"{honest_metric.bounds}), {twin_reps} draws each, "
          f"{time.perf_counter() - t0:.1f} s")
    with pd.option_context("display.width", 200):
        print(table(results).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    cov_t, at_t = worst(results, T_RULE)
    cov_h, at_h = worst(results, HONEST)
    e_t, e_h = rows[0]["evaluations"], rows[1]["evaluations"]
    print(f"honest price: evaluations (ii) / (i) = {e_h} / {e_t} = {e_h / max(1, e_t):.2f}x")
    print(f"twin coverage, worst over the family: (i) {cov_t:.1%} at q={at_t[0]:g} "
          f"size={at_t[1]:g}, (ii) {cov_h:.1%} at q={at_h[0]:g} size={at_h[1]:g} "
          "(target: (ii) >= 94% where (i) is not)")
