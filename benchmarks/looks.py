"""What the looks of an adaptive campaign cost: replay its stopping rule on stored rows.

An adaptive campaign's trials are a pure function of its rule (decisions use only the rows of
repetitions below each look, and every row is deterministic), so replaying a rule on a dataset
that holds the rows it asks for gives exactly the trials a run with that rule would make. This
script replays the same target with several look factors (``Precision(growth=...)``: 2 doubles
the repetitions of open points, 1.5 multiplies them by 1.5) on one dataset and prints, side by
side, the trials, evaluations and summed trial time each schedule spends, its rounds and the
cells left open at the cap. Trial times are those the dataset recorded, so the schedules are
compared on the same per-trial costs (round overheads, a few seconds each, are not included).

    python -m benchmarks.looks results/drs05 --precision auc=0.05 --max-reps 120 --growth 2 1.5
    python -m benchmarks.looks results/drs --precision auc=0.1 --max-reps 40 --growth 2 1.5
    python -m benchmarks.looks results/drs05 --precision auc=0.025 --max-reps 240 --growth 1.5 \
        --truncation 0.75 0.9

``--truncation C ...`` replays each schedule as if the confidence sequences bet with truncation
``C`` (:data:`pytei_ray.stats.betting.TRUNCATION`, 0.75: the bets are ``min(l_i, C / m)``; any
``C < 1`` is valid): where nearly every trial of a cell gives one value, ``C``, not the spread,
sets how fast the sequence narrows. A what-if for the stopping rule, not an option of campaigns.

A schedule that needs repetitions the dataset does not hold is reported as such (run the
campaign with that rule, or a tighter one, first: e.g. ``--precision auc=0.025 --max-reps 240
--growth 1.5 --extend`` stores the rows every looser rule with those looks needs).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from pytei_ray.columns import POINT_FACTORS as _POINT
from pytei_ray.stats import Precision, betting, open_points
from pytei_ray.stats.judge import judge_cells, stopped_at_cap, without_unread

POINT_FACTORS = list(_POINT)  # a list: pandas takes a tuple for one key


@dataclasses.dataclass
class Replay:
    """What one rule spends on the dataset's points."""

    growth: float
    looks: list[int]
    trials: int = 0
    evaluations: int = 0
    trial_seconds: float = 0.0
    rounds: int = 0
    at_cap: int = 0
    missing: str = ""
    truncation: float = betting.TRUNCATION


def load(path: str) -> tuple[pd.DataFrame, int, bool]:
    """The dataset's rows, its first-round repetitions and whether it used the unread stratum."""
    manifest = json.loads((Path(path) / "_manifest.json").read_text())
    spec = manifest["spec"]
    min_reps = (spec.get("stopping") or {}).get("min_reps") or spec["repetitions"]
    frame = pd.read_parquet(path)
    return frame, int(min_reps), spec.get("stratify_unread", True)


def replay(frame: pd.DataFrame, target: Precision, min_reps: int) -> Replay:
    """Run ``target``'s rounds on ``frame``'s rows: which points each round brings to which
    look, and what those trials cost."""
    looks = target.looks(min_reps)
    out = Replay(target.growth, looks)
    held = frame.groupby(POINT_FACTORS, sort=True)["repetition"].max() + 1
    point_of = pd.MultiIndex.from_frame(frame[POINT_FACTORS])
    active, start = set(held.index), 0
    for k, look in enumerate(looks):
        short = [p for p in active if held[p] < look]
        if short:
            out.missing = (f"{len(short)} point(s) need {look} repetitions, the dataset holds "
                           f"{min(held[p] for p in short)} or fewer")
            return out
        mine = point_of.isin(pd.MultiIndex.from_tuples(sorted(active), names=POINT_FACTORS))
        upto = frame[mine & (frame["repetition"] < look)]
        ran = upto[upto["repetition"] >= start]
        out.trials += len(ran)
        out.evaluations += int(ran["evaluated"].sum())
        out.trial_seconds += float(ran["duration_s"].sum())
        out.rounds += 1
        if look >= target.max_reps:  # the cap: the cells still open stay open
            out.at_cap = sum(1 for _, g, v in judge_cells(upto, target, min_reps, POINT_FACTORS)
                             if stopped_at_cap(g, v, target.max_reps))
            break
        still = {tuple(s) for s in open_points(upto, target, min_reps, k,
                                               point_cols=POINT_FACTORS)}
        active = {p for p in active if p in still}
        if not active:
            break
        start = look
    return out


@contextlib.contextmanager
def truncation(c: float | None) -> Iterator[None]:
    """Inside the context, confidence sequences bet with truncation ``c`` (None: unchanged)."""
    if c is None:
        yield
        return
    if not 0.0 < c < 1.0:
        raise SystemExit(f"--truncation must lie in (0, 1) (a bet of C / m must keep the "
                         f"capital positive), got {c!r}")
    fns = (betting.betting_cs, betting.capital)
    before = [dict(f.__kwdefaults__) for f in fns]
    try:
        for f in fns:
            f.__kwdefaults__["truncation"] = c
        yield
    finally:
        for f, kw in zip(fns, before):
            f.__kwdefaults__.update(kw)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="results directory of an adaptive (or fixed) DRS-like run")
    p.add_argument("--precision", required=True, help="the target, e.g. auc=0.05")
    p.add_argument("--max-reps", type=int, default=160)
    p.add_argument("--growth", type=float, nargs="+", default=[2.0, 1.5])
    p.add_argument("--truncation", type=float, nargs="+", default=[None],
                   help="replay with these bet truncations too (default: the library's, "
                        f"{betting.TRUNCATION})")
    p.add_argument("--workers", type=int, default=2, help="workers the run had (for the "
                   "wall estimate: summed trial time / workers)")
    args = p.parse_args(argv)
    frame, min_reps, unread = load(args.path)
    if not unread:
        frame = without_unread(frame)
    print(f"{args.path}: {len(frame):,} stored rows, first round {min_reps} repetitions; "
          f"target {args.precision}, up to {args.max_reps} repetitions")
    cs = [c if c is not None else betting.TRUNCATION for c in args.truncation]
    show_c = len(cs) > 1 or args.truncation != [None]
    print(("| truncation " if show_c else "") + "| growth | looks | rounds | trials | "
          "evaluations | trial time (s) | / workers (s) | cells at the cap |")
    print("|---" * (9 if show_c else 8) + "|")
    results = []
    for c in cs:
        with truncation(c):
            for g in args.growth:
                target = Precision.parse(args.precision, max_reps=args.max_reps, growth=g)
                r = replay(frame, target, min_reps)
                r.truncation = c
                results.append(r)
                head = (f"| {c:g} " if show_c else "") + \
                    f"| {g:g} | {', '.join(map(str, r.looks))} "
                if r.missing:
                    print(head + f"| - | - | - | - | - | not replayable: {r.missing} |")
                    continue
                print(head + f"| {r.rounds} | {r.trials:,} | {r.evaluations:,} | "
                      f"{r.trial_seconds:.0f} | {r.trial_seconds / args.workers:.0f} "
                      f"| {r.at_cap} |")
    done = [r for r in results if not r.missing]
    if len(done) > 1:
        base = done[0]
        for r in done[1:]:
            what = f"growth {r.growth:g}" + (f", truncation {r.truncation:g}" if show_c else "")
            was = f"{base.growth:g}" + (f", {base.truncation:g}" if show_c else "")
            print(f"{what} vs {was}: {base.trials / r.trials:.2f}x fewer "
                  f"trials, {base.trial_seconds / r.trial_seconds:.2f}x less trial time, "
                  f"{r.rounds - base.rounds:+d} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
