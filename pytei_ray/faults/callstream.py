"""Counter-based fault streams: cheap, exact per-call sampling for hooks (stream ``"v2"``).

A hook that draws new faults at every call of a module (activations, activation gradients) pays
a fixed cost per call before any fault exists. Stream ``"v1"`` (:func:`sample_fault_map` with a
seed hashed from every part of the call) costs two SHA-256 hashes and a new NumPy generator per
call. A :class:`CallStream` hashes the fixed parts once (a *key* per site: seed, error model,
module, element, shape, dtype), then derives each call's randomness from ``(key, counter)`` with
SplitMix64, a 64-bit mixing function (Steele et al., OOPSLA 2014):

* the first gap of the Bernoulli process comes from one mixed 64-bit word (53-bit uniform), so a
  call with no fault (the usual case at small BER) creates no generator and no array;
* only a call with a fault seeds a generator (re-seeding one reusable PCG64 in place) for the
  rest of the gaps and the per-fault values.

The positions stay an exact Bernoulli(p) process (i.i.d. geometric gaps: the first from the
mixed word, the rest from the generator), so counts are Binomial(n, p) at every p, and exact
counts (``n=k``) are ``k`` distinct uniform positions. The faults are a pure function of
``(seed, error, site parts, counter)``; they differ from stream ``"v1"``'s for the same seed.
"""

from __future__ import annotations

import math

import numpy as np

from .dtypes import layout_of
from .faultmap import SiteInfo, TensorFaults, _words_faults
from .models import ErrorModel
from .sampling import bernoulli_positions, distinct_positions, stable_seed

__all__ = ["STREAMS", "CallStream", "splitmix64"]

STREAMS = ("v1", "v2")
"""Per-call stream versions: ``"v1"`` hashes every call, ``"v2"`` is :class:`CallStream`."""

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_TO_UNIT = 2.0**-53


def splitmix64(x: int) -> int:
    """One SplitMix64 step: a bijective 64-bit mix of ``x`` (Python ints, exact).

    Example:
        >>> hex(splitmix64(0))
        '0xe220a8397b1dcdaf'
    """
    z = (x + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


class CallStream:
    """Exact per-call fault sampling for one error model and seed, keyed by site then counter.

    Args:
        error: the error model (rate or exact-count mode).
        seed: the seed (an int >= 0).
        domain: a name that separates unrelated uses of one seed (e.g. ``"activation"``).

    Example:
        >>> from pytei_ray import BitFlip
        >>> import torch
        >>> stream = CallStream(BitFlip(n=2), seed=3, domain="doc")
        >>> site = SiteInfo("layer", torch.float32, (4, 8))
        >>> key = stream.key("layer", site.shape)
        >>> a, b = stream.sample(key, (0,), site), stream.sample(key, (0,), site)
        >>> a.n_sites, a.index.tolist() == b.index.tolist()
        (2, True)
    """

    version = "v2"

    def __init__(self, error: ErrorModel, seed: int, domain: str) -> None:
        self.error = error
        self.seed = int(seed)
        self.domain = str(domain)
        self._error_key = error.key()
        self._gen = np.random.Generator(np.random.PCG64(0))  # re-seeded per call with faults
        self._sites_per_word: dict[object, int] = {}  # dtype -> sites per word (checked once)

    def key(self, *parts: object) -> int:
        """The 64-bit key of one site: a stable hash of the seed, the error model and ``parts``
        (hash it once per site and keep it; :meth:`sample` mixes in the counter)."""
        return stable_seed(self.seed, f"{self.domain}/{self.version}", self._error_key, *parts)

    def n_sites(self, info: SiteInfo) -> int:
        """Fault sites of a tensor of ``info``'s dtype and shape (checks the dtype once)."""
        per = self._sites_per_word.get(info.dtype)
        if per is None:
            lay = layout_of(info.dtype)
            self.error.check_dtype(lay)
            per = self._sites_per_word[info.dtype] = self.error.sites_per_word(lay)
        return info.numel * per

    def sample(self, key: int, counter: tuple[int, ...], info: SiteInfo) -> TensorFaults | None:
        """The faults of one call: None when it draws none, else a :class:`TensorFaults`.

        Args:
            key: the site's key (:meth:`key`).
            counter: non-negative ints that number the call (e.g. ``(step, call)``).
            info: the tensor's name, dtype and shape.
        """
        z = key
        for c in counter:
            z = splitmix64(z ^ (int(c) * _GOLDEN & _M64))
        n = self.n_sites(info)
        error = self.error
        if error.rate is not None:
            p = error.rate
            if n == 0 or p <= 0.0:
                return None
            if p >= 1.0:
                pos = np.arange(n, dtype=np.int64)
            else:
                v = 1.0 - (z >> 11) * _TO_UNIT  # uniform in (0, 1]
                first = int(math.log(v) / math.log1p(-p))  # the first gap, minus one
                if first >= n:
                    return None
                rest = bernoulli_positions(n - first - 1, p, self._reseed(z))
                rest += first + 1
                pos = np.concatenate([np.array([first], dtype=np.int64), rest])
        else:
            k = int(error.n or 0)
            if k > n:
                raise ValueError(f"Expected at most {n} faults (the sites of {info.name!r} for "
                                 f"{error!r}), but `n` = {k}.")
            if k == 0:
                return None
            gen = self._reseed(z)
            if k == 1:  # one uniform position: skip the distinctness machinery
                pos = np.array([gen.integers(n)], dtype=np.int64)
            else:
                pos = distinct_positions(n, k, gen)
        return _words_faults(info, error, pos, self._gen)

    def _reseed(self, z: int) -> np.random.Generator:
        """The reusable generator, re-seeded in place from the mixed word ``z``."""
        hi, lo = splitmix64(z), splitmix64(z ^ _M64)
        self._gen.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": (hi << 64) | lo, "inc": (splitmix64(hi) << 1) | 1},
            "has_uint32": 0,
            "uinteger": 0,
        }
        return self._gen
