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
from pytei_ray.columns import UNREAD_COLUMNS, golden_column
from pytei_ray.stats import Metric, Precision, judge_cells, open_points, resolve_metric
from pytei_ray.stats.judge import POINT_COLS, stopped_at_cap, without_unread

T_RULE, HONEST, STRATA = "(i)", "(ii)", "(iii)"


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


def _settled(df: pd.DataFrame, target: Precision, min_reps: int, metric: Metric) -> set:
    return {key for key, _, j in judge_cells(df, target, min_reps, metric=metric)
            if j.conclusive}


def honest(job, target: Precision, root: Path, executor: str, twin_reps: int,
           twin_cells_max: int) -> None:
    """Run (i), (ii) and (iii), judge each, simulate the twins, print the tables and ratios."""
    base = job.base_campaign()
    min_reps, name = base.repetitions, target.metric
    declared = _metric(base, target)
    t_metric = Metric(bounds=(-math.inf, math.inf), higher_is_better=declared.higher_is_better)
    plain = {**dict(job.overrides), "stratify_unread": False}
    job_t = job.replace(overrides={**plain,
                                   "metrics": {**dict(base.metrics or {}), name: t_metric}})
    job_h = job.replace(overrides=plain)
    job_s = job.replace(overrides={**dict(job.overrides), "stratify_unread": True})
    rows, frames = [], {}
    for label, j, rule, folder in (
            (T_RULE, job_t, "Student-t, Bonferroni looks", "t-rule"),
            (HONEST, job_h, "honest intervals alone", "honest"),
            (STRATA, job_s, "honest + unread stratum", "honest-unread")):
        df, wall = _run(j, root / folder, executor, precision=target)
        df = df if label == STRATA else without_unread(df)  # as its rule judged it
        metric = t_metric if label == T_RULE else _metric(base, target, df)
        frames[label] = (df, metric)
        rows.append(dict(run=f"{label} {rule}", trials=len(df),
                         evaluations=int(df["evaluated"].sum()), wall_s=wall,
                         **_judged(df, target, min_reps, metric),
                         replay_mismatch=replay_mismatches(df, target, min_reps, metric)))
    print(f"looks {target.looks(min_reps)}; (i) t intervals at level "
          f"{target.look_confidence(min_reps):.4g} per look, (ii) and (iii) "
          f"{frames[HONEST][1].bounds} {target.confidence:.0%} confidence sequence; (iii) "
          "judges on the trials with a fault the evaluation reads (p0 = p_none_read)")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    known = frames[STRATA][0]
    if not set(UNREAD_COLUMNS) <= set(known) or known["p_none_read"].isna().all():
        print("(iii) = (ii) here: no trial of this job knows which faults its evaluation reads "
              "(no split evaluation with embedding tables; docs/report.md)")

    df2, honest_metric = frames[HONEST]
    df3, strata_metric = frames[STRATA]
    t0 = time.perf_counter()
    cells = twin_cells(df2, name, twin_cells_max)
    results = simulate(cells, target, min_reps, {T_RULE: t_metric, HONEST: honest_metric},
                       twin_reps)
    cells3 = twin_cells(df3, name, twin_cells_max, p0_column="p_none_read")
    results3 = simulate(cells3, target, min_reps, {STRATA: strata_metric}, twin_reps)
    for key in results:
        results[key].update(results3[key])
    print(f"twin: {len(cells)} cells (distinct p0, golden of (ii); p0 "
          f"{min(c[0] for c in cells):.3g}..{max(c[0] for c in cells):.3g}) and "
          f"{len(cells3)} of (iii) (p0 = p_none_read {min(c[0] for c in cells3):.3g}.."
          f"{max(c[0] for c in cells3):.3g}), catastrophe chance q in {FAMILY_Q}, size in "
          f"{FAMILY_SIZE} (clipped to {honest_metric.bounds}), {twin_reps} draws each, "
          f"{time.perf_counter() - t0:.1f} s")
    with pd.option_context("display.width", 200):
        print(table(results).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    e_t, e_h, e_s = (r["evaluations"] for r in rows)
    print(f"honest price: evaluations (ii) / (i) = {e_h} / {e_t} = {e_h / max(1, e_t):.2f}x")
    both = _settled(df2, target, min_reps, honest_metric)
    kept = _settled(df3, target, min_reps, strata_metric)
    print(f"unread stratum: evaluations (ii) / (iii) = {e_h} / {e_s} = "
          f"{e_h / max(1, e_s):.2f}x, trials {rows[1]['trials']} / {rows[2]['trials']} = "
          f"{rows[1]['trials'] / max(1, rows[2]['trials']):.2f}x, wall "
          f"{rows[1]['wall_s']:.0f} / {rows[2]['wall_s']:.0f} s; cells settled by (ii) that "
          f"(iii) leaves open: {len(both - kept)} (of {len(both)}); settled only by (iii): "
          f"{len(kept - both)}")
    cov = {m: worst(results, m) for m in (T_RULE, HONEST, STRATA)}
    print("twin coverage, worst over the family: " + ", ".join(
        f"{m} {c:.1%} at q={at[0]:g} size={at[1]:g}" for m, (c, at) in cov.items())
        + " (target: (ii) and (iii) >= 94% where (i) is not)")
