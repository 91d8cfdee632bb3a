"""Extra time per training step of the training-fault machinery, on the GPT study's model.

    python -m benchmarks.training                 # the GPT job's model (small preset), 16 reps
    python -m benchmarks.training --toy           # a few seconds (the smoke test runs this)
    python -m benchmarks.training --json out.json
    python -m benchmarks.training --sites fwd-act,bwd-act --errors ber=1e-07,ber=1e-05 --reps 64

Per site (weights, forward activations and backward activation gradients of every Linear,
parameter gradients, AdamW's two moments) and error (``BitFlip(ber=p)`` for p in 1e-7, 1e-5,
1e-3, and ``BitFlip(n=1)``: one fault per site and step), each repetition times one clean
:func:`~pytei_ray.training.train_step` and one with :class:`~pytei_ray.training.TrainingFaults`
(faults at every step: ``Window(0, reps)``), interleaved so a load change hits both alike. Both
start from the same snapshot (restored outside the timed region), on the same batch. The figure
is the median of the paired differences ("extra"), beside the median clean step. A randomly
initialised model of the preset's shape is used: the step's cost does not depend on the weights
(NaN/Inf written by faults at high rates included: the restore removes them).

One torch thread (the study's). Checked: faults are counted (``faults/step``), and the hooks are
gone after each configuration (the next clean step's hook count is zero).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pytei_ray import BitFlip
from pytei_ray.studies.common import torch_threads
from pytei_ray.studies.gpt import SETTINGS
from pytei_ray.studies.gpt.corpus import CorpusSpec, load_corpus
from pytei_ray.studies.gpt.model import build_gpt
from pytei_ray.studies.gpt.train import loss_closure, make_optimizer
from pytei_ray.training import (
    ActivationGrads,
    OptimizerState,
    Outputs,
    ParamGrads,
    TrainingFaults,
    Weights,
    Window,
    train_step,
)

SITES = {
    "weights": lambda: Weights(),
    "fwd-act": lambda: Outputs(nn.Linear),
    "bwd-act": lambda: ActivationGrads(nn.Linear),
    "param-grads": lambda: ParamGrads(),
    "optim-state": lambda: OptimizerState(["exp_avg", "exp_avg_sq"]),
}
ERRORS = {"ber=1e-07": lambda: BitFlip(1e-7), "ber=1e-05": lambda: BitFlip(1e-5),
          "ber=0.001": lambda: BitFlip(1e-3), "1/step": lambda: BitFlip(n=1)}


def _restore(model: nn.Module, opt: torch.optim.Optimizer, snap: tuple[dict, dict]) -> None:
    with torch.no_grad():
        model.load_state_dict(snap[0])
    opt.load_state_dict(copy.deepcopy(snap[1]))


def run(preset: str, reps: int, sites: list[str], errors: list[str]) -> list[dict[str, Any]]:
    setting = SETTINGS[preset]
    corpus = load_corpus(CorpusSpec())
    model = build_gpt(setting.model, seed=0)
    opt = make_optimizer(model, setting)
    closure = loss_closure(model, corpus, setting, 0, 0)
    with torch_threads(1):
        train_step(0, model, opt, closure)  # AdamW creates its state; warm-up
        snap = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
        rows = []
        for site in sites:
            for err in errors:
                clean, faulty, faults = [], [], []
                _restore(model, opt, snap)
                tf = TrainingFaults(model, opt, site=SITES[site](), error=ERRORS[err](),
                                    when=Window(0, reps), seed=1, steps=reps)
                try:
                    for i in range(reps):
                        _restore(model, opt, snap)
                        t0 = time.perf_counter()
                        train_step(i, model, opt, closure)
                        clean.append(time.perf_counter() - t0)
                        _restore(model, opt, snap)
                        t0 = time.perf_counter()
                        rec = train_step(i, model, opt, closure, faults=tf)
                        faulty.append(time.perf_counter() - t0)
                        faults.append(rec.n_faults)
                finally:
                    tf.remove()
                extra = statistics.median(f - c for f, c in zip(faulty, clean))
                base = statistics.median(clean)
                rows.append({"site": site, "config": err, "clean_ms": 1e3 * base,
                             "extra_ms": 1e3 * extra, "extra_pct": 100 * extra / base,
                             "faults_per_step": statistics.mean(faults), "reps": reps})
                print(f"{site:12s} {err:10s} clean {1e3 * base:8.2f} ms   extra "
                      f"{1e3 * extra:+8.3f} ms ({100 * extra / base:+6.2f} %)   faults/step "
                      f"{statistics.mean(faults):10.1f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toy", action="store_true", help="tiny preset, 3 reps (a smoke test)")
    ap.add_argument("--preset", default="small", choices=sorted(SETTINGS))
    ap.add_argument("--reps", type=int, default=16)
    ap.add_argument("--sites", default=",".join(SITES),
                    help="comma-separated sites to time (default: all: %(default)s)")
    ap.add_argument("--errors", default=",".join(ERRORS),
                    help="comma-separated errors to time (default: all: %(default)s)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    errors = [e.strip() for e in args.errors.split(",") if e.strip()]
    unknown = sorted(set(sites) - set(SITES)) + sorted(set(errors) - set(ERRORS))
    if unknown or not sites or not errors:
        ap.error(f"unknown or empty --sites/--errors {unknown}; choose from "
                 f"{list(SITES)} and {list(ERRORS)}")
    preset, reps = ("tiny", 3) if args.toy else (args.preset, args.reps)
    n = sum(p.numel() for p in build_gpt(SETTINGS[preset].model, seed=0).parameters())
    print(f"GPT preset {preset!r} ({n:,} parameters), batch {SETTINGS[preset].batch_size}, "
          f"{reps} paired reps, torch {torch.__version__}, 1 thread; extra % = median paired "
          "difference / median clean step", flush=True)
    rows = run(preset, reps, sites, errors)
    if args.json is not None:
        args.json.write_text(json.dumps({"preset": preset, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
