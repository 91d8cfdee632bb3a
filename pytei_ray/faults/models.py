"""Error models: what a fault does to a word, as pure numpy functions over sampled fault sites.

An error model chooses its *sites* (bits of a word, or whole words) and turns each sampled site into
an ``(and_mask, xor_mask)`` pair: the faulty word is ``(word & and_mask) ^ xor_mask``. That one form
expresses bit flips (``xor``), stuck-at bits (``and`` clears, ``xor`` sets) and whole-word
replacement (``and = 0``), composes across models, and lets SBP mask faults without the weights.

Write your own by subclassing :class:`ErrorModel`::

    class FlipTwoAdjacent(ErrorModel):
        unit = "element"                     # one site per word

        def transform(self, layout, slots, rng):
            low = rng.integers(0, layout.width - 1, size=slots.size)
            mask = ((1 << low) | (1 << (low + 1))).astype(layout.np_uint).view(layout.np_int)
            return np.full_like(mask, -1), mask    # keep every bit, flip two

Sites are sampled by the base class (rate per site, or exactly ``n`` sites over the whole target
set), so a new model inherits exact Binomial counts, determinism and pairing for free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar, Literal

import numpy as np
import torch

from .dtypes import BitLayout, dtype_name

_CONSTANTS: dict[tuple[int, np.dtype], np.ndarray] = {}
_CONSTANT_LEN = np.iinfo(np.intp).max // 8  # longer than any tensor; a slice of it is cheap


def constant_mask(value: int, size: int, dtype: np.dtype) -> np.ndarray:
    """A read-only mask of ``size`` copies of ``value`` that takes no memory (stride 0)."""
    key = (value, np.dtype(dtype))
    const = _CONSTANTS.get(key)
    if const is None:
        const = np.broadcast_to(np.asarray(value, dtype=dtype), (_CONSTANT_LEN,))
        _CONSTANTS[key] = const
    return const[:size]


def keeps_every_bit(and_mask: np.ndarray) -> bool:
    """True when an AND mask is all ones (pure flips), so applying it can be skipped.

    Free for the zero-memory constant the built-in flip model makes; one pass otherwise (a map
    loaded from a file or filtered by SBP, a custom model's ``np.full_like(m, -1)``).
    """
    if and_mask.size == 0 or and_mask.strides == (0,):
        return and_mask.size == 0 or int(and_mask[0]) == -1
    return bool((and_mask == -1).all())


def _check_rate(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"Expected argument `{name}` to be a float in [0, 1], but got {value!r}.")
    value = float(value)
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(f"Expected argument `{name}` to be a float in [0, 1], but got {value}.")
    return value


def _check_count(n: int | None) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"Expected argument `n` to be a non-negative integer, but got {n!r}.")
    return int(n)


def check_error_model(error: object) -> ErrorModel:
    """``error`` if it is an :class:`ErrorModel`, else ``TypeError`` naming what to pass: the one
    check of every ``error`` argument (injectors, activation injectors, training faults)."""
    if not isinstance(error, ErrorModel):
        raise TypeError("Expected argument `error` to be an ErrorModel such as "
                        f"BitFlip(ber=1e-6), but got {error!r}.")
    return error


class ErrorModel:
    """Base class: a fault-site kind, a sampling mode (``rate`` or exact count ``n``), a transform.

    Subclasses set ``unit`` (``"bit"`` = each selected bit of each word is a site, ``"element"`` =
    each word is one site) and implement :meth:`transform`. Exactly one of ``rate``/``n`` is given.
    """

    unit: ClassVar[Literal["bit", "element"]] = "bit"
    rate_name: ClassVar[str] = "rate"

    def __init__(self, rate: float | None = None, n: int | None = None) -> None:
        if (rate is None) == (n is None):
            raise ValueError(
                f"{type(self).__name__} needs exactly one of `{self.rate_name}` (probability per "
                f"site) or `n` (exact number of faults), but got "
                f"{self.rate_name}={rate!r}, n={n!r}."
            )
        self.rate = _check_rate(self.rate_name, rate)
        self.n = _check_count(n)

    # ---- sites -------------------------------------------------------------------------------
    def site_bits(self, layout: BitLayout) -> tuple[int, ...]:
        """Bits of a word that can be hit (bit models); all bits by default."""
        return tuple(range(layout.width))

    def sites_per_word(self, layout: BitLayout) -> int:
        """Number of fault sites in one word of ``layout``."""
        return len(self.site_bits(layout)) if self.unit == "bit" else 1

    def p_no_fault(self, n_sites: int) -> float:
        """Probability that sampling over ``n_sites`` targeted sites draws no fault.

        In rate mode ``(1 - rate) ** n_sites``, computed as ``exp(n_sites * log1p(-rate))`` so
        that it stays accurate for tiny rates and huge ``n_sites``; in exact-count mode 0.0 for
        ``n >= 1`` and 1.0 for ``n = 0``. Trials with no fault cost no evaluation, so this is
        the expected fraction of a cell's trials that are the golden run.

        Example:
            >>> BitFlip(1e-9).p_no_fault(32 * 10**6)  # doctest: +ELLIPSIS
            0.968...
            >>> BitFlip(n=1).p_no_fault(32)
            0.0
        """
        if self.rate is None:
            return 0.0 if (self.n or 0) >= 1 else 1.0
        if n_sites == 0 or self.rate == 0.0:
            return 1.0
        if self.rate >= 1.0:
            return 0.0
        return math.exp(n_sites * math.log1p(-self.rate))

    def p_no_fault_among(self, n_sites: int, n_total: int) -> float:
        """Probability that sampling over ``n_total`` targeted sites draws no fault among a
        given ``n_sites`` of them (e.g. the sites an evaluation reads).

        In rate mode the sites are independent: ``p_no_fault(n_sites)``. In exact-count mode
        the ``n`` faults are a uniform ``n``-subset of the ``n_total`` sites: the
        hypergeometric ``C(n_total - n_sites, n) / C(n_total, n)``.

        Example:
            >>> BitFlip(1e-9).p_no_fault_among(32 * 10**6, 64 * 10**6)  # doctest: +ELLIPSIS
            0.968...
            >>> BitFlip(n=1).p_no_fault_among(8, 32)
            0.75
        """
        if not 0 <= n_sites <= n_total:
            raise ValueError(f"Expected 0 <= n_sites <= n_total, but got n_sites={n_sites}, "
                             f"n_total={n_total}.")
        if self.rate is not None:
            return self.p_no_fault(n_sites)
        k = self.n or 0
        free = n_total - n_sites
        if k == 0 or n_sites == 0:
            return 1.0
        if k > free:
            return 0.0
        if k <= 4096:  # a product of k ratios: exact to rounding
            return math.prod((free - i) / (n_total - i) for i in range(k))
        return math.exp(math.lgamma(free + 1) - math.lgamma(free - k + 1)
                        - math.lgamma(n_total + 1) + math.lgamma(n_total - k + 1))

    def check_dtype(self, layout: BitLayout) -> None:
        """Raise ``ValueError``/``TypeError`` if this model cannot act on ``layout``."""
        self.site_bits(layout)

    # ---- the fault itself --------------------------------------------------------------------
    def transform(
        self, layout: BitLayout, slots: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks for sampled sites.

        Args:
            layout: the bit layout of the targeted tensor.
            slots: for each sampled site, its index within the word (``0..sites_per_word-1``).
            rng: generator for any randomness of the fault itself (e.g. a random value).

        Returns:
            ``(and_mask, xor_mask)``, arrays of ``layout.np_int`` with one entry per site.
            Sites of a bit model must only touch their own bit, so several sites in one word
            combine exactly.
        """
        raise NotImplementedError

    def _word_masks(
        self, layout: BitLayout, positions: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted site positions of one tensor -> ``(words, and_mask, xor_mask)``, one per site.

        ``positions`` is owned by the caller and may be reused in place (it becomes ``words``).
        Built-in models override this with a faster path; custom models only write
        :meth:`transform`.
        """
        k = self.sites_per_word(layout)
        if k == 1:
            words, slots = positions, np.zeros(positions.size, dtype=np.int64)
        elif k & (k - 1) == 0:  # a power of two: shifts, not division
            slots = positions & (k - 1)
            words = positions
            words >>= k.bit_length() - 1
        else:
            words, slots = np.divmod(positions, k)
        a, x = self.transform(layout, slots, rng)
        return words, np.asarray(a, dtype=layout.np_int), np.asarray(x, dtype=layout.np_int)

    def key(self) -> str:
        """A stable, exact description (used to derive seeds and to name the model in results)."""
        return repr(self)

    def __repr__(self) -> str:
        args = [f"{k}={v!r}" for k, v in self._params().items()]
        return f"{type(self).__name__}({', '.join(args)})"

    def _params(self) -> dict[str, object]:
        mode = {self.rate_name: self.rate} if self.rate is not None else {"n": self.n}
        return mode

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.key() == self.key()

    def __hash__(self) -> int:
        return hash(self.key())


def _bits_arg(bits: Iterable[int | str] | int | str | None) -> tuple[int | str, ...] | None:
    if bits is None:
        return None
    if isinstance(bits, (int, str)):
        return (bits,)
    bits = tuple(bits)
    if not bits:
        raise ValueError("Expected argument `bits` to name at least one bit or field, got ().")
    for b in bits:
        if not isinstance(b, (int, str, np.integer)) or isinstance(b, bool):
            raise TypeError(f"Expected bit indices (int) or field names (str), but got {b!r}.")
    return bits


class _BitModel(ErrorModel):
    unit = "bit"
    rate_name = "ber"

    def __init__(
        self,
        ber: float | None = None,
        *,
        n: int | None = None,
        bits: Iterable[int | str] | int | str | None = None,
    ) -> None:
        super().__init__(ber, n)
        self.bits = _bits_arg(bits)
        for b in self.bits or ():
            if isinstance(b, (int, np.integer)) and not 0 <= int(b) < 64:
                raise ValueError(f"Expected bit indices in [0, 64), but got {b}.")

    @property
    def ber(self) -> float | None:
        """Bit error rate (probability per targeted bit), or None in exact-count mode."""
        return self.rate

    def site_bits(self, layout: BitLayout) -> tuple[int, ...]:
        cache = self.__dict__.setdefault("_site_bits", {})  # per dtype; models are immutable
        if layout.dtype not in cache:
            cache[layout.dtype] = layout.resolve_bits(self.bits)
        return cache[layout.dtype]

    def _table(self, layout: BitLayout) -> np.ndarray | None:
        """Slot -> one-bit mask (``layout.np_uint``) for ``layout``; None when slot i is bit i."""
        tables = self.__dict__.setdefault("_mask_tables", {})  # per dtype; models are immutable
        if layout.dtype not in tables:
            bits = self.site_bits(layout)
            table = None
            if bits != tuple(range(layout.width)):
                arr = np.asarray(bits, dtype=np.uint64)
                table = (np.uint64(1) << arr).astype(layout.np_uint)
            tables[layout.dtype] = table
        return tables[layout.dtype]

    def _bit_masks(
        self, layout: BitLayout, slots: np.ndarray, in_place: bool = False
    ) -> np.ndarray:
        """One-bit masks (``layout.np_int``) for ``slots``, indices into this model's site bits.

        ``in_place``: ``slots`` is a ``layout.np_uint`` array of ours that may become the masks.
        """
        table = self._table(layout)
        if table is not None:
            return table[slots].view(layout.np_int)
        uint = layout.np_uint
        if in_place:
            return np.left_shift(uint.type(1), slots, out=slots).view(layout.np_int)
        return np.left_shift(uint.type(1), slots.astype(uint)).view(layout.np_int)

    def _one_bit_masks(
        self, layout: BitLayout, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(words, one-bit masks)`` for sorted site positions, computed in place with one
        word-width allocation; None when the sites per word are not a power of two."""
        k = self.sites_per_word(layout)
        if k & (k - 1):
            return None
        slots = np.empty(positions.size, dtype=layout.np_uint)
        np.bitwise_and(positions, k - 1, out=slots, casting="unsafe")
        positions >>= k.bit_length() - 1
        return positions, self._bit_masks(layout, slots, in_place=True)

    def _masks_of_bits(
        self, layout: BitLayout, m: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(and_mask, xor_mask)`` of sites given their one-bit masks ``m`` (``layout.np_int``)."""
        raise NotImplementedError

    def transform(self, layout, slots, rng):
        return self._masks_of_bits(layout, self._bit_masks(layout, slots))

    def _word_masks(self, layout, positions, rng):
        fast = self._one_bit_masks(layout, positions)
        if fast is None:  # sites per word not a power of two: divide, then `transform`
            return super()._word_masks(layout, positions, rng)
        words, m = fast
        return (words, *self._masks_of_bits(layout, m))

    def _params(self) -> dict[str, object]:
        params = super()._params()
        if self.bits is not None:
            params["bits"] = self.bits
        return params


class BitFlip(_BitModel):
    """Every targeted bit flips independently with probability ``ber`` (or exactly ``n`` flips).

    Args:
        ber: bit error rate in [0, 1].
        n: exact number of flipped bits over the whole target set (single-fault studies).
        bits: restrict to bit indices and/or field names (``"sign"``, ``"exponent"``,
            ``"mantissa"``; ``"value"`` for integers), resolved per dtype.

    Example:
        >>> BitFlip(1e-6, bits=["exponent"])
        BitFlip(ber=1e-06, bits=('exponent',))
    """

    def _masks_of_bits(self, layout, m):
        return constant_mask(-1, m.size, layout.np_int), m  # keep every bit, flip the site's


class StuckAt(_BitModel):
    """Each targeted bit is independently stuck at ``value`` with probability ``ber``.

    A bit that already holds ``value`` does not change (it still counts as a fault site).

    Example:
        >>> StuckAt(1e-3, value=1)
        StuckAt(ber=0.001, value=1)
    """

    def __init__(
        self,
        ber: float | None = None,
        value: int = 1,
        *,
        n: int | None = None,
        bits: Iterable[int | str] | int | str | None = None,
    ) -> None:
        if value not in (0, 1) or isinstance(value, float):
            raise ValueError(f"Expected argument `value` to be 0 or 1, but got {value!r}.")
        super().__init__(ber, n=n, bits=bits)
        self.value = int(value)

    def _masks_of_bits(self, layout, m):
        return ~m, (m if self.value else constant_mask(0, m.size, layout.np_int))

    def _params(self) -> dict[str, object]:
        params = super()._params()
        params["value"] = self.value
        return params


class RandomValue(ErrorModel):
    """Each targeted element is replaced, with probability ``rate``, by a uniform value.

    Values are uniform in ``[low, high)`` in float64, then cast to the tensor's dtype; for integer
    and quantized tensors they are integers of the (integer) representation in ``[low, high)``.

    Example:
        >>> RandomValue(1e-4, low=-1.0, high=1.0)
        RandomValue(rate=0.0001, low=-1.0, high=1.0)
    """

    unit = "element"

    def __init__(
        self,
        rate: float | None = None,
        low: float = -1.0,
        high: float = 1.0,
        *,
        n: int | None = None,
    ) -> None:
        super().__init__(rate, n)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"Expected finite `low` < `high`, but got low={low!r}, high={high!r}.")
        self.low, self.high = float(low), float(high)

    def transform(self, layout, slots, rng):
        if layout.dtype.is_floating_point:
            values = torch.from_numpy(rng.uniform(self.low, self.high, size=slots.size))
            words = values.to(layout.dtype).view(layout.int_dtype).numpy()
        else:
            info = np.iinfo(layout.value_np)
            lo = max(math.ceil(self.low), info.min)
            hi = min(math.ceil(self.high), info.max + 1)
            if lo >= hi:
                raise ValueError(
                    f"RandomValue range [{self.low}, {self.high}) holds no value of "
                    f"{dtype_name(layout.dtype)}."
                )
            values = rng.integers(lo, hi, size=slots.size).astype(layout.value_np)
            words = values.view(layout.np_int)
        return np.zeros_like(words), words

    def _params(self) -> dict[str, object]:
        params = super()._params()
        params.update(low=self.low, high=self.high)
        return params
