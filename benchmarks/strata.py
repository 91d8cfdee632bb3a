"""Evaluations that honest intervals need with and without strata, on the rare-catastrophe family.

    python -m benchmarks.strata                       # the figures of benchmarks/README.md
    python -m benchmarks.strata --quick               # seconds (the smoke test runs this)

The family ("a twin with known truth"): a model of ``N`` bit sites (``N / 32`` fp32 words); a
trial keeps the golden metric 0.8 (range [0, 1]) unless a catastrophe happens, then it drops by
``size`` (0.05 or 0.5). A catastrophe happens when a flip hits the critical bit class (bit 30 of
each word, 1 of 32 bits), with probability ``q_c`` per such flip, and with probability ``q_o``
per other flip (default 1 and 0: "catastrophe only when a flip hits the class"; ``--leak`` gives
0.9 and 1e-3, so no stratum is constant). Its truth is exact: ``P(catastrophe) = 1 - (1 - b
q_c)^{|C|} (1 - b q_o)^{N - |C|}`` at BER ``b``. Fault-free trials cost no evaluation.

Per (BER, catastrophe size, target half-width), over ``--reps`` simulated campaigns, each method
adds evaluations in rounds (10, then x``--growth`` a round up to ``--cap``) until its interval's
half-width is at most the target; printed: the median evaluations at that point (``>cap`` when
the median run did not settle), the fraction settled, and coverage (the final interval holds
the truth); at the end, per method, the lowest coverage and the lowest fraction of settled
runs whose estimate is within the target of the truth, over all rows. Strata whose weight
bounded by the range costs at most a quarter of the target are not sampled
(``plan_strata``): that alone settles a cell with few faulted trials at no evaluation.

(U) unstratified honest: faulted trials only (their law: ``K >= 1`` faults), the cell interval
    ``golden + (1 - p0) (CS - golden)`` with a confidence sequence on the faulted mean.
(B) bit-class strata: golden (known), no flip in the class with >= 1 elsewhere, >= 1 flip in
    the class; weights exact (``Stratum.probability``), a CS per sampled stratum at half the
    error each, trials allocated by weight x half-width (``allocate``).
(P) post-stratified: the trials of (U) (no new sampler, no new seed), each labelled by whether
    a flip hit the class; the (U) interval at 3/4 of the error and the (B) interval from the
    same trials at 1/4 (``--post-share``), intersected. Never much worse than the better.
(E) exact-count strata shared across BERs: strata "exactly k faults", k = 1..K, whose trials
    serve every BER of the point; per BER the strata it needs (``plan_strata``), its error
    split over them. Counted once for all the BERs it covers (those needing k <= --k-cap),
    against the sum of (U), (B) and (P) over the same BERs.

Per-stratum interval: the hedged-capital betting confidence sequence of Waudby-Smith & Ramdas
(JRSS-B 2024; predictable plug-in bets truncated at 1/2), valid for every distribution on the
range and at every look, so adaptive rounds and allocation need no correction. It is a
stand-in written here for the library's own (issue 19 item 1); ``--interval eb`` uses the
fixed-sample empirical Bernstein bound instead.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.strata_twin import BOUNDS, GOLDEN, WIDTH, Family, betting_cs, draw  # noqa: E402
from pytei_ray.faults.strata import bit_class_strata, count_weights, k_max_for  # noqa: E402
from pytei_ray.stats.stratified import (  # noqa: E402
    StratumCell,
    allocate,
    empirical_bernstein,
    plan_strata,
    post_stratified_mean,
    stratified_mean,
)


# ---- the three methods --------------------------------------------------------------------------
@dataclass
class Outcome:
    evals: int
    settled: bool
    covered: bool
    close: bool  # settled and |estimate - truth| <= target


GROWTH = [1.25]  # evaluations grow by this factor a round (set by --growth)
POST_SHARE = [0.25]  # (P): the part of the error given to the stratified interval


def _looks(cap: int) -> list[int]:
    out, n = [], 10
    while n <= cap:
        out.append(n)
        n = max(n + 1, int(round(n * GROWTH[0])))
    return out


def run_unstratified(fam: Family, b: float, target: float, cap: int, rng, interval) -> Outcome:
    p0 = fam.p0(b)
    q1 = fam.p_cat(b) / (1.0 - p0)
    truth = fam.truth(b)
    vals = np.empty(0)
    sample = plan_strata([1.0 - p0], BOUNDS, target)[0]
    for n in _looks(cap):
        if sample:
            vals = np.concatenate([vals, draw(rng, q1, n - vals.size, fam.size)])
        est = stratified_mean([StratumCell(p0, exact=GOLDEN),
                               StratumCell(1.0 - p0, vals, bounded=not sample)],
                              BOUNDS, 0.95, interval)
        if est.halfwidth <= target:
            break
    settled = est.halfwidth <= target
    return Outcome(vals.size, settled, est.low <= truth <= est.high,
                   settled and abs(est.mean - truth) <= target)


def run_bit_strata(fam: Family, b: float, target: float, cap: int, rng, interval) -> Outcome:
    strata = bit_class_strata(1)
    split = _Split(fam.n_class, fam.n_other)
    w = [s.probability(split, b) for s in strata]  # golden, C0/O>=1, C>=1
    q = fam.bit_strata_cat(b)
    truth = fam.truth(b)
    vals = [np.empty(0), np.empty(0)]
    sample = plan_strata(w[1:], BOUNDS, target)
    half = [0.5 if k else 0.0 for k in sample]
    for n in _looks(cap):
        counts = allocate(w[1:], half, [v.size for v in vals], n)
        for i in range(2):
            vals[i] = np.concatenate([vals[i], draw(rng, q[i], counts[i] - vals[i].size,
                                                     fam.size)])
        est = stratified_mean([StratumCell(w[0], exact=GOLDEN),
                               StratumCell(w[1], vals[0], bounded=not sample[0]),
                               StratumCell(w[2], vals[1], bounded=not sample[1])],
                              BOUNDS, 0.95, interval)
        half = [(hi - lo) / 2 if k else 0.0 for (lo, hi), k in zip(est.parts[1:], sample)]
        if est.halfwidth <= target:
            break
    settled = est.halfwidth <= target
    return Outcome(sum(v.size for v in vals), settled, est.low <= truth <= est.high,
                   settled and abs(est.mean - truth) <= target)


def run_post_strata(fam: Family, b: float, target: float, cap: int, rng, interval) -> Outcome:
    """(P): the unstratified trials, post-stratified on whether a flip hit the class: the
    unstratified interval and the stratified one, each at half the error, intersected."""
    strata = bit_class_strata(1)
    split = _Split(fam.n_class, fam.n_other)
    w = [s.probability(split, b) for s in strata]
    q = fam.bit_strata_cat(b)
    truth = fam.truth(b)
    p_hit = w[2] / (w[1] + w[2])  # P(class hit | >= 1 fault)
    sample = plan_strata(w[1:], BOUNDS, target)
    hits = np.empty(0, bool)
    vals = np.empty(0)
    for n in _looks(cap):
        if any(sample):
            new_hits = rng.random(n - hits.size) < p_hit
            new = np.where(new_hits, draw(rng, q[1], new_hits.size, fam.size),
                           draw(rng, q[0], new_hits.size, fam.size))
            hits, vals = np.concatenate([hits, new_hits]), np.concatenate([vals, new])
        est = post_stratified_mean(vals, np.where(hits, 2, 1), w, GOLDEN, BOUNDS, 0.95,
                                   interval, bounded=[not k for k in sample],
                                   strata_share=POST_SHARE[0])
        if est.halfwidth <= target:
            break
    settled = est.halfwidth <= target
    return Outcome(vals.size, settled, est.low <= truth <= est.high,
                   settled and abs(est.mean - truth) <= target)


@dataclass(frozen=True)
class _Split:  # what Stratum.probability reads of SiteClasses
    n_class: int
    n_other: int


def run_count_strata(fam: Family, bers: list[float], target: float, cap: int, rng, interval,
                     k_cap: int) -> tuple[list[float], dict[float, Outcome], int]:
    """One point, all its BERs with K <= k_cap: returns (covered BERs, outcome per BER, evals)."""
    ks, plans = {}, {}
    for b in bers:  # per BER: strata k = 1..K, the lightest left to the range (plan_strata)
        k = k_max_for(fam.n_sites, [b], target / 8.0)
        wk, tail = count_weights(fam.n_sites, b, k)
        plans[b] = plan_strata(wk[1:], BOUNDS, target, tail)
        ks[b] = max((i + 1 for i, p in enumerate(plans[b]) if p), default=0)
    ok = [b for b in bers if 1 <= ks[b] <= k_cap]
    if not ok:
        return [], {}, 0
    k_top = max(ks[b] for b in ok)
    weights = {b: count_weights(fam.n_sites, b, ks[b]) for b in ok}
    cat = [fam.count_cat(k) for k in range(k_top + 1)]
    vals = [np.empty(0) for _ in range(k_top + 1)]  # index k; k = 0 is golden, never sampled
    half = np.full(k_top + 1, 0.5)
    open_b = list(ok)
    done: dict[float, object] = {}
    ests: dict[float, object] = {}
    for n in _looks(cap):
        score_w = np.zeros(k_top + 1)
        for b in open_b:
            wk, _ = weights[b]
            planned = np.where(plans[b][:ks[b]], wk[1:], 0.0)
            score_w[1:ks[b] + 1] = np.maximum(score_w[1:ks[b] + 1], planned)
        counts = allocate(score_w[1:], half[1:], [v.size for v in vals[1:]], n)
        for k in range(1, k_top + 1):
            extra = counts[k - 1] - vals[k].size
            vals[k] = np.concatenate([vals[k], draw(rng, cat[k], extra, fam.size)])
        cache: dict[tuple[int, float], tuple[float, float]] = {}
        index = {id(v): k for k, v in enumerate(vals)}

        def cached(x, bounds, level, _cache=cache, _index=index):  # shared by the BERs
            key = (_index[id(x)], level)
            if key not in _cache:
                _cache[key] = interval(x, bounds, level)
            return _cache[key]

        new_half = np.zeros(k_top + 1)
        for b in open_b:
            wk, tail = weights[b]
            cells = [StratumCell(float(wk[0]), exact=GOLDEN)] + [
                StratumCell(float(wk[k]), vals[k] if plans[b][k - 1] else np.empty(0),
                            bounded=not plans[b][k - 1]) for k in range(1, ks[b] + 1)]
            est = stratified_mean(cells, BOUNDS, 0.95, cached, tail)
            ests[b] = est
            for k, (lo, hi) in enumerate(est.parts[1:], start=1):
                new_half[k] = max(new_half[k], (hi - lo) / 2)
        half = np.where(new_half > 0, new_half, half)
        for b in list(open_b):
            if ests[b].halfwidth <= target:
                open_b.remove(b)
                done[b] = ests[b]
        if not open_b:
            break
    total = sum(v.size for v in vals)
    out = {}
    for b in ok:
        est = ests[b]
        settled = b in done
        truth = fam.truth(b)
        out[b] = Outcome(total, settled, est.low <= truth <= est.high,
                         settled and abs(est.mean - truth) <= target)
    return ok, out, total


# ---- the table ----------------------------------------------------------------------------------
def _summary(outs: list[Outcome], cap: int) -> dict[str, float]:
    ev = np.array([o.evals for o in outs])
    settled = np.mean([o.settled for o in outs])
    med = float(np.median(ev)) if settled >= 0.5 else math.inf
    return {"median": med, "mean": float(ev.mean()), "settled": float(settled),
            "coverage": float(np.mean([o.covered for o in outs])),
            "close": float(np.mean([o.close for o in outs if o.settled] or [math.nan]))}


_SKIPPED = {"median": math.nan, "mean": math.nan, "settled": math.nan, "coverage": 1.0,
            "close": math.nan}


def _fmt(s: dict[str, float], cap: int) -> str:
    if math.isnan(s["settled"]):
        return f"{'-':>20}"
    med = f">{cap}" if math.isinf(s["median"]) else f"{s['median']:.0f}"
    return f"{med:>7} {100 * s['settled']:4.0f}% {100 * s['coverage']:5.1f}%"


def _ratio(a: dict[str, float], b: dict[str, float]) -> str:
    """Mean evaluations of a over b ("-" when neither needs any)."""
    if math.isnan(a["mean"]) or math.isnan(b["mean"]):
        return f"{'-':>6}"
    if b["mean"] == 0:
        return f"{'-' if a['mean'] == 0 else 'inf':>6}"
    return f"{a['mean'] / b['mean']:5.2f}x"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=float, default=1e6)
    ap.add_argument("--bers", type=float, nargs="+",
                    default=[1e-8, 1e-7, 6.93e-7, 1e-6, 1e-5, 1e-4, 1e-3])
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.05, 0.5])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.025, 0.01])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--cap", type=int, default=20480)
    ap.add_argument("--k-cap", type=int, default=8)
    ap.add_argument("--leak", action="store_true", help="q_c = 0.9, q_o = 1e-3")
    ap.add_argument("--interval", choices=["betting", "eb"], default="betting")
    ap.add_argument("--growth", type=float, default=1.25,
                    help="evaluations grow by this factor a round (2: the campaign's doubling)")
    ap.add_argument("--post-share", type=float, default=0.25,
                    help="(P): part of the error given to the stratified interval")
    ap.add_argument("--methods", default="UBPE", help="letters of the methods to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="toy sizes (seconds)")
    args = ap.parse_args(argv)
    if args.quick:
        args.bers, args.sizes, args.targets = [1e-7, 1e-5], [0.5], [0.025]
        args.reps, args.cap = 8, 640
    GROWTH[0] = args.growth
    POST_SHARE[0] = args.post_share
    interval = betting_cs if args.interval == "betting" else empirical_bernstein
    n_sites = int(args.sites)
    q_c, q_o = (0.9, 1e-3) if args.leak else (1.0, 0.0)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    print(f"rare-catastrophe family: N = {n_sites:.3g} sites, class 1/{WIDTH}, golden {GOLDEN}, "
          f"q_c = {q_c}, q_o = {q_o}; {args.reps} runs per row; interval: {args.interval}; "
          f"95%; rounds of 10 evaluations growing x{args.growth} up to {args.cap}")
    print("columns per method: median evaluations to settle, settled, coverage\n")
    failures = 0
    worst = {k: [1.0, 1.0] for k in "UBPE"}  # lowest coverage, lowest "within target"
    for size in args.sizes:
        for target in args.targets:
            fam = Family(n_sites, size, q_c, q_o)
            print(f"### catastrophe size {size}, target +-{target}")
            print(f"{'BER':>9} {'faults':>8} {'p0':>6} {'P(cat)':>8} | "
                  f"{'(U) unstratified':>20} | {'(B) bit-class strata':>20} | "
                  f"{'(P) post-strat. & U':>20} | {'U/B':>6} {'U/P':>6}")
            per_b: dict[float, dict[str, dict[str, float]]] = {}
            for b in args.bers:
                u, s, pp = (
                    _summary([run(fam, b, target, args.cap, rng, interval)
                              for _ in range(args.reps)], args.cap) if key in args.methods
                    else _SKIPPED
                    for key, run in (("U", run_unstratified), ("B", run_bit_strata),
                                     ("P", run_post_strata)))
                per_b[b] = {"U": u, "B": s, "P": pp}
                print(f"{b:9.3g} {n_sites * b:8.3g} {fam.p0(b):6.3f} {fam.p_cat(b):8.2e} | "
                      f"{_fmt(u, args.cap)} | {_fmt(s, args.cap)} | {_fmt(pp, args.cap)} | "
                      f"{_ratio(u, s)} {_ratio(u, pp)}")
                failures += sum(x["coverage"] < 0.94 for x in (u, s, pp))
                for key, x in (("U", u), ("B", s), ("P", pp)):
                    worst[key][0] = min(worst[key][0], x["coverage"])
                    if not math.isnan(x["close"]):
                        worst[key][1] = min(worst[key][1], x["close"])
            tot = {k: sum(per_b[b][k]["mean"] for b in args.bers) for k in "UBP"}
            print(f"{'all BERs':>9} {'':>8} {'':>6} {'':>8} | mean evaluations summed: "
                  + ", ".join(f"({k}) {v:.0f}" for k, v in tot.items())
                  + f"; U/B {tot['U'] / tot['B']:.2f}x, U/P {tot['U'] / tot['P']:.2f}x")
            if "E" not in args.methods:
                print()
                continue
            runs = [run_count_strata(fam, args.bers, target, args.cap, rng, interval,
                                     args.k_cap) for _ in range(args.reps)]
            covered = runs[0][0]
            if covered:
                tot = np.array([r[2] for r in runs])
                cov = {b: np.mean([r[1][b].covered for r in runs]) for b in covered}
                sett = {b: np.mean([r[1][b].settled for r in runs]) for b in covered}
                u_sum = sum(per_b[b]["U"]["mean"] for b in covered)
                s_sum = sum(per_b[b]["B"]["mean"] for b in covered)
                p_sum = sum(per_b[b]["P"]["mean"] for b in covered)
                for b in covered:
                    worst["E"][0] = min(worst["E"][0], cov[b])
                    close = [r[1][b].close for r in runs if r[1][b].settled]
                    if close:
                        worst["E"][1] = min(worst["E"][1], float(np.mean(close)))
                print(f"(E) exact-count strata shared by BERs {[f'{b:.3g}' for b in covered]}: "
                      f"median {np.median(tot):.0f} evaluations (mean {tot.mean():.0f}) for all "
                      f"of them; settled {', '.join(f'{100 * v:.0f}%' for v in sett.values())}; "
                      f"coverage {', '.join(f'{100 * v:.1f}%' for v in cov.values())}")
                print(f"    same BERs, mean evaluations summed: (U) {u_sum:.0f}, (B) {s_sum:.0f}"
                      f", (P) {p_sum:.0f}, (E) {tot.mean():.0f}: U/E {u_sum / tot.mean():.2f}x,"
                      f" B/E {s_sum / tot.mean():.2f}x, P/E {p_sum / tot.mean():.2f}x")
                failures += sum(v < 0.94 for v in cov.values())
            print()
    for key, (cov, close) in worst.items():
        print(f"({key}) lowest coverage {100 * cov:.1f}%, lowest within-target among settled "
              f"{100 * close:.1f}%")
    print(f"rows with coverage below 94%: {failures}; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
