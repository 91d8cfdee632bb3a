"""The twin of benchmarks/strata.py: the rare-catastrophe family with its exact truth, and the
per-stratum confidence sequence the benchmark uses (a stand-in for the library's)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GOLDEN, BOUNDS = 0.8, (0.0, 1.0)
WIDTH = 32  # bits per word; the class is one bit of each


# ---- the per-stratum confidence sequence ------------------------------------------------------
def betting_cs(values: np.ndarray, bounds: tuple[float, float], confidence: float,
               c: float = 0.5) -> tuple[float, float]:
    """Hedged-capital betting CS (WSR 2024, theta = 1/2, PrPl bets truncated at c/m, c/(1-m))
    at the last time: ``{m : max(K+_n(m), K-_n(m)) / 2 < 1 / alpha}``, endpoints by bisection
    outward from the sample mean (the set is an interval)."""
    a, b = bounds
    x = (np.asarray(values, dtype=float) - a) / (b - a)
    n = x.size
    if n == 0:
        return a, b
    alpha = 1.0 - confidence
    t = np.arange(1, n + 1, dtype=float)
    mu = (0.5 + np.cumsum(x)) / (t + 1.0)
    sig2 = (0.25 + np.cumsum((x - mu) ** 2)) / (t + 1.0)
    prev = np.concatenate([[0.25], sig2[:-1]])
    lam = np.sqrt(2.0 * math.log(2.0 / alpha) / (prev * t * np.log1p(t)))
    thr = math.log(1.0 / alpha) + math.log(2.0)

    def outside(m: float) -> bool:
        lp = np.minimum(lam, c / m) if m > 0 else lam
        lm = np.minimum(lam, c / (1.0 - m)) if m < 1 else lam
        d = x - m
        return bool(max(np.log1p(lp * d).sum(), np.log1p(-lm * d).sum()) >= thr)

    inside = float(x.mean())
    if outside(inside):
        grid = np.linspace(0.0, 1.0, 2049)
        ins = [m for m in grid if not outside(float(m))]
        if not ins:
            return a + (b - a) * inside, a + (b - a) * inside
        inside = float(ins[len(ins) // 2])
    ends = []
    for edge in (0.0, 1.0):
        if not outside(edge):
            ends.append(edge)
            continue
        lo, hi = inside, edge  # lo inside, hi outside
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if outside(mid):
                hi = mid
            else:
                lo = mid
            if abs(hi - lo) < 1e-6:
                break
        ends.append(hi)
    return a + (b - a) * ends[0], a + (b - a) * ends[1]


# ---- the family ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    n_sites: int
    size: float
    q_c: float = 1.0
    q_o: float = 0.0

    @property
    def n_class(self) -> int:
        return self.n_sites // WIDTH

    @property
    def n_other(self) -> int:
        return self.n_sites - self.n_class

    def p_cat(self, b: float) -> float:
        """P(catastrophe) at BER b (pgf of the two Binomials)."""
        return 1.0 - math.exp(self.n_class * math.log1p(-b * self.q_c)
                              + self.n_other * math.log1p(-b * self.q_o))

    def truth(self, b: float) -> float:
        return GOLDEN - self.size * self.p_cat(b)

    def p0(self, b: float) -> float:
        return math.exp(self.n_sites * math.log1p(-b))

    def bit_strata_cat(self, b: float) -> list[float]:
        """Catastrophe probability within [no class flip & >= 1 other, >= 1 class flip]."""
        nc, no = self.n_class, self.n_other
        z_o = math.exp(no * math.log1p(-b))
        z_c = math.exp(nc * math.log1p(-b))
        g_o = math.exp(no * math.log1p(-b * self.q_o))
        g_c = math.exp(nc * math.log1p(-b * self.q_c))
        s1 = 1.0 - (g_o - z_o) / (1.0 - z_o) if z_o < 1 else 0.0
        s2 = 1.0 - (g_c - z_c) / (1.0 - z_c) * g_o if z_c < 1 else 0.0
        return [s1, s2]

    def count_cat(self, k: int) -> float:
        """Catastrophe probability given exactly k faults (class hits are hypergeometric)."""
        if k == 0:
            return 0.0
        from scipy.stats import hypergeom

        j = np.arange(0, min(k, self.n_class) + 1)
        pj = hypergeom.pmf(j, self.n_sites, self.n_class, k)
        keep = (1 - self.q_c) ** j * (1 - self.q_o) ** (k - j)
        return float(1.0 - (pj * keep).sum())


def draw(rng: np.random.Generator, q: float, n: int, size: float) -> np.ndarray:
    return GOLDEN - size * (rng.random(n) < q)
