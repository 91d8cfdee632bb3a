"""Coverage of an adaptive stopping rule on a simulated twin of a campaign, with known truth.

Used by ``python -m benchmarks.adaptive --honest``. A twin cell has a campaign cell's chance of a
fault-free trial ``p0`` and golden value; a faulted trial keeps golden with probability ``1 - q``
and moves by ``size`` the bad way with probability ``q`` (the rare-catastrophe family, clipped to
the metric's range). Each method's adaptive rule runs on the simulated trials at the campaign's
looks, through :func:`pytei_ray.stats.judge_cell` exactly as :func:`~pytei_ray.stats.judge_cells`
calls it (only the declared range differs: unbounded = Student-t at the Bonferroni look level,
bounded = the betting confidence sequence); the stopped interval either holds the true mean or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pytei_ray.columns import golden_column
from pytei_ray.stats import Metric, Precision, judge_cell
from pytei_ray.stats.judge import CellJudgement

#: Catastrophe chance given a fault, and catastrophe size (issue 19's family).
FAMILY_Q = (0.003, 0.01, 0.03, 0.1)
FAMILY_SIZE = (0.05, 0.5)
CELL = ["p_no_fault", "golden"]


def twin_cells(df: pd.DataFrame, metric: str, limit: int, p0_column: str = "p_no_fault"
               ) -> list[tuple[float, float]]:
    """Distinct ``(p0, golden)`` of the cells (point x mitigation) of a dataset, at most
    ``limit`` of them, spread evenly over the sorted ``p0`` (cells with the same pair are the
    same twin). ``p0_column``: the known golden stratum's chance (``p_none_read`` for a run
    judged on the unread stratum; rows without it fall back to ``p_no_fault``)."""
    golden = pd.to_numeric(df[golden_column(metric)], errors="coerce")
    p0 = pd.to_numeric(df["p_no_fault"], errors="coerce")
    if p0_column in df:
        p0 = pd.to_numeric(df[p0_column], errors="coerce").fillna(p0)
    pairs = pd.DataFrame({"p_no_fault": p0, "golden": golden}).dropna().drop_duplicates()
    pairs = pairs.sort_values(CELL, kind="stable").reset_index(drop=True)
    if len(pairs) > limit:
        pairs = pairs.iloc[np.unique(np.linspace(0, len(pairs) - 1, limit).round().astype(int))]
    return [(float(p), float(g)) for p, g in pairs.itertuples(index=False)]


def stopped(values: np.ndarray, faulted: np.ndarray, golden: float, p0: float,
            target: Precision, min_reps: int, metric: Metric) -> tuple[CellJudgement, int]:
    """The judgement a cell stops with under the adaptive rule, and its repetitions: judged at
    each look (``target.looks(min_reps)``) until conclusive or at ``target.max_reps``."""
    level = target.look_confidence(min_reps)
    for n in target.looks(min_reps):
        j = judge_cell(values[:n], golden, faulted[:n], p0, precision=target,
                       confidence=target.confidence, metric=metric,
                       threshold=target.threshold, level_confidence=level, sequential=True)
        if j.conclusive:
            break
    return j, n


@dataclass
class TwinResult:
    """Per method and family member: simulated cells, covered, settled, repetitions used."""

    cells: int = 0
    covered: int = 0
    settled: int = 0
    reps: int = 0

    @property
    def coverage(self) -> float:
        return self.covered / self.cells if self.cells else math.nan


def simulate(cells: list[tuple[float, float]], target: Precision, min_reps: int,
             methods: dict[str, Metric], reps: int, seed: int = 0
             ) -> dict[tuple[float, float], dict[str, TwinResult]]:
    """Run every method's rule on the same simulated trials (seeded per cell, member, draw).

    Args:
        cells: ``(p0, golden)`` per twin cell (:func:`twin_cells`).
        target: The campaign's stopping rule.
        min_reps: Repetitions of its first look.
        methods: Method name -> the metric declaration its rule judges with.
        reps: Simulated campaigns per cell and family member.
        seed: Base seed.

    Returns:
        ``{(q, size): {method: TwinResult}}``.
    """
    any_metric = next(iter(methods.values()))
    lo, hi = any_metric.bounds
    worse = -1.0 if any_metric.higher_is_better is not False else 1.0
    out: dict[tuple[float, float], dict[str, TwinResult]] = {}
    for qi, q in enumerate(FAMILY_Q):
        for si, size in enumerate(FAMILY_SIZE):
            res = out[(q, size)] = {m: TwinResult() for m in methods}
            for ci, (p0, golden) in enumerate(cells):
                bad = float(np.clip(golden + worse * size, lo, hi))
                truth = golden + (1.0 - p0) * q * (bad - golden)
                for r in range(reps):
                    rng = np.random.default_rng([seed, qi, si, ci, r])
                    faulted = rng.random(target.max_reps) < 1.0 - p0
                    values = np.where(faulted & (rng.random(target.max_reps) < q), bad, golden)
                    for name, metric in methods.items():
                        j, n = stopped(values, faulted, golden, p0, target, min_reps, metric)
                        e, t = j.estimate, res[name]
                        t.cells += 1
                        t.covered += bool(e.low <= truth <= e.high)
                        t.settled += j.conclusive
                        t.reps += n
    return out


def table(results: dict[tuple[float, float], dict[str, TwinResult]]) -> pd.DataFrame:
    """One row per family member: coverage, share settled and mean repetitions per method."""
    rows = []
    for (q, size), res in results.items():
        row: dict = {"q": q, "size": size}
        for name, t in res.items():
            row[f"cov {name}"] = t.coverage
            row[f"settled {name}"] = t.settled / max(1, t.cells)
            row[f"reps {name}"] = t.reps / max(1, t.cells)
        rows.append(row)
    return pd.DataFrame(rows)


def worst(results: dict[tuple[float, float], dict[str, TwinResult]], method: str
          ) -> tuple[float, tuple[float, float]]:
    """Lowest coverage of ``method`` over the family, and the member where it is."""
    key = min(results, key=lambda k: results[k][method].coverage)
    return results[key][method].coverage, key
