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
