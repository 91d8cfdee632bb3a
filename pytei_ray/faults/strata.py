"""Strata of the fault distribution: exact probabilities and exact conditional samplers.

Under a per-site rate model (``BitFlip(ber)`` ...) the faults among any class ``C`` of the
targeted sites and among the other sites are independent, ``Binomial(|C|, ber)`` and
``Binomial(N - |C|, ber)``, and given their counts the positions are uniform subsets of each
part. So a *stratum* "between ``lo`` and ``hi`` faults in ``C``, between ``lo'`` and ``hi'``
elsewhere" has an exactly known probability (a product of two Binomial masses) and is sampled
exactly by drawing each count from its Binomial conditioned on the range (one uniform, by
inversion) and then the positions: conditioning, not rejection, so a trial costs what an
unstratified one costs. The class is a set of bits (``bits=`` names or indices, as the error
models take), e.g. the exponent's most significant bit, where the catastrophes of float formats
live; without a class (``bits=None``) the class is every site, and a stratum "exactly ``k``
faults" is a uniform ``k``-subset whatever the BER: its trials serve every BER of a point.

Example:
    >>> import torch
    >>> from pytei_ray.faults import BitFlip, SiteInfo
    >>> sites = [SiteInfo("w", torch.float32, (1000,))]
    >>> split = site_classes(sites, BitFlip(1e-4), bits=[30])   # fp32 exponent MSB
    >>> split.n_class, split.n_other
    (1000, 31000)
    >>> hit = Stratum(in_class=(1, None))                   # >= 1 flip of bit 30
    >>> round(hit.probability(split, 1e-4), 6)
    0.095167
    >>> fmap = sample_stratum_map(sites, BitFlip(1e-4), seed=0, stratum=hit, bits=[30])
    >>> bool((fmap.tensors[0].xor_mask & (1 << 30)).any())
    True
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .dtypes import BitLayout, dtype_name, layout_of
from .faultmap import FaultMap, SiteInfo, _words_faults
from .models import ErrorModel
from .sampling import (
    bernoulli_positions,
    binomial_mass,
    distinct_positions,
    rng_for,
    truncated_binomial,
)

__all__ = ["CLASS_NAMES", "GOLDEN", "SiteClasses", "Stratum", "at_count", "bit_class_strata",
           "class_bits", "count_in_class", "count_strata", "count_weights", "k_max_for",
           "sample_stratum_map", "site_classes"]

def _check_range(name: str, r: object) -> tuple[int, int | None]:
    ok = (isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], int) and r[0] >= 0
          and not isinstance(r[0], bool)
          and (r[1] is None or (isinstance(r[1], int) and not isinstance(r[1], bool)
                                and r[1] >= r[0])))
    if not ok:
        raise ValueError(f"Expected argument `{name}` to be a count range (lo, hi) with "
                         f"0 <= lo <= hi, or (lo, None) for no upper limit, but got {r!r}.")
    return r  # type: ignore[return-value]


@dataclass(frozen=True)
class SiteClasses:
    """The targeted sites split into a class and the others, tensor by tensor (sorted by name).

    Attributes:
        sites: the targeted tensors, sorted by name (the order of the global site sequence).
        per_word: fault sites per word of each tensor.
        class_slots: per tensor, the slots (indices into the model's site bits) in the class.
        other_slots: per tensor, the other slots.
        bits: the class as given (None: every site).
    """

    sites: tuple[SiteInfo, ...]
    per_word: tuple[int, ...]
    class_slots: tuple[tuple[int, ...], ...]
    other_slots: tuple[tuple[int, ...], ...]
    bits: tuple[int | str, ...] | None

    @property
    def n_class(self) -> int:
        """Sites in the class (the ``n`` of its Binomial)."""
        return sum(s.numel * len(c) for s, c in zip(self.sites, self.class_slots))

    @property
    def n_other(self) -> int:
        """Targeted sites outside the class."""
        return sum(s.numel * len(c) for s, c in zip(self.sites, self.other_slots))

    def to_sites(self, part: int, index: np.ndarray) -> np.ndarray:
        """Global site positions of sorted indices into the class (``part=0``) or the others."""
        slots_of = self.class_slots if part == 0 else self.other_slots
        sizes = np.array([s.numel * len(c) for s, c in zip(self.sites, slots_of)], np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        offsets = np.concatenate([[0], np.cumsum([s.numel * k for s, k in
                                                   zip(self.sites, self.per_word)])])
        cuts = np.searchsorted(index, starts)
        out = np.empty(index.size, dtype=np.int64)
        for i, slots in enumerate(slots_of):
            lo, hi = cuts[i], cuts[i + 1]
            if lo == hi:
                continue
            local = index[lo:hi] - starts[i]
            word, j = np.divmod(local, len(slots))
            out[lo:hi] = offsets[i] + word * self.per_word[i] + np.asarray(slots, np.int64)[j]
        return out


#: Class names beyond the dtypes' fields: the exponent's most significant bit of each float
#: format (bit 30 of float32, 14 of float16 and bfloat16, 62 of float64, ...), whose flips
#: turn a weight into a huge or non-finite value.
CLASS_NAMES = {"exponent_msb"}


def class_bits(layout: BitLayout, bits: Iterable[int | str] | int | str) -> frozenset[int]:
    """The bit indices of ``layout`` in the class ``bits``: field names, ``"exponent_msb"``,
    indices; a name the dtype lacks or an index beyond its width selects nothing.

    Example:
        >>> import torch
        >>> from pytei_ray.faults import layout_of
        >>> sorted(class_bits(layout_of(torch.bfloat16), ["exponent_msb", "sign"]))
        [14, 15]
    """
    wanted = (bits,) if isinstance(bits, (int, str)) else tuple(bits)
    out: set[int] = set()
    for b in wanted:
        if b == "exponent_msb":
            if "exponent" in layout.fields:
                out.add(max(layout.fields["exponent"]))
        elif isinstance(b, str):
            out.update(layout.fields.get(b, ()))
        elif 0 <= int(b) < layout.width:
            out.add(int(b))
    return frozenset(out)


def site_classes(sites: Sequence[SiteInfo], error: ErrorModel,
                 bits: Iterable[int | str] | int | str | None = None) -> SiteClasses:
    """Split the sites that ``error`` targets into the class ``bits`` and the rest.

    A field name that a dtype does not have (``"exponent"`` of an int8 tensor) or an index
    beyond its width selects no bit of that dtype.

    Raises:
        ValueError: if ``bits`` selects no targeted site of any tensor, or names bits of an
            element model (whose sites are whole words).
    """
    ordered = tuple(sorted(sites, key=lambda s: s.name))
    wanted = None if bits is None else ((bits,) if isinstance(bits, (int, str)) else tuple(bits))
    if wanted is not None and error.unit != "bit":
        raise ValueError(f"A bit class needs a bit error model; {error!r} replaces whole "
                         "words. Use bits=None (strata on the number of faults).")
    per_word, cls, other = [], [], []
    for s in ordered:
        lay = layout_of(s.dtype)
        error.check_dtype(lay)
        per_word.append(error.sites_per_word(lay))
        if wanted is None:
            cls.append(tuple(range(per_word[-1])))
            other.append(())
            continue
        chosen = class_bits(lay, wanted)
        site_bits = error.site_bits(lay)
        cls.append(tuple(i for i, b in enumerate(site_bits) if b in chosen))
        other.append(tuple(i for i, b in enumerate(site_bits) if b not in chosen))
    split = SiteClasses(ordered, tuple(per_word), tuple(cls), tuple(other), wanted)
    if split.n_class == 0 and sum(s.numel for s in ordered) > 0:
        dtypes = sorted({dtype_name(s.dtype) for s in ordered})
        raise ValueError(
            f"The stratum bit class selects no targeted site.\n  bits: {wanted!r}\n"
            f"  targeted dtypes: {dtypes} (sites of {error!r})\n"
            "Name a field or bit index that these dtypes have (see pytei_ray.bit_fields)."
        )
    return split


@dataclass(frozen=True)
class Stratum:
    """Fault counts in a range within the class and in a range outside it.

    Attributes:
        in_class: ``(lo, hi)`` faults among the class sites (``hi=None``: no upper limit).
        outside: ``(lo, hi)`` faults among the other sites.
    """

    in_class: tuple[int, int | None] = (0, None)
    outside: tuple[int, int | None] = (0, None)

    def __post_init__(self) -> None:
        _check_range("in_class", self.in_class)
        _check_range("outside", self.outside)

    @property
    def rate_free(self) -> bool:
        """Both counts fixed: the positions do not depend on the rate (shared across BERs)."""
        return self.in_class[0] == self.in_class[1] and self.outside[0] == self.outside[1]

    @property
    def golden(self) -> bool:
        """No fault at all: the trial is the golden run, its value known without running it."""
        return self.in_class == (0, 0) and self.outside == (0, 0)

    def key(self) -> str:
        """A stable text of the stratum (seeds and result rows use it)."""
        def r(c: tuple[int, int | None]) -> str:
            return f"{c[0]}" if c[0] == c[1] else f"{c[0]}-{'' if c[1] is None else c[1]}"
        return f"C{r(self.in_class)}/O{r(self.outside)}"

    def probability(self, split: SiteClasses, rate: float) -> float:
        """Exact probability of the stratum at per-site ``rate`` (product of two Binomial
        masses, each summed from its pmf terms)."""
        return (binomial_mass(split.n_class, rate, *self.in_class)
                * binomial_mass(split.n_other, rate, *self.outside))


#: The stratum of the fault-free trial.
GOLDEN = Stratum((0, 0), (0, 0))


def bit_class_strata(j_max: int = 1) -> list[Stratum]:
    """A partition on the faults in a class: golden, none in the class (>= 1 elsewhere),
    exactly ``1 .. j_max - 1`` in the class, ``>= j_max`` in the class; weights sum to 1.

    Example:
        >>> [s.key() for s in bit_class_strata(2)]
        ['C0/O0', 'C0/O1-', 'C1/O0-', 'C2-/O0-']
    """
    if isinstance(j_max, bool) or not isinstance(j_max, int) or j_max < 1:
        raise ValueError(f"Expected argument `j_max` to be an integer >= 1, but got {j_max!r}.")
    out = [GOLDEN, Stratum((0, 0), (1, None))]
    out += [Stratum((j, j), (0, None)) for j in range(1, j_max)]
    out.append(Stratum((j_max, None), (0, None)))
    return out


def count_strata(k_max: int) -> list[Stratum]:
    """Exactly ``k`` faults in all, ``k = 0 .. k_max`` (use with ``bits=None``); the tail
    ``> k_max`` is left out: :func:`pytei_ray.stats.stratified.count_weights` gives its mass."""
    if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 0:
        raise ValueError(f"Expected argument `k_max` to be an integer >= 0, but got {k_max!r}.")
    return [Stratum((k, k), (0, 0)) for k in range(k_max + 1)]


def count_weights(n_sites: int, rate: float, k_max: int) -> tuple[np.ndarray, float]:
    """``P(K = k)`` for ``k = 0 .. k_max`` and the tail ``P(K > k_max)``, ``K ~ Binomial(
    n_sites, rate)``: the weights of :func:`count_strata` at one BER (the tail summed from its
    own terms, not ``1 - sum``).

    Example:
        >>> w, tail = count_weights(10**6, 1e-6, 3)
        >>> [round(float(v), 4) for v in w], f"{tail:.3e}"
        ([0.3679, 0.3679, 0.1839, 0.0613], '1.899e-02')
    """
    weights = np.array([binomial_mass(n_sites, rate, k, k) for k in range(k_max + 1)])
    return weights, binomial_mass(n_sites, rate, k_max + 1, None)


def k_max_for(n_sites: int, rates: Sequence[float], tail: float) -> int:
    """Smallest ``k_max`` whose tail ``P(K > k_max)`` is at most ``tail`` at every rate."""
    if not 0.0 < tail < 1.0:
        raise ValueError(f"Expected argument `tail` in (0, 1), but got {tail!r}.")
    k = 0
    for rate in rates:
        while binomial_mass(n_sites, rate, k + 1, None) > tail:
            k += 1
    return k


def count_in_class(fmap: FaultMap, bits: Iterable[int | str] | int | str) -> int:
    """Fault sites of a sampled bit-model map whose bit is in the class ``bits``: what labels
    an unstratified trial with its stratum after the fact (post-stratification).

    Example:
        >>> import torch
        >>> from pytei_ray.faults import BitFlip, SiteInfo, sample_fault_map
        >>> fmap = sample_fault_map([SiteInfo("w", torch.float32, (100,))], BitFlip(n=5), 1)
        >>> count_in_class(fmap, "sign") + count_in_class(fmap, ["exponent", "mantissa"])
        5
    """
    if fmap.unit != "bit":
        raise ValueError(f"A bit class needs a map of bit faults; this one's sites are "
                         f"{fmap.unit}s ({fmap.error}).")
    total = 0
    for t in fmap.tensors:
        if not t.n_words:
            continue
        lay = t.layout
        mask = sum(1 << i for i in class_bits(lay, bits))
        if not mask:
            continue
        touched = (~t.and_mask | t.xor_mask).view(lay.np_uint) & lay.np_uint.type(mask)
        total += int(np.bitwise_count(touched).sum())
    return total


def at_count(error: ErrorModel, k: int) -> ErrorModel:
    """``error`` in exact-count mode with ``k`` faults (its sites and transform unchanged):
    the conditional law of a rate model given ``k`` faults in all, whatever its rate."""
    out = copy.copy(error)
    out.rate, out.n = None, int(k)
    return out


def _rate_free_key(error: ErrorModel) -> str:
    out = copy.copy(error)
    out.rate, out.n = None, None
    return out.key()


def _draw(n: int, rate: float, r: tuple[int, int | None], rng: np.random.Generator) -> np.ndarray:
    if r == (0, None):  # unconstrained: the Bernoulli process itself
        return bernoulli_positions(n, rate, rng)
    k = r[0] if r[0] == r[1] else truncated_binomial(n, rate, r[0], r[1], rng)
    return distinct_positions(n, k, rng)


def sample_stratum_map(sites: Sequence[SiteInfo], error: ErrorModel, seed: int,
                       stratum: Stratum,
                       bits: Iterable[int | str] | int | str | None = None) -> FaultMap:
    """Sample a :class:`FaultMap` from ``error`` conditioned on ``stratum`` (class ``bits``).

    A pure function of its arguments. The stream is seeded by (seed, model, stratum, class);
    for a :attr:`Stratum.rate_free` stratum the model enters without its rate, so the same seed
    gives the same map at every BER. The class's positions are drawn first, then the others',
    then the per-fault values tensor by tensor, as :func:`sample_fault_map` does.

    Raises:
        ValueError: for an exact-count model (strata condition a rate), a class that selects
            no site, or a stratum of probability 0.
    """
    if error.rate is None and not stratum.rate_free:
        raise ValueError(f"Strata condition a rate model's fault counts; {error!r} already "
                         "fixes the count. Give the model a rate (e.g. BitFlip(ber)).")
    split = site_classes(sites, error, bits)
    rate = error.rate if error.rate is not None else 0.0
    for part, n, r in ((0, split.n_class, stratum.in_class), (1, split.n_other, stratum.outside)):
        if r[0] > n:
            raise ValueError(f"Stratum {stratum.key()} asks for {r[0]} faults among {n} sites "
                             f"({'class' if part == 0 else 'other'} sites of {error!r}).")
    key = _rate_free_key(error) if stratum.rate_free else error.key()
    rng = rng_for(seed, "stratum", key, stratum.key(), list(split.bits or ()))
    pos = np.concatenate([split.to_sites(0, _draw(split.n_class, rate, stratum.in_class, rng)),
                          split.to_sites(1, _draw(split.n_other, rate, stratum.outside, rng))])
    pos.sort()
    sizes = np.array([s.numel * k for s, k in zip(split.sites, split.per_word)], np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    cuts = np.searchsorted(pos, bounds)
    out = []
    for i, s in enumerate(split.sites):
        seg = pos[cuts[i]:cuts[i + 1]]
        if seg.size:
            seg -= bounds[i]
        out.append(_words_faults(s, error, seg, rng))
    return FaultMap(out, error.key(), error.unit, seed, n_targeted=int(bounds[-1]))
