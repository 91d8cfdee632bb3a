"""Trials per second of the Ray orchestrator vs a PyTEI-style serial loop vs a Ray Tune grid.

    python benchmarks/orchestrator.py --trial-ms 50 --trials 400 --workers 2

One small campaign (2 MLPs x 5 BERs x R repetitions x 2 mitigations), each trial's evaluate
taking about ``--trial-ms`` (a forward pass repeated to that length, calibrated at start), run
three ways in one process, same injector everywhere:

(a) this orchestrator: ``RayExecutor`` actors keeping replicas, chunks, rows written to Parquet.
    Timed after a warm-up chunk per worker (actors, replicas and golden runs exist, as in any
    campaign longer than a minute); the cold figure (Ray start + actor start) is printed too.
(b) a serial loop as PyTEI's notebooks run: deep-copy the model, inject, evaluate, per trial.
(c) Ray Tune: ``Tuner`` grid search, one Tune trial per (model, BER, repetition, mitigation).

Efficiency of (a) = (sum of time inside evaluate) / (wall time x workers).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JOB = '''
import time

import torch

from pytei_ray.campaign import Campaign
from pytei_ray.mitigations import Clip

WIDTH, BATCH = 256, 256


def mlp(seed):
    def build():
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU(),
                                   torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU(),
                                   torch.nn.Linear(WIDTH, 1))
    return build


def data(name):
    return torch.randn(BATCH, WIDTH, generator=torch.Generator().manual_seed(0))


def make_campaign(passes=1, reps=10, chunk_size=16, cpus=1.0):
    def evaluate(model, x):
        t0 = time.perf_counter()
        for _ in range(passes):
            y = model(x)
        score = float(torch.nan_to_num(y, 0.0, 0.0, 0.0).mean())
        return {"score": score, "eval_s": time.perf_counter() - t0}

    return Campaign(name="bench", models={"m0": mlp(0), "m1": mlp(1)}, data=data,
                    evaluate=evaluate, bers=[1e-7, 1e-6, 1e-5, 1e-4, 1e-3], repetitions=reps,
                    mitigations={"none": None, "clip": Clip()}, chunk_size=chunk_size,
                    num_cpus_per_worker=cpus)
'''


def calibrate(trial_ms: float) -> int:
    """Forward passes of the benchmark MLP (1 thread) that take about ``trial_ms``."""
    import torch

    ns: dict = {}
    exec(JOB, ns)
    model, x = ns["mlp"](0)(), ns["data"]("m0")
    torch.set_num_threads(1)
    with torch.no_grad():
        for _ in range(5):
            model(x)
        t0, n = time.perf_counter(), 50
        for _ in range(n):
            model(x)
    per_pass = (time.perf_counter() - t0) / n
    return max(1, round(trial_ms / 1000 / per_pass))


def bench_orchestrator(job, workers: int, chunk_size: int, out: str) -> dict:
    """(a): warm-up chunk per worker, then all trials timed; rows written to ``out``."""
    from pytei_ray.campaign import expand, make_chunks
    from pytei_ray.execution import ExecutorConfig
    from pytei_ray.execution.ray_executor import RayExecutor
    from pytei_ray.storage import ResultsStore, ResultsWriter

    trials = expand(job.campaign())
    chunks = make_chunks(trials, chunk_size)
    writer = ResultsWriter(ResultsStore(out), metrics=[])
    cfg = ExecutorConfig(num_workers=workers, max_in_flight=2,
                         options={"local_num_cpus": os.cpu_count()})
    t_cold = time.perf_counter()
    ex = RayExecutor(cfg)
    try:
        warm = [[t for t in trials if t.model == m][:1] for m in job.campaign().models] * workers
        ex.run(job, warm, lambda r: None)
        cold = time.perf_counter() - t_cold
        rows: list = []

        def on_result(result) -> None:
            rows.extend(result.rows)
            writer.add(result.rows, result.golden)

        t0 = time.perf_counter()
        ex.run(job, chunks, on_result)
        writer.close()
        wall = time.perf_counter() - t0
    finally:
        ex.close()
    eval_s = sum(r["eval_s"] for r in rows)
    return {"trials": len(rows), "wall": wall, "cold": cold,
            "efficiency": eval_s / (wall * workers), "eval_ms": 1000 * eval_s / len(rows)}


def bench_serial(job, n_trials: int, threads: int) -> dict:
    """(b): per trial deep-copy the pristine model, inject into the copy, evaluate."""
    import torch

    from pytei_ray import Injector
    from pytei_ray.campaign import expand

    torch.set_num_threads(threads)
    campaign = job.campaign()
    trials = expand(campaign)[:n_trials]
    pristine = {m: f() for m, f in campaign.models.items()}
    data = {m: campaign.data(m) for m in campaign.models}
    t0 = time.perf_counter()
    for t in trials:
        model = copy.deepcopy(pristine[t.model])
        mits = campaign.mitigations[t.mitigation]
        inj = Injector(error=campaign.error_models[t.error_model](t.ber), seed=t.seed)
        inj.sample(model).apply(model, mitigations=[mits] if mits else [])
        with torch.no_grad():
            campaign.evaluate(model, data[t.model])
    return {"trials": len(trials), "wall": time.perf_counter() - t0}


def bench_tune(job, n_trials: int, workers: int, storage: str) -> dict:
    """(c): a Tune grid, one Tune trial per (model, BER, repetition, mitigation)."""
    import ray
    from ray import tune

    from pytei_ray.campaign import expand

    campaign = job.campaign()
    trials = expand(campaign)[:n_trials]
    by_key = {(t.model, t.ber, t.repetition, t.mitigation): t for t in trials}

    def trainable(config: dict) -> None:
        import torch

        from pytei_ray import Injector

        # campaign, models and data built once per Tune worker process (Tune's best case)
        cache = sys.modules.setdefault("_pytei_bench_cache", types.ModuleType("cache")).__dict__
        if "campaign" not in cache:
            cache["campaign"] = job.campaign()
        c = cache["campaign"]
        t = by_key[tuple(config["key"])]
        if t.model not in cache:
            cache[t.model] = (c.models[t.model](), c.data(t.model))
        model, data = cache[t.model]
        mits = c.mitigations[t.mitigation]
        inj = Injector(error=c.error_models[t.error_model](t.ber), seed=t.seed)
        with inj.inject(model, mitigations=[mits] if mits else []), torch.no_grad():
            out = c.evaluate(model, data)
        tune.report(out)

    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"key": tune.grid_search([list(k) for k in by_key])},
            tune_config=tune.TuneConfig(max_concurrent_trials=workers),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        t0 = time.perf_counter()
        results = tuner.fit()
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return {"trials": len(results), "wall": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trial-ms", type=float, default=50.0, help="evaluate time per trial")
    p.add_argument("--trials", type=int, default=400, help="trials for (a) and (b)")
    p.add_argument("--tune-trials", type=int, default=100, help="trials for (c)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--skip-tune", action="store_true")
    args = p.parse_args(argv)

    from pytei_ray.execution.ray_runtime import quiet_env

    quiet_env()
    from pytei_ray.campaign import JobRef

    passes = calibrate(args.trial_ms)
    reps = max(1, -(-args.trials // 20))
    tmp = Path(tempfile.mkdtemp(prefix="bench"))
    (tmp / "bench_job.py").write_text(JOB)
    job = JobRef(str(tmp / "bench_job.py"), JOB,
                 {"passes": passes, "reps": reps, "chunk_size": args.chunk_size})
    print(f"campaign: {job.campaign().n_trials} trials of ~{args.trial_ms:g} ms ({passes} "
          f"forward passes), {args.workers} workers, chunk {args.chunk_size}, "
          f"{os.cpu_count()} cores", flush=True)

    a = bench_orchestrator(job, args.workers, args.chunk_size, str(tmp / "out"))
    b = bench_serial(job, min(args.trials, 100), threads=1)  # one core, like each worker
    c = None if args.skip_tune else bench_tune(job, args.tune_trials, args.workers,
                                               str(tmp / "tune"))
    rate = {k: v["trials"] / v["wall"] for k, v in (("a", a), ("b", b), ("c", c)) if v}
    print(f"\n{'':44}{'trials':>8}{'wall s':>9}{'trials/s':>10}")
    rows = [("(a) pytei_ray orchestrator (Ray actors)", a),
            ("(b) serial loop, deepcopy/trial (1 core)", b),
            ("(c) Ray Tune grid, 1 trial per point", c)]
    for name, r in rows:
        if r:
            print(f"{name:44}{r['trials']:>8}{r['wall']:>9.2f}{r['trials'] / r['wall']:>10.2f}")
    print(f"\n(a) efficiency = sum(evaluate) / (wall x workers) = {a['efficiency']:.3f} "
          f"(mean evaluate {a['eval_ms']:.1f} ms; cold start {a['cold']:.1f} s not included)")
    print(f"(a) / (b) = {rate['a'] / rate['b']:.1f}x")
    if c:
        print(f"(a) / (c) = {rate['a'] / rate['c']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
