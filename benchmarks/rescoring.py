"""Per-trial evaluation time of embedding-table faults: affected-sample re-scoring vs full scoring.

    python -m benchmarks.rescoring                   # a 150k-row DRS log, test 15,000 (--rows)
    python -m benchmarks.rescoring --big             # + a 10^6-row table (larger cardinalities)
    python -m benchmarks.rescoring --toy             # seconds (the smoke test runs this)
    python -m benchmarks.rescoring --json out.json

For every DRS model and BER (``--bers``, default 1e-8 .. 1e-4), faults are sampled over the
embedding tables only (``embedding.factors.weight`` and ``embedding.linear.weight``: the rows
the test samples look up) with the campaign's sampler, and the same faulty model is scored twice,
interleaved: in full (``split(model, data)``: every test sample) and re-scored (the samples that
look up a faulted row, patched into the golden outputs). Both metrics are compared bit for bit
(any difference is a failure: exit status 1). Only trials with at least one fault are timed
(fault-free trials cost no evaluation either way); ``no-fault %`` says how many draws had none,
``skip %`` how many faulted trials touched no looked-up row (re-scoring: golden metrics, no
evaluation). ``share %`` is the mean share of test samples re-scored (a trial affecting more
than half of them is scored in full and counts as 100%). Times are means per faulted trial
(medians in the JSON), one torch thread; ``x`` is the ratio of the means, i.e. what a campaign
of such trials saves. The models are untrained (seeded weights spread away from
their init): evaluation time and the share of samples do not depend on the weights' values.

``--big``: the synthetic generator with every field's cardinality scaled so that the table has
about 10^6 rows; the model's fields keep every category as a row (as hashed production tables
do), and the test split is a seeded 10% of the rows. Setup (index map and self-check) times are
printed once per model, with the time of ``score`` alone on all test samples: a re-scored trial
that affects any sample pays it in full (the metrics are computed from every output), so it is
the floor of the re-scored times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pytei_ray import BitFlip
from pytei_ray.faults.faultmap import sample_fault_map
from pytei_ray.injection import (
    SplitEvaluation,
    apply_faults,
    build_index_map,
    prepare_rescoring,
    resolve_targets,
    sample_batches,
)
from pytei_ray.studies.drs import MODELS, build_model, synthetic_criteo
from pytei_ray.studies.drs.data import CRITEO_CARDINALITIES, split
from pytei_ray.studies.drs.train import binary_metrics

BERS = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4]
TABLES = ["embedding.factors.weight", "embedding.linear.weight"]


def drs_outputs(model: torch.nn.Module, log: Any, indices: Any = None) -> torch.Tensor:
    return torch.cat([model(log.dense[ids], log.sparse[ids])[:n]
                      for ids, n in sample_batches(len(log), indices, batch_size=1024)])


SPLIT = SplitEvaluation(drs_outputs, lambda out, log: binary_metrics(out, log.labels))


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    return list(a) == list(b) and all(
        np.float64(a[k]).tobytes() == np.float64(b[k]).tobytes() for k in a)


def bench_model(name: str, log: Any, bers: list[float], reps: int, max_draws: int,
                failures: list[str]) -> list[dict[str, Any]]:
    model = build_model(name, log.field_dims, log.n_dense, seed=0).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    t0 = time.perf_counter()
    index_map, _ = build_index_map(model, log, SPLIT)
    t_map = time.perf_counter() - t0
    t0 = time.perf_counter()
    rescorer = prepare_rescoring(model, log, SPLIT, index_map)
    t_check = time.perf_counter() - t0
    if not rescorer.enabled:
        failures.append(f"{name}: re-scoring off: {rescorer.reason}")
        return []
    sites = resolve_targets(model, [t for t in TABLES if t in dict(model.named_parameters())])
    n_rows = sum(s.tensor.shape[0] for s in sites)
    score_s = []
    for _ in range(5):
        t0 = time.perf_counter()
        SPLIT.score(rescorer.golden_outputs, log)
        score_s.append(time.perf_counter() - t0)
    score_ms = statistics.median(score_s) * 1e3  # the floor of a re-scored trial
    print(f"{name}: {n_rows:,} table rows, {index_map.n_lookups:,} (row, sample) pairs, index "
          f"map {t_map * 1e3:.0f} ms, self-check {t_check * 1e3:.0f} ms, score alone "
          f"{score_ms:.1f} ms", flush=True)
    rows = []
    for ber in bers:
        full_ms, re_ms, shares = [], [], []
        draws = skipped = 0
        for seed in range(max_draws):
            if len(full_ms) >= reps:
                break
            fmap = sample_fault_map([s.info for s in sites], BitFlip(ber=ber), seed)
            draws += 1
            if fmap.n_words == 0:
                continue
            with apply_faults(fmap, model) as applied, torch.no_grad():
                t0 = time.perf_counter()
                full = SPLIT(model, log)
                t1 = time.perf_counter()
                ids = rescorer.plan(applied.map)  # None: most samples affected, full pass
                fast = (SPLIT(model, log) if ids is None else rescorer.metrics(model, ids)
                        if len(ids) else rescorer.golden_metrics)
                t2 = time.perf_counter()
            if not same(full, fast):
                failures.append(f"{name} ber={ber:g} seed={seed}: {full} != {fast}")
            full_ms.append((t1 - t0) * 1e3)
            re_ms.append((t2 - t1) * 1e3)
            shares.append(1.0 if ids is None else len(ids) / len(log))
            skipped += ids is not None and len(ids) == 0
        if not full_ms:
            rows.append({"model": name, "ber": ber, "draws": draws, "trials": 0})
            continue
        f, r = statistics.mean(full_ms), statistics.mean(re_ms)
        rows.append({"model": name, "ber": ber, "draws": draws, "trials": len(full_ms),
                     "no_fault_pct": 100 * (draws - len(full_ms)) / draws,
                     "skip_pct": 100 * skipped / len(full_ms),
                     "share_pct": 100 * statistics.mean(shares), "full_ms": f, "rescored_ms": r,
                     "full_median_ms": statistics.median(full_ms),
                     "rescored_median_ms": statistics.median(re_ms), "score_ms": score_ms,
                     "speedup": f / r if r > 0 else float("inf")})
        row = rows[-1]
        print(f"  ber={ber:<6g} trials={row['trials']:<3} no-fault%={row['no_fault_pct']:5.1f} "
              f"skip%={row['skip_pct']:5.1f} share%={row['share_pct']:6.3f} "
              f"full={f:8.2f} ms  rescored={r:7.3f} ms  x{row['speedup']:.1f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=150_000, help="log rows (test = 10%%)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--bers", nargs="+", type=float, default=BERS)
    ap.add_argument("--reps", type=int, default=15, help="faulted trials per (model, BER)")
    ap.add_argument("--max-draws", type=int, default=200, help="fault draws per (model, BER)")
    ap.add_argument("--big", action="store_true", help="also a table of ~10^6 rows")
    ap.add_argument("--big-rows", type=int, default=10**6, help="table rows of --big")
    ap.add_argument("--toy", action="store_true", help="tiny sizes (a smoke test)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.toy:
        args.rows, args.reps, args.max_draws, args.big_rows = 3000, 2, 20, 20_000
        args.models, args.bers = ["fm", "dcn"], [1e-6, 1e-4]
    torch.set_num_threads(1)
    failures: list[str] = []
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    _, _, test = split(synthetic_criteo(args.rows, seed=0), seed=0)
    print(f"DRS synthetic log, {args.rows:,} rows, test split {len(test):,} samples "
          f"(vocabularies fit on train: {sum(test.field_dims):,} table rows)")
    results["default"] = [r for m in args.models for r in
                          bench_model(m, test, args.bers, args.reps, args.max_draws, failures)]
    if args.big:
        scale = args.big_rows / sum(CRITEO_CARDINALITIES)
        cards = [max(2, round(c * scale)) for c in CRITEO_CARDINALITIES]
        log = synthetic_criteo(args.rows, seed=0, cardinalities=cards)
        test = log.subset(torch.from_numpy(
            np.sort(np.random.default_rng(0).permutation(len(log))[:len(log) // 10])))
        print(f"\nLarger cardinalities: {sum(test.field_dims):,} table rows, test "
              f"{len(test):,} samples")
        results["big"] = [r for m in args.models for r in
                          bench_model(m, test, args.bers, args.reps, args.max_draws, failures)]
    results["failures"] = failures
    for f in failures:
        print("FAILED:", f, file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
