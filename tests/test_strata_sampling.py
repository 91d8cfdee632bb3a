"""Exact strata of the fault distribution: probabilities against the Binomial, and conditional
samplers whose draws follow the conditional laws (exact enumeration and chi-square on small N)."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import stats

from pytei_ray.faults import BitFlip, RandomValue, SiteInfo, sample_fault_map
from pytei_ray.faults.sampling import binomial_mass, stable_seed, truncated_binomial
from pytei_ray.faults.strata import (
    GOLDEN,
    Stratum,
    bit_class_strata,
    count_strata,
    count_weights,
    k_max_for,
    sample_stratum_map,
    site_classes,
)


def _exact_mass(n: int, p: Fraction, lo: int, hi: int | None) -> Fraction:
    hi = n if hi is None else min(hi, n)
    return sum((math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(lo, hi + 1)),
               Fraction(0))


@pytest.mark.parametrize("n,p", [(1, "1/3"), (12, "1/10"), (40, "1/2"), (60, "97/100")])
def test_binomial_mass_equals_exact_rational_sum(n, p):
    exact_p = Fraction(p)
    for lo, hi in [(0, None), (1, None), (0, 0), (2, 5), (3, None), (0, 3), (n, None),
                   (n // 2, n // 2 + 1), (n + 1, None)]:
        got = binomial_mass(n, float(exact_p), lo, hi)
        want = float(_exact_mass(n, exact_p, lo, hi))
        assert got == pytest.approx(want, rel=1e-12, abs=1e-300), (lo, hi)


def test_binomial_mass_keeps_tiny_tails_at_model_scale():
    # A model of 1e7 bits at BER 1e-9: P(K >= 4) is ~4e-7, P(K >= 30) ~1e-62, not 0.
    n, p = 10**7, 1e-9
    for k in (1, 4, 30):
        assert binomial_mass(n, p, k, None) == pytest.approx(stats.binom.sf(k - 1, n, p),
                                                             rel=1e-9)
    assert 0.0 < binomial_mass(n, p, 30, None) < 1e-60
    # The pmf terms of a wide window near the mean (1e4 faults) still sum to one.
    assert binomial_mass(10**7, 1e-3, 0, None) == 1.0
    assert binomial_mass(10**7, 1e-3, 9000, 11000) == pytest.approx(
        stats.binom.cdf(11000, 10**7, 1e-3) - stats.binom.cdf(8999, 10**7, 1e-3), rel=1e-9)


def test_count_weights_and_tail_partition_the_binomial():
    for n, p in [(10**6, 1e-6), (3 * 10**5, 1e-3), (10**7, 1e-8)]:
        k_max = k_max_for(n, [p], 1e-6)
        w, tail = count_weights(n, p, k_max)
        assert w.sum() + tail == pytest.approx(1.0, abs=1e-12)
        assert 0.0 < tail <= 1e-6 and binomial_mass(n, p, k_max, None) > 1e-6
        assert np.allclose(w, stats.binom.pmf(np.arange(k_max + 1), n, p), rtol=1e-8)


@pytest.mark.parametrize("n,p,lo,hi", [(40, 0.05, 1, None), (40, 0.05, 2, 5), (30, 0.6, 0, 14),
                                       (10**7, 1e-7, 1, None), (10**5, 1e-2, 1100, None)])
def test_truncated_binomial_follows_the_conditional_law(n, p, lo, hi):
    rng = np.random.default_rng(stable_seed("truncated", n, p, lo))
    draws = np.array([truncated_binomial(n, p, lo, hi, rng) for _ in range(3000)])
    top = n if hi is None else hi
    assert draws.min() >= lo and draws.max() <= top
    # chi-square against the conditional pmf, bins of expected count >= 5 merged
    support = np.arange(lo, min(top, draws.max() + 30) + 1)
    probs = stats.binom.pmf(support, n, p) / binomial_mass(n, p, lo, hi)
    probs[-1] += max(0.0, 1.0 - probs.sum())
    obs = np.array([np.sum(draws == k) for k in support], dtype=float)
    obs[-1] += np.sum(draws > support[-1])
    edges, acc_o, acc_e, out_o, out_e = [], 0.0, 0.0, [], []
    for o, e in zip(obs, probs * draws.size):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 5:
            out_o.append(acc_o), out_e.append(acc_e)
            acc_o = acc_e = 0.0
    out_o[-1] += acc_o
    out_e[-1] += acc_e
    edges = len(out_o)
    if edges > 1:
        _, pvalue = stats.chisquare(out_o, np.array(out_e) * sum(out_o) / sum(out_e))
        assert pvalue > 1e-4
    else:  # one bin: all mass at one count (e.g. n p tiny and lo = 1)
        assert np.all(draws == lo)


def test_truncated_binomial_refuses_an_impossible_range():
    with pytest.raises(ValueError, match="probability 0"):
        truncated_binomial(10, 0.0, 1, None, np.random.default_rng(0))


def _hits(fmap, split):
    """(class count, other count, set of hit global sites) of a one-tensor map."""
    t = fmap.tensors[0]
    per = split.per_word[0]
    bits = np.unpackbits(t.xor_mask.view(np.uint8).reshape(t.xor_mask.size, -1)[:, ::-1],
                         axis=1)[:, ::-1] if t.n_words else np.zeros((0, per), np.uint8)
    sites = {int(w) * per + b for w, row in zip(t.index, bits) for b in np.flatnonzero(row)}
    cls = set(split.class_slots[0])
    in_class = sum(1 for s in sites if s % per in cls)
    return in_class, len(sites) - in_class, frozenset(sites)


def test_stratum_maps_follow_the_conditional_law_exactly_on_a_small_target():
    # 3 float16 words, class = exponent MSB (bit 14): 3 class sites, 45 others.
    sites = [SiteInfo("w", torch.float16, (3,))]
    p = 0.04
    error = BitFlip(p)
    split = site_classes(sites, error, bits=[14])
    assert (split.n_class, split.n_other) == (3, 45)
    strata = bit_class_strata(2)
    weights = [s.probability(split, p) for s in strata]
    assert sum(weights) == pytest.approx(1.0, abs=1e-15)
    # stratum "1 flip in the class": the class flip is uniform over the 3 class sites, the
    # other flips Binomial(45, p) at uniform positions
    s1 = strata[2]
    seen = Counter()
    others = []
    for seed in range(1500):
        c, o, hit = _hits(sample_stratum_map(sites, error, seed, s1, bits=[14]), split)
        assert c == 1
        seen[next(h for h in hit if h % 16 == 14) // 16] += 1
        others.append(o)
    _, pv = stats.chisquare([seen[w] for w in range(3)])
    assert pv > 1e-4
    counts = np.bincount(others, minlength=6)[:6].astype(float)
    counts[-1] += sum(o > 5 for o in others)
    probs = stats.binom.pmf(np.arange(6), 45, p)
    probs[-1] += stats.binom.sf(5, 45, p)
    _, pv = stats.chisquare(counts, probs * len(others))
    assert pv > 1e-4
    # stratum ">= 2 in the class": counts 2 or 3 in proportion to the Binomial terms
    c_counts = Counter(_hits(sample_stratum_map(sites, error, seed, strata[3], bits=[14]),
                             split)[0] for seed in range(1500))
    assert set(c_counts) <= {2, 3}
    want3 = stats.binom.pmf(3, 3, p) / stats.binom.sf(1, 3, p)
    assert abs(c_counts[3] / 1500 - want3) < 4 * math.sqrt(want3 * (1 - want3) / 1500) + 1e-3


def test_exact_count_positions_are_a_uniform_subset_at_every_ber():
    sites = [SiteInfo("w", torch.int8, (1,))]  # 8 sites
    k = 2
    stratum = count_strata(3)[k]
    draws = Counter()
    for seed in range(2800):
        fmap = sample_stratum_map(sites, BitFlip(1e-3), seed, stratum)
        draws[int(fmap.tensors[0].xor_mask[0]) & 0xFF] += 1
        if seed < 20:  # rate-free: the same seed gives the same map at another BER
            other = sample_stratum_map(sites, BitFlip(0.3), seed, stratum)
            assert np.array_equal(other.tensors[0].xor_mask, fmap.tensors[0].xor_mask)
    subsets = [sum(1 << b for b in c) for c in itertools.combinations(range(8), k)]
    assert set(draws) == set(subsets)
    _, pv = stats.chisquare([draws[s] for s in subsets])
    assert pv > 1e-4


def test_strata_mixture_reproduces_the_unconditional_fault_counts():
    # Drawing a stratum by its weight, then a map within it, is the unstratified law: compare
    # the (class, other) counts with sample_fault_map's over many seeds.
    sites = [SiteInfo("a", torch.float32, (2,)), SiteInfo("b", torch.bfloat16, (3,))]
    p = 0.03
    error = BitFlip(p)
    split = site_classes(sites, error, bits=["sign"])
    strata = bit_class_strata(1)
    weights = np.array([s.probability(split, p) for s in strata])
    rng = np.random.default_rng(7)
    mixed, plain = Counter(), Counter()
    cls_sites = {(t, int(b)) for t, b in (("a", 31), ("b", 15))}
    for seed in range(1500):
        s = strata[rng.choice(len(strata), p=weights / weights.sum())]
        for out, fmap in ((mixed, sample_stratum_map(sites, error, seed, s, bits=["sign"])),
                          (plain, sample_fault_map(sites, error, seed))):
            c = o = 0
            for t in fmap.tensors:
                bits = t.layout.width
                for x in t.xor_mask:
                    v = int(x) & ((1 << bits) - 1)
                    for b in range(bits):
                        if v >> b & 1:
                            c, o = (c + 1, o) if (t.name, b) in cls_sites else (c, o + 1)
            out[(min(c, 1), min(o, 3))] += 1
    keys = sorted(set(mixed) | set(plain))
    table = np.array([[mixed[k] for k in keys], [plain[k] for k in keys]])
    table = table[:, table.sum(axis=0) >= 10]
    _, pv, _, _ = stats.chi2_contingency(table)
    assert pv > 1e-4


def test_unstratified_draws_are_unchanged():
    # The strata samplers add functions only: a pinned seed still draws the same map.
    sites = [SiteInfo("w", torch.float32, (1000,))]
    fmap = sample_fault_map(sites, BitFlip(1e-3), 12345)
    assert fmap.n_faults == 27  # computed on main before the strata samplers existed
    assert fmap.tensors[0].index[:5].tolist() == [36, 38, 54, 79, 82]


def test_golden_stratum_and_bad_strata():
    sites = [SiteInfo("w", torch.float32, (10,))]
    assert sample_stratum_map(sites, BitFlip(1e-2), 0, GOLDEN, bits=[30]).n_faults == 0
    with pytest.raises(ValueError, match="selects no targeted site"):
        site_classes([SiteInfo("q", torch.int8, (4,))], BitFlip(1e-3), bits=["exponent"])
    with pytest.raises(ValueError, match="bit error model"):
        site_classes(sites, RandomValue(1e-3), bits=[3])
    with pytest.raises(ValueError, match="asks for 11 faults"):
        sample_stratum_map(sites, BitFlip(1e-2), 0, Stratum((11, None)), bits=[30])
    with pytest.raises(ValueError, match="already fixes the count"):
        sample_stratum_map(sites, BitFlip(n=2), 0, Stratum((1, None)), bits=[30])
    with pytest.raises(ValueError, match="count range"):
        Stratum((2, 1))
    # a mixed target: the class exists in the float tensor only
    split = site_classes(sites + [SiteInfo("q", torch.int8, (4,))], BitFlip(1e-3),
                         bits=["exponent"])
    assert (split.n_class, split.n_other) == (80, 240 + 32)


def test_count_in_class_reads_the_stratum_off_a_map():
    from pytei_ray.faults import StuckAt
    from pytei_ray.faults.strata import count_in_class

    sites = [SiteInfo("a", torch.float32, (50,)), SiteInfo("b", torch.float16, (40,))]
    for error in (BitFlip(0.01), StuckAt(0.01, value=0)):
        for j in (0, 1, 3):
            fmap = sample_stratum_map(sites, error, j, Stratum((j, j), (2, 2)), bits=["sign"])
            assert count_in_class(fmap, ["sign"]) == j
            assert fmap.n_faults == j + 2
    with pytest.raises(ValueError, match="map of bit faults"):
        count_in_class(sample_fault_map(sites, RandomValue(n=2), 0), "sign")


def test_exponent_msb_names_the_top_exponent_bit_of_every_float_format():
    from pytei_ray.faults import layout_of
    from pytei_ray.faults.strata import class_bits

    want = {torch.float64: 62, torch.float32: 30, torch.float16: 14, torch.bfloat16: 14}
    for dtype, bit in want.items():
        assert class_bits(layout_of(dtype), "exponent_msb") == {bit}
    assert class_bits(layout_of(torch.int8), "exponent_msb") == frozenset()
    sites = [SiteInfo("h", torch.float16, (8,)), SiteInfo("f", torch.float32, (4,))]
    split = site_classes(sites, BitFlip(1e-3), "exponent_msb")
    assert (split.n_class, split.n_other) == (12, 8 * 15 + 4 * 31)
