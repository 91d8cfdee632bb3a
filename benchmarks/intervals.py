"""Coverage and cost of the cell intervals on simulated cells with a known truth (issue 19).

    python -m benchmarks.intervals                 # the full grid, ~1-2 minutes on 2 cores
    python -m benchmarks.intervals --reps 100 --quick

Prints, for the rare-catastrophe grid (golden 0.8, a drop of 0.05 or 0.5 with chance 0.3%..50%
given a fault; p0 in {0, 0.5, 0.9, 0.99}; 10..640 trials) at nominal 95%:

1. the lowest coverage over the grid of the old p0 + Student-t interval (exact enumeration) and
   of the betting confidence sequence (simulation), at fixed trial counts;
2. adaptive runs (looks 10, 20, ..., 640; stop when mean +- target holds the interval) for
   the old rule (t at the Bonferroni look level) and the new one (CS, no look correction):
   coverage, share of conclusive cells within the target, and the mean trials per cell, for
   the bet truncation c = 1/2 (confseq's default) and 3/4 (ours);
3. the time ``betting_cs`` takes for a round's cells (cells x trials).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from coverage_sim import (  # noqa: E402
    CAT_CHANCES,
    CAT_SIZES,
    P0S,
    TARGETS,
    TRIALS,
    adaptive,
    adaptive_fast,
    draw_cells,
    family,
    first_miss,
    t_cells,
)
from test_stats_cs_coverage import old_t_exact_coverage  # noqa: E402

from pytei_ray.stats import betting_cs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1000, help="simulated cells per grid cell")
    ap.add_argument("--quick", action="store_true", help="catastrophe chances 1%% and 10%% only")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    chances = (0.01, 0.1) if args.quick else CAT_CHANCES
    grid = list(itertools.product(chances, CAT_SIZES, P0S))

    old = [c for q, s, n in itertools.product(chances, CAT_SIZES, TRIALS)
           for c in old_t_exact_coverage(q, s, n).values()]
    new = []
    for q, s, p0 in grid:
        name = f"cat:{q}:{s}"
        values, faulted, _ = draw_cells(rng, name, p0, args.reps, TRIALS[-1])
        miss = first_miss(values, faulted, family(name)[1])
        n1 = np.cumsum(faulted, axis=1)[:, np.array(TRIALS) - 1]
        new.extend((miss[:, None] > n1).mean(axis=0))
    print(f"1. fixed counts, {len(old)} cells: lowest coverage old t {min(old):.3f} "
          f"({sum(c < 0.94 for c in old)} cells < 94%), confidence sequence {min(new):.3f} "
          f"({sum(c < 0.94 for c in new)} cells < 94%)")

    print("2. adaptive runs (coverage min / conclusive within target / mean trials per cell):")
    for target in TARGETS:
        res = {}
        for label, c in (("CS c=1/2", 0.5), ("CS c=3/4", 0.75), ("old t", None)):
            covs, close, trials = [], [0, 0], []
            for q, s, p0 in grid:
                name = f"cat:{q}:{s}"
                values, faulted, truth = draw_cells(np.random.default_rng(
                    [args.seed, int(q * 1e4), int(s * 100), int(p0 * 100)]), name, p0,
                    args.reps if c else min(args.reps, 400), TRIALS[-1])
                if c is None:
                    mean, low, high, stop, done = adaptive(
                        values, faulted, p0, target, method=t_cells,
                        confidence=1 - 0.05 / len(TRIALS))
                    covered = (low <= truth) & (truth <= high)
                else:
                    mean, covered, stop, done = adaptive_fast(
                        values, faulted, p0, target, family(name)[1], truncation=c)
                covs.append(covered.mean())
                close[0] += int((np.abs(mean[done] - truth) <= target).sum())
                close[1] += int(done.sum())
                trials.append(stop.mean())
            res[label] = (min(covs), close[0] / max(close[1], 1), float(np.mean(trials)))
        print(f"   target +-{target}: " + "; ".join(
            f"{k} {v[0]:.3f} / {v[1]:.3f} / {v[2]:.0f}" for k, v in res.items()))

    print("3. betting_cs time per round:")
    for cells, n in ((100, 160), (500, 160), (200, 640)):
        x = np.where(rng.random((cells, n)) < 0.03, 0.3, 0.8)
        t0 = time.perf_counter()
        betting_cs(x)
        print(f"   {cells} cells x {n} trials: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
