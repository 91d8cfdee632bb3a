"""What replaying the fault-free children's golden outputs saves per fully scored DRS trial.

For each DRS model, faults at one BER in the ``dense`` or the ``predictor`` weights (the same
faults both ways), the test split scored in full with the golden outputs of the children that
hold no fault replayed (:class:`pytei_ray.injection.frozen.FrozenOutputs`, as the workers do)
and with every child computed, interleaved; metrics compared bit for bit (a difference fails the
run). With ``--dataset DIR`` (a DRS results directory) it also applies each (model, target)'s
ratio to the trial time that dataset spent scoring such trials in full: the saving on that run.

    python -m benchmarks.frozen                        # 100k-row log (test 10,000), BER 1e-3
    python -m benchmarks.frozen --dataset results/drs  # + the saving on a stored DRS run
    python -m benchmarks.frozen --toy                  # seconds (tests/test_benchmarks.py)
    python -m benchmarks.frozen --memory results/drs   # what a worker's recordings hold

``--memory DIR`` prints instead the bytes a worker's recordings hold for each model of
``jobs/drs.py`` under its four mitigations, recorded as the workers do (each mitigation's
recording sharing the tensors equal to the earlier ones') and each recorded alone, with the
trained checkpoints stored in ``DIR`` (trained first when absent: about a minute).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from pytei_ray import BitFlip
from pytei_ray.execution.replay import ReplicaReplay
from pytei_ray.faults.faultmap import sample_fault_map
from pytei_ray.injection import apply_faults, resolve_targets
from pytei_ray.injection.frozen import FrozenOutputs
from pytei_ray.mitigations import SBP, Clip, fresh_instances
from pytei_ray.studies.drs import CLAMP_LAYERS, MODELS, DRSStudy, build_model, synthetic_criteo
from pytei_ray.studies.drs.data import split as split_log
from pytei_ray.studies.drs.study import EvalData

TARGETS = {"dense": ["dense.*"], "predictor": ["predictor.*"]}


def _bits(metrics: dict[str, float]) -> list[bytes]:
    return [np.float64(metrics[k]).tobytes() for k in sorted(metrics)]


def measure(name: str, study: DRSStudy, data: EvalData, target: str, ber: float,
            reps: int) -> tuple[float, float]:
    """(ms replayed, ms computed): medians over ``reps`` interleaved full evaluations."""
    log = data.test
    model = build_model(name, log.field_dims, log.n_dense, seed=0).eval()
    frozen = FrozenOutputs(model)
    with torch.no_grad():
        frozen.record(lambda: study.evaluate(model, data))
    sites = resolve_targets(model, TARGETS[target])
    fmap = sample_fault_map([s.info for s in sites], BitFlip(ber), 1)
    times: dict[bool, list[float]] = {True: [], False: []}
    with apply_faults(fmap, model, (), {s.name: s for s in sites}) as applied, torch.no_grad():
        hit = [tf.name for tf in applied.map.tensors if tf.n_words]
        by_name = {s.name: s for s in sites}
        names = frozen.frozen(hit, [by_name[n].tensor for n in hit])
        results = {}
        for _ in range(reps):
            for replay in (True, False):
                t0 = time.perf_counter()
                if replay:
                    with frozen.replay(names):
                        results[replay] = study.evaluate(model, data)
                else:
                    results[replay] = study.evaluate(model, data)
                times[replay].append(time.perf_counter() - t0)
        if _bits(results[True]) != _bits(results[False]):
            raise SystemExit(f"{name}/{target}: replayed metrics differ: {results}")
    return (1e3 * statistics.median(times[True]), 1e3 * statistics.median(times[False]))


def memory(models: dict[str, tuple[torch.nn.Module, Any]], mitigations: dict[str, Any],
           evaluate: Callable[[torch.nn.Module, Any], Any],
           calibrate: Callable[[torch.nn.Module, Any], Any]) -> dict[str, tuple[int, int]]:
    """Model -> (bytes its recordings hold when they share, bytes when each is alone), over
    ``mitigations`` (name -> a mitigation, a list of them, or None) in order."""
    out = {}
    for name, (model, data) in models.items():
        replay, shared, alone = ReplicaReplay(), 0, 0
        for mit, spec in mitigations.items():
            instances = fresh_instances(spec)
            for m in instances:
                m.profile(model, lambda mod, d=data: calibrate(mod, d))
            handles = [m.attach(model) for m in instances]
            try:
                with torch.no_grad():
                    run = lambda m=model, d=data: evaluate(m, d)  # noqa: E731
                    golden, frozen = replay.record(name, model, run)
                    if replay.keep(name, mit, frozen, run, golden):
                        shared += frozen.nbytes
                    single = FrozenOutputs(model)
                    single.record(run)
                    alone += single.nbytes
            finally:
                for h in reversed(handles):
                    h.remove()
        out[name] = (shared, alone)
    return out


def _memory_table(sizes: dict[str, tuple[int, int]], mitigations: Sequence[str]) -> None:
    mib = 2.0**20
    print(f"recordings of each model under {', '.join(mitigations)} (MiB)")
    print("| model | shared (as workers keep them) | each alone | ratio |")
    print("|---|---|---|---|")
    for name, (shared, alone) in sizes.items():
        print(f"| {name} | {shared / mib:.1f} | {alone / mib:.1f} | "
              f"{alone / max(shared, 1):.2f}x |")
    s, a = (sum(v[i] for v in sizes.values()) for i in (0, 1))
    print(f"| all | {s / mib:.1f} | {a / mib:.1f} | {a / max(s, 1):.2f}x |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ber", type=float, default=1e-3)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--dataset", help="a DRS results directory: the saving on that run")
    p.add_argument("--toy", action="store_true", help="a 2,000-row log, 2 models, 2 reps")
    p.add_argument("--memory", metavar="DIR", nargs="?", const="results/drs",
                   help="print the recordings' memory instead (DRS job, checkpoints in DIR)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as a Ray worker of 1 CPU
    if args.memory is not None:
        return _main_memory(args.memory, args.toy)
    study = DRSStudy.preset("full")
    if args.toy:
        _, val, test = split_log(synthetic_criteo(2000, seed=3), seed=3)
        data, models, reps = EvalData(test, val), ["fm", "dlrm"], 2
    else:
        data, models, reps = study.eval_data("fm"), sorted(MODELS), args.reps
    print(f"test split {len(data.test):,} samples, BER {args.ber:g}, {reps} interleaved reps, "
          "1 thread")
    print("| model | target | replayed ms | computed ms | ratio |")
    print("|---|---|---|---|---|")
    ratios = {}
    for name in models:
        for target in TARGETS:
            fast, slow = measure(name, study, data, target, args.ber, reps)
            ratios[(name, target)] = slow / fast
            print(f"| {name} | {target} | {fast:.1f} | {slow:.1f} | {slow / fast:.2f}x |")
    if args.dataset:
        import pandas as pd

        df = pd.read_parquet(args.dataset)
        full = df[df["evaluated"] & df["n_rescored"].isna()]
        total = float(df["duration_s"].sum())
        saved = 0.0
        for (name, target), r in ratios.items():
            t = float(full.loc[(full["model"] == name) & (full["target"] == target),
                               "duration_s"].sum())
            saved += t * (1 - 1 / r)
        print(f"{args.dataset}: trial time {total:.0f} s, of which replay saves ~{saved:.0f} s "
              f"({saved / total:.0%}; dense/predictor trials scored in full, at these ratios)")
    return 0


def _main_memory(results: str, toy: bool) -> int:
    mits: dict[str, Any]
    if toy:  # untrained models, three mitigations
        _, val, test = split_log(synthetic_criteo(2000, seed=3), seed=3)
        data = EvalData(test, val)
        study = DRSStudy.preset("full")
        models = {n: (build_model(n, test.field_dims, test.n_dense, seed=0).eval(), data)
                  for n in ("fm", "dlrm")}
        mits = {"none": None, "clip": Clip(layers=CLAMP_LAYERS), "sbp": SBP()}
        evaluate, calibrate = study.evaluate, study.calibrate
    else:
        from pytei_ray.campaign.jobfile import load_job
        from pytei_ray.execution.context import BuildContext, call_hook

        job = load_job("jobs/drs.py").replace(results_uri=results)
        c, ctx = job.campaign(), BuildContext(results)
        models = {n: (call_hook(f, ctx).eval(), call_hook(c.data, ctx, n))
                  for n, f in c.models.items()}
        mits, evaluate = dict(c.mitigations), c.evaluate
        calibrate = c.calibrate or c.evaluate
    _memory_table(memory(models, mits, evaluate, calibrate), list(mits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
