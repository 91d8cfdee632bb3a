"""Pure samplers of fault positions: work and memory are O(number of faults), never O(bits).

A Bernoulli(p) process over ``n`` sites is sampled through its geometric gaps: the gap between two
successive hits is Geometric(p) (drawn by inversion), so the hit positions come out distinct and
sorted, and their count follows Binomial(n, p) exactly, at every p (no rounding of p as in
PyTEI's dense error map).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable

import numpy as np

_MAX_DRAW = 1 << 22  # gaps drawn per numpy call, bounds temporary memory for large p * n


def bernoulli_positions(n: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """Positions in ``[0, n)`` hit by independent Bernoulli(p) trials, sorted and distinct.

    Args:
        n: number of sites.
        p: probability of each site being hit, in [0, 1].
        rng: the random generator (consumed deterministically).

    Returns:
        int64 array of sorted, distinct positions; its length is Binomial(n, p).
    """
    if n <= 0 or p <= 0.0:
        return np.empty(0, dtype=np.int64)
    if p >= 1.0:
        return np.arange(n, dtype=np.int64)
    expected = n * p
    scale = 1.0 / math.log1p(-p)  # negative
    chunks: list[np.ndarray] = []
    last = -1  # position of the last hit so far
    while True:
        size = int(min(_MAX_DRAW, expected + 6.0 * math.sqrt(expected) + 16))
        # Geometric(p) gaps by inversion, 1 + floor(log(V) / log(1 - p)) with V uniform in
        # (0, 1]: exact, and ~2x faster than Generator.geometric (numpy's log is vectorized).
        v = rng.random(size)
        np.subtract(1.0, v, out=v)
        np.log(v, out=v)
        v *= scale
        pos = v.astype(np.int64)
        pos += 1
        np.cumsum(pos, out=pos)  # gaps -> positions, in place
        pos += last
        if pos[-1] >= n:
            chunks.append(pos[: np.searchsorted(pos, n)])
            break
        chunks.append(pos)
        last = int(pos[-1])
        expected = (n - 1 - last) * p
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def distinct_positions(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct positions drawn uniformly from ``[0, n)``, sorted.

    Raises:
        ValueError: if ``k > n``.
    """
    if k > n:
        raise ValueError(f"Expected at most {n} faults (the number of targeted sites), got {k}.")
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if k > n // 4:  # dense regime: a partial permutation is cheaper than rejection
        return np.sort(rng.permutation(n)[:k]).astype(np.int64)
    out = np.unique(rng.integers(0, n, size=k, dtype=np.int64))
    while out.size < k:
        extra = rng.integers(0, n, size=k - out.size, dtype=np.int64)
        out = np.unique(np.concatenate([out, extra]))
    return out


def seed_from_digest(digest: bytes, byteorder: str = "little") -> int:
    """The one place a stable hash becomes a seed: the first 8 bytes of ``digest``, read in
    ``byteorder``, shifted to 63 bits (a non-negative int64, as Parquet and numpy take it).

    :func:`stable_seed` and :func:`pytei_ray.campaign.trial_seed` both end here; the byte order
    is theirs since their first release (stored trial seeds depend on it, so it never changes).

    Example:
        >>> seed_from_digest(bytes(range(32))), seed_from_digest(bytes(range(32)), "big")
        (253048761457115264, 141843476153091)
    """
    if byteorder not in ("little", "big"):
        raise ValueError(f"Expected byteorder 'little' or 'big', but got {byteorder!r}.")
    return int.from_bytes(digest[:8], byteorder) >> 1  # type: ignore[arg-type]


def check_seed(seed: object) -> int:
    """``seed`` as an int, or ``ValueError`` unless it is a non-negative integer (a bool is not):
    the one check of every seed argument (injectors, activation sources, training faults).

    Example:
        >>> check_seed(np.int64(3))
        3
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Expected argument `seed` to be a non-negative int, but got {seed!r}.")
    return int(seed)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from a stable hash of ``parts`` (never Python's salted ``hash()``).

    Floats are hashed by their exact IEEE-754 bits, so ``1e-3`` always gives the same seed.
    """
    h = hashlib.sha256()
    for part in parts:
        h.update(_encode(part))
        h.update(b"\x1f")
    return seed_from_digest(h.digest(), "little")


def _encode(part: object) -> bytes:
    if isinstance(part, bool) or part is None:
        return repr(part).encode()
    if isinstance(part, float):
        return b"f" + struct.pack("<d", part)
    if isinstance(part, int):
        return b"i" + str(part).encode()
    if isinstance(part, str):
        return b"s" + part.encode()
    if isinstance(part, (tuple, list)):
        return b"(" + b",".join(_encode(p) for p in part) + b")"
    if isinstance(part, Iterable):
        return _encode(list(part))
    return b"r" + repr(part).encode()


def rng_for(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded from a stable hash of ``parts``."""
    return np.random.default_rng(stable_seed(*parts))


# ---- counts conditioned on a range: the exact strata of a Binomial ----------------------------
# Used by :mod:`pytei_ray.faults.strata`. Nothing above draws through these, so the positions an
# existing seed draws are unchanged.

_WINDOW_MIN = 64  # pmf terms computed per numpy call when walking a Binomial's support


def _check_binomial(n: int, p: float) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"Expected a non-negative integer number of sites, but got {n!r}.")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"Expected a probability in [0, 1], but got {p!r}.")


def binomial_logpmf(n: int, p: float, k: int) -> float:
    """``log P(K = k)`` for ``K ~ Binomial(n, p)``, accurate for huge ``n`` and tiny ``p``.

    ``log C(n, k)`` is summed as ``sum log1p(-i/n) + k log n - lgamma(k+1)`` for ``k`` up to
    ``2**20`` (no cancellation between two ``lgamma`` of ~``n log n``), by ``lgamma`` beyond.

    Example:
        >>> round(math.exp(binomial_logpmf(10, 0.5, 5)), 6)
        0.246094
    """
    _check_binomial(n, p)
    if k < 0 or k > n:
        return -math.inf
    if p == 0.0 or p == 1.0:
        return 0.0 if k == (0 if p == 0.0 else n) else -math.inf
    if k <= 1 << 20:
        log_choose = float(np.log1p(-np.arange(k, dtype=np.float64) / n).sum())
        log_choose += k * math.log(n) - math.lgamma(k + 1)
    else:
        log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return log_choose + k * math.log(p) + (n - k) * math.log1p(-p)


def _pmf_window(n: int, p: float, start: int, size: int) -> np.ndarray:
    """``P(K = start + i)`` for ``i < size`` (clipped to ``k <= n``), by ratios from ``start``."""
    size = max(0, min(size, n - start + 1))
    if size == 0:
        return np.empty(0)
    k = np.arange(start, start + size - 1, dtype=np.float64)
    steps = np.log((n - k) / (k + 1.0)) + (math.log(p) - math.log1p(-p))
    logs = np.empty(size)
    logs[0] = binomial_logpmf(n, p, start)
    np.cumsum(steps, out=logs[1:])
    logs[1:] += logs[0]
    return np.exp(logs)


def binomial_mass(n: int, p: float, lo: int, hi: int | None = None) -> float:
    """``P(lo <= K <= hi)`` for ``K ~ Binomial(n, p)``; ``hi=None`` means no upper limit.

    Computed from the pmf terms (not ``1 - cdf``), so a tail of mass ``1e-30`` comes out as
    ``1e-30``, not 0: the weight of a rare stratum is exact to rounding.

    Example:
        >>> binomial_mass(10, 0.5, 0, None), round(binomial_mass(10**7, 1e-9, 2), 10)
        (1.0, 4.96679e-05)
    """
    _check_binomial(n, p)
    lo = max(int(lo), 0)
    hi = n if hi is None else min(int(hi), n)
    if lo > hi:
        return 0.0
    if p == 0.0 or p == 1.0:
        at = 0 if p == 0.0 else n
        return 1.0 if lo <= at <= hi else 0.0
    mean = n * p
    if hi == n and lo <= math.floor(mean):  # the complement is the small side: no cancellation
        return max(0.0, 1.0 - binomial_mass(n, p, 0, lo - 1)) if lo > 0 else 1.0
    if lo == 0 and hi >= math.ceil(mean) and hi < n:
        return max(0.0, 1.0 - binomial_mass(n, p, hi + 1, None))
    total, start = 0.0, lo
    sd = math.sqrt(mean * (1.0 - p))
    while start <= hi:
        size = int(min(hi - start + 1, max(_WINDOW_MIN, 12.0 * sd + 32)))
        terms = _pmf_window(n, p, start, size)
        total += float(terms.sum())
        start += size
        # past the mode, terms only shrink: stop once they cannot change the sum
        if start > mean and terms[-1] <= 1e-17 * total:
            break
    return min(total, 1.0)


def truncated_binomial(n: int, p: float, lo: int, hi: int | None,
                       rng: np.random.Generator) -> int:
    """A draw of ``K ~ Binomial(n, p)`` conditioned on ``lo <= K <= hi``, by inversion.

    One uniform per draw, whatever the mass of the range (conditioning, not rejection), so a
    stratum of probability ``1e-9`` costs what any other costs. ``lo == hi`` draws nothing.

    Raises:
        ValueError: if the range has probability 0.
    """
    _check_binomial(n, p)
    lo = max(int(lo), 0)
    hi = n if hi is None else min(int(hi), n)
    mass = binomial_mass(n, p, lo, hi)
    if mass <= 0.0:
        raise ValueError(
            f"The count range [{lo}, {hi}] has probability 0 under Binomial({n}, {p}): "
            "no fault map can be drawn in it; drop this stratum."
        )
    if lo == hi:
        return lo
    target = rng.random() * mass
    mean = n * p
    sd = math.sqrt(mean * (1.0 - p))
    acc, start, last = 0.0, lo, lo  # `last`: largest k seen with a positive term
    while start <= hi:
        size = int(min(hi - start + 1, max(_WINDOW_MIN, mean - start + 12.0 * sd + 32)))
        terms = _pmf_window(n, p, start, size)
        cum = np.cumsum(terms)
        cum += acc
        i = int(np.searchsorted(cum, target, side="right"))
        if i < terms.size:
            return start + i
        nonzero = np.flatnonzero(terms)
        if nonzero.size:
            last = start + int(nonzero[-1])
        acc = float(cum[-1])
        start += size
        if start > mean and terms[-1] == 0.0:
            break
    return last  # rounding left `target` just above the summed mass (chance ~1e-16)
