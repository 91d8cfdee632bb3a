"""Subsampled scoring on the trained DRS models: what a full evaluation costs against a random
subset's, and whether the subset's AUC estimates the full one without bias on real faults.

    python -m benchmarks.subsample                       # checkpoints of results/drs
    python -m benchmarks.subsample --results DIR --m 1000 --reps 40 --bers 1e-4 1e-3 1e-2
    python -m benchmarks.subsample --toy                 # seconds (the smoke test runs this)

For every DRS model and BER, ``--reps`` fault draws over all parameters (the ``all`` target,
the campaign's sampler and seeds 0, 1, ...) are applied to the trained model, which is scored
twice, interleaved: on all test samples (``study.evaluate``) and on the trial's subsample
(``subsample_ids(seed, N, m)``, ``study.score_subset``), as a campaign with
``subsample=m`` does. Printed per (model, BER): the mean times (one torch thread) and their
ratio; the mean full AUC and its spread over the draws (``sd full``, the outcome shape the
confidence sequence sees); the mean of ``sub - full`` with twice its standard error (unbiased:
it should straddle 0) and the spread ``sd(sub - full)`` the subset adds. Trained checkpoints are
loaded from ``--results``'s artifact cache (trained there first if missing). ``--toy``: a
2,000-row log, two untrained models, 4 draws, a subset of 100.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from pytei_ray import BitFlip
from pytei_ray.execution.context import BuildContext
from pytei_ray.faults.faultmap import sample_fault_map
from pytei_ray.injection import apply_faults, resolve_targets, subsample_ids
from pytei_ray.studies.drs import MODELS, TARGET_SETS, build_model, synthetic_criteo
from pytei_ray.studies.drs.data import split as split_log
from pytei_ray.studies.drs.study import DRSStudy, EvalData


def bench(name: str, model: torch.nn.Module, study: DRSStudy, data: EvalData,
          bers: Sequence[float], reps: int, m: int) -> list[dict[str, float]]:
    sites = resolve_targets(model, TARGET_SETS["all"])
    n = len(data.test)
    rows = []
    for ber in bers:
        t_full, t_sub, full, sub = [], [], [], []
        for seed in range(reps):
            fmap = sample_fault_map([s.info for s in sites], BitFlip(ber), seed)
            ids = torch.from_numpy(subsample_ids(seed, n, m))
            with apply_faults(fmap, model, (), {s.name: s for s in sites}), torch.no_grad():
                t0 = time.perf_counter()
                a = study.evaluate(model, data)["auc"]
                t1 = time.perf_counter()
                b = study.score_subset(study.outputs(model, data, ids), data, ids)["auc"]
                t2 = time.perf_counter()
            t_full.append(t1 - t0)
            t_sub.append(t2 - t1)
            full.append(a)
            sub.append(b)
        d = np.array(sub) - np.array(full)
        row = {"ber": ber, "full_ms": 1e3 * statistics.mean(t_full),
               "sub_ms": 1e3 * statistics.mean(t_sub), "auc": float(np.mean(full)),
               "sd_full": float(np.std(full, ddof=1)), "bias": float(d.mean()),
               "se": float(d.std(ddof=1) / math.sqrt(len(d))), "sd_diff": float(d.std(ddof=1))}
        rows.append(row)
        print(f"| {name} | {ber:g} | {row['full_ms']:.1f} | {row['sub_ms']:.1f} | "
              f"{row['full_ms'] / row['sub_ms']:.1f}x | {row['auc']:.3f} | {row['sd_full']:.3f} "
              f"| {row['bias']:+.4f} +- {2 * row['se']:.4f} | {row['sd_diff']:.4f} |", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results/drs",
                   help="results directory whose artifact cache holds the trained models")
    p.add_argument("--bers", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--m", type=int, default=1000, help="samples in a subsample")
    p.add_argument("--toy", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as a Ray worker of 1 CPU
    study = DRSStudy.preset("full")
    if args.toy:
        _, val, test = split_log(synthetic_criteo(2000, seed=3), seed=3)
        data, m, reps = EvalData(test, val), 100, 4
        models = {name: build_model(name, test.field_dims, test.n_dense, seed=0).eval()
                  for name in ("fm", "dlrm")}
    else:
        data, m, reps = study.eval_data("fm"), args.m, args.reps
        ctx = BuildContext(args.results)
        models = {name: study.model(name)(ctx) for name in sorted(MODELS)}
    print(f"test split {len(data.test):,} samples, subsets of {m}, {reps} fault draws per "
          "(model, BER), target all, 1 thread")
    print("| model | BER | full ms | subset ms | ratio | mean AUC | sd full | mean sub - full "
          "(+- 2 SE) | sd(sub - full) |")
    print("|---|---|---|---|---|---|---|---|---|")
    outside = 0
    for name, model in models.items():
        for row in bench(name, model, study, data, args.bers, reps, m):
            outside += abs(row["bias"]) > 3 * row["se"] > 0
    print(f"{outside} (model, BER) with |mean sub - full| > 3 SE (about 1 in 370 by chance)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
